//! The metrics service's one error type and its single mapping to gRPC.

use tonic::Status;

/// Everything that can go wrong in metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A request field is invalid; nothing was written.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field path, e.g. `events[3].kind`.
        field: String,
        /// Why.
        reason: String,
    },
    /// A batch over the limit.
    #[error(transparent)]
    Batch(#[from] purple_api::batch::BatchTooLarge),
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
}

impl MetricsError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MetricsError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

purple_runtime::request_errors!(MetricsError);

impl From<MetricsError> for Status {
    fn from(err: MetricsError) -> Self {
        match err {
            MetricsError::Invalid { field, reason } => {
                purple_runtime::status::invalid_argument(&field, &reason)
            }
            MetricsError::Batch(err) => purple_runtime::status::batch_limit(&err),
            MetricsError::Store(err) => purple_runtime::status::from_sqlx("metrics storage", &err),
        }
    }
}
