//! The campaigns service's one error type and its single mapping to gRPC.

use tonic::Status;

/// Everything that can go wrong in campaigns.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The acting user is unknown.
    #[error("{0}")]
    Unauthenticated(String),
    /// The actor's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A workflow action from the wrong state.
    #[error("{0}")]
    WrongState(String),
    /// Optimistic concurrency: the caller's version is stale.
    #[error("stale version: expected {expected}, the test is at {actual}; reload and retry")]
    Stale { expected: i64, actual: i64 },
    /// A peer service failed.
    #[error("{service}: {status}")]
    Peer {
        service: &'static str,
        status: Status,
    },
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
}

impl CampaignError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CampaignError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A failed call to a peer.
    pub fn peer(service: &'static str) -> impl FnOnce(Status) -> Self {
        move |status| CampaignError::Peer { service, status }
    }
}

purple_runtime::request_errors!(CampaignError);

impl From<CampaignError> for Status {
    fn from(err: CampaignError) -> Self {
        match err {
            CampaignError::Invalid { field, reason } => {
                purple_runtime::status::invalid_argument(&field, &reason)
            }
            CampaignError::NotFound(what) => Status::not_found(what),
            CampaignError::Unauthenticated(what) => Status::unauthenticated(what),
            CampaignError::Forbidden(what) => Status::permission_denied(what),
            CampaignError::WrongState(what) => Status::failed_precondition(what),
            err @ CampaignError::Stale { .. } => Status::aborted(err.to_string()),
            CampaignError::Peer { service, status } => {
                purple_runtime::status::from_peer(service, &status)
            }
            CampaignError::Store(err) => {
                purple_runtime::status::from_sqlx("campaigns storage", &err)
            }
        }
    }
}
