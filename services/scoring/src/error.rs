//! The scoring service's one error type and its single mapping to gRPC.

use tonic::Status;

/// Everything that can go wrong in scoring.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A batch over the limit.
    #[error(transparent)]
    Batch(#[from] purple_api::batch::BatchTooLarge),
    /// A peer service failed.
    #[error(transparent)]
    Peer(#[from] purple_runtime::clients::PeerError),
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
}

impl ScoringError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ScoringError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

purple_runtime::request_errors!(ScoringError);

impl From<ScoringError> for Status {
    fn from(err: ScoringError) -> Self {
        match err {
            ScoringError::Invalid { field, reason } => {
                purple_runtime::status::invalid_argument(&field, &reason)
            }
            ScoringError::NotFound(what) => purple_runtime::status::not_found(what),
            ScoringError::Batch(err) => purple_runtime::status::batch_limit(&err),
            ScoringError::Peer(err) => err.to_status(),
            ScoringError::Store(err) => purple_runtime::status::from_sqlx("scoring storage", &err),
        }
    }
}
