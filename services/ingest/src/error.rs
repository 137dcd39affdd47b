//! The ingest service's one error type and its single mapping to gRPC.

use tonic::Status;

use crate::parse::ParseError;

/// Everything that can go wrong in ingest.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A request field is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// A batch over the limit.
    #[error(transparent)]
    Batch(#[from] purple_api::batch::BatchTooLarge),
    /// An uploaded file is malformed or of the wrong kind.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
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

impl From<purple_runtime::upload::UploadError> for IngestError {
    fn from(err: purple_runtime::upload::UploadError) -> Self {
        use purple_runtime::upload::UploadError;
        match err {
            UploadError::Invalid { field, reason } => IngestError::Invalid { field, reason },
            UploadError::Stalled(what) => IngestError::Stalled(what),
            UploadError::Exhausted(what) => IngestError::Exhausted(what),
        }
    }
}

impl IngestError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        IngestError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

purple_runtime::request_errors!(IngestError);

impl From<IngestError> for Status {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Invalid { field, reason } => {
                purple_runtime::status::invalid_argument(&field, &reason)
            }
            IngestError::Batch(err) => purple_runtime::status::batch_limit(&err),
            IngestError::Parse(err) => purple_runtime::status::invalid_argument(
                &format!("file {}", err.file),
                &format!("{}: {}", err.place, err.message),
            ),
            IngestError::Store(err) => purple_runtime::status::from_sqlx("catalogue storage", &err),
            IngestError::Stalled(what) => Status::deadline_exceeded(what),
            IngestError::Exhausted(what) => purple_runtime::status::refused(
                tonic::Code::ResourceExhausted,
                purple_runtime::status::reason::RESOURCE_EXHAUSTED,
                what,
                &[],
            ),
            IngestError::Internal(what) => purple_runtime::status::internal("import", &what),
        }
    }
}
