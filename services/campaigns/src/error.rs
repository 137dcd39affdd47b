//! The campaigns service's one error type and its single mapping to gRPC.

use purple_runtime::status;
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
    /// A batch over the limit.
    #[error(transparent)]
    Batch(#[from] purple_api::batch::BatchTooLarge),
    /// A peer service failed.
    #[error(transparent)]
    Peer(#[from] purple_runtime::clients::PeerError),
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
    /// Records of an upload refused, by line; nothing was written.
    #[error("{total} records refused")]
    Refused {
        refusals: Vec<crate::history::check::Refusal>,
        total: usize,
    },
    /// An upload went quiet for too long.
    #[error("{0}")]
    Stalled(String),
    /// A limit of the server was reached; retry later.
    #[error("{0}")]
    Exhausted(String),
    /// A bug or a lost task.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<purple_runtime::upload::UploadError> for CampaignError {
    fn from(err: purple_runtime::upload::UploadError) -> Self {
        use purple_runtime::upload::UploadError;
        match err {
            UploadError::Invalid { field, reason } => CampaignError::Invalid { field, reason },
            UploadError::Stalled(what) => CampaignError::Stalled(what),
            UploadError::Exhausted(what) => CampaignError::Exhausted(what),
        }
    }
}

impl CampaignError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CampaignError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

purple_runtime::request_errors!(CampaignError);

impl From<CampaignError> for Status {
    fn from(err: CampaignError) -> Self {
        match err {
            CampaignError::Invalid { field, reason } => status::invalid_argument(&field, &reason),
            CampaignError::NotFound(what) => status::not_found(what),
            CampaignError::Unauthenticated(what) => status::refused(
                tonic::Code::Unauthenticated,
                status::reason::UNAUTHENTICATED,
                what,
                &[],
            ),
            CampaignError::Forbidden(what) => status::permission_denied(what),
            CampaignError::WrongState(what) => status::wrong_state(what),
            err @ CampaignError::Stale { expected, actual } => {
                status::stale(err.to_string(), expected, actual)
            }
            CampaignError::Batch(err) => status::batch_limit(&err),
            CampaignError::Peer(err) => err.to_status(),
            CampaignError::Store(err) => status::from_sqlx("campaigns storage", &err),
            CampaignError::Refused { refusals, total } => {
                let violations: Vec<(String, String)> = refusals
                    .into_iter()
                    .map(|r| (format!("line {}: {}", r.line, r.field), r.reason))
                    .collect();
                status::invalid_records(&violations, total)
            }
            CampaignError::Stalled(what) => Status::deadline_exceeded(what),
            CampaignError::Exhausted(what) => status::refused(
                tonic::Code::ResourceExhausted,
                status::reason::RESOURCE_EXHAUSTED,
                what,
                &[],
            ),
            CampaignError::Internal(what) => status::internal("history", &what),
        }
    }
}
