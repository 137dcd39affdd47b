//! The gRPC statuses every service's error mapping builds on: a bad field
//! carries a BadRequest field violation a client can act on, and an
//! internal failure is logged in full but answered opaquely, so SQL and
//! stack traces never leave the server.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// INVALID_ARGUMENT naming the field (e.g. `events[3].kind`) and why.
pub fn invalid_argument(field: &str, reason: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {reason}"),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// INTERNAL with a generic message; the cause goes to the log (with the
/// request's trace id from the enclosing span).
pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(%cause, "{what} failed");
    Status::internal(format!("{what} failed; see the server log"))
}

/// UNAVAILABLE for a storage or peer failure worth retrying (pool
/// exhausted, connection lost), logged like [`internal`].
pub fn unavailable(what: &str, cause: &dyn std::fmt::Display) -> Status {
    tracing::warn!(%cause, "{what} unavailable");
    Status::unavailable(format!("{what} is unavailable; retry later"))
}

/// The status to answer when a call to a peer service failed: a caller's
/// mistake the peer caught (INVALID_ARGUMENT, NOT_FOUND) stays the caller's,
/// naming the peer; anything else means the peer is unavailable.
pub fn from_peer(service: &str, status: &Status) -> Status {
    match status.code() {
        Code::InvalidArgument | Code::NotFound => {
            Status::new(status.code(), format!("{service}: {}", status.message()))
        }
        _ => unavailable(service, status),
    }
}

/// The status of a storage error: retryable conditions are UNAVAILABLE,
/// anything else INTERNAL.
pub fn from_sqlx(what: &str, err: &sqlx::Error) -> Status {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            unavailable(what, err)
        }
        _ => internal(what, err),
    }
}

/// Lets a service error with an `invalid(field, reason)` constructor take
/// the request-shape errors every service meets — a batch over the limit
/// and a bad page token — with `?`, so each names its field the same way.
#[macro_export]
macro_rules! request_errors {
    ($error:ty) => {
        impl From<purple_api::batch::BatchTooLarge> for $error {
            fn from(err: purple_api::batch::BatchTooLarge) -> Self {
                <$error>::invalid(err.field.clone(), err.reason())
            }
        }

        impl From<$crate::paging::PageError> for $error {
            fn from(err: $crate::paging::PageError) -> Self {
                <$error>::invalid("page", err.to_string())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_message_and_details() {
        let status = invalid_argument("events[2].kind", "unknown kind \"x\"");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "events[2].kind: unknown kind \"x\"");
        let details = status.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "events[2].kind");
    }

    #[test]
    fn storage_errors_do_not_leak() {
        let status = from_sqlx(
            "recording events",
            &sqlx::Error::Protocol("SELECT secret".into()),
        );
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }
}
