//! The gRPC statuses every service's error mapping builds on (docs/design.md
//! §6): a bad field carries a `BadRequest` field violation, a refusal a
//! client acts on carries a `google.rpc.ErrorInfo` whose `reason` is one of
//! [`reason`]'s constants, and an internal failure is logged in full but
//! answered opaquely, so SQL and stack traces never leave the server.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Purple refusal.
pub const ERROR_DOMAIN: &str = "purple";

/// The `ErrorInfo.reason` values a client can branch on. They are part of
/// the API contract: never renamed, only added.
pub mod reason {
    /// A request field is malformed or missing (see the BadRequest detail).
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// A batch had more items than the batch limit; split it.
    pub const BATCH_LIMIT_EXCEEDED: &str = "BATCH_LIMIT_EXCEEDED";
    /// The thing named does not exist.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// Optimistic concurrency: reload and retry with the current version.
    pub const STALE_VERSION: &str = "STALE_VERSION";
    /// A workflow action from a state that does not allow it.
    pub const WRONG_STATE: &str = "WRONG_STATE";
    /// The caller's role may not do this.
    pub const ROLE_REQUIRED: &str = "ROLE_REQUIRED";
    /// No valid credentials.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// A limit of the server was reached; retry later.
    pub const RESOURCE_EXHAUSTED: &str = "RESOURCE_EXHAUSTED";
    /// A peer service could not be reached.
    pub const PEER_UNAVAILABLE: &str = "PEER_UNAVAILABLE";
}

/// A refusal with a code, a message and an `ErrorInfo` carrying `reason`
/// and `metadata` (e.g. the current version of a stale test).
pub fn refused(code: Code, reason: &str, message: String, metadata: &[(&str, String)]) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// INVALID_ARGUMENT naming the field (e.g. `events[3].kind`) and why.
pub fn invalid_argument(field: &str, reason: &str) -> Status {
    invalid_argument_because(field, reason, reason::INVALID_FIELD)
}

/// INVALID_ARGUMENT for an upload whose records are refused: one field
/// violation per record (`line 12: executed_at`), the first of them and
/// the total in the message.
pub fn invalid_records(violations: &[(String, String)], total: usize) -> Status {
    let mut details = ErrorDetails::new();
    for (field, why) in violations {
        details.add_bad_request_violation(field.clone(), why.clone());
    }
    details.set_error_info(
        reason::INVALID_FIELD,
        ERROR_DOMAIN,
        HashMap::from([("refused_records".to_owned(), total.to_string())]),
    );
    let first = violations
        .first()
        .map(|(field, why)| format!("{field}: {why}"))
        .unwrap_or_default();
    let more = if total > 1 {
        format!(" (and {} more; nothing was imported)", total - 1)
    } else {
        " (nothing was imported)".to_owned()
    };
    Status::with_error_details(Code::InvalidArgument, format!("{first}{more}"), details)
}

/// INVALID_ARGUMENT for a batch over the limit: the field, and an
/// `ErrorInfo` whose metadata names the limit.
pub fn batch_limit(err: &purple_api::batch::BatchTooLarge) -> Status {
    if !err.is_over_limit() {
        return invalid_argument(&err.field, &err.reason());
    }
    let mut details = ErrorDetails::with_bad_request_violation(&err.field, err.reason());
    details.set_error_info(
        reason::BATCH_LIMIT_EXCEEDED,
        ERROR_DOMAIN,
        HashMap::from([
            (
                "limit".to_owned(),
                purple_api::batch::MAX_BATCH_IDS.to_string(),
            ),
            ("field".to_owned(), err.field.clone()),
        ]),
    );
    Status::with_error_details(Code::InvalidArgument, err.to_string(), details)
}

fn invalid_argument_because(field: &str, why: &str, reason: &str) -> Status {
    let mut details = ErrorDetails::with_bad_request_violation(field, why);
    details.set_error_info(
        reason,
        ERROR_DOMAIN,
        HashMap::from([("field".to_owned(), field.to_owned())]),
    );
    Status::with_error_details(Code::InvalidArgument, format!("{field}: {why}"), details)
}

/// NOT_FOUND for what a request named.
pub fn not_found(what: String) -> Status {
    refused(Code::NotFound, reason::NOT_FOUND, what, &[])
}

/// ABORTED for a stale version, with the versions in the ErrorInfo.
pub fn stale(message: String, expected: i64, actual: i64) -> Status {
    refused(
        Code::Aborted,
        reason::STALE_VERSION,
        message,
        &[
            ("expected_version", expected.to_string()),
            ("current_version", actual.to_string()),
        ],
    )
}

/// FAILED_PRECONDITION for an action the current state does not allow.
pub fn wrong_state(message: String) -> Status {
    refused(Code::FailedPrecondition, reason::WRONG_STATE, message, &[])
}

/// PERMISSION_DENIED for a role that may not do this.
pub fn permission_denied(message: String) -> Status {
    refused(Code::PermissionDenied, reason::ROLE_REQUIRED, message, &[])
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
        Code::InvalidArgument | Code::NotFound => Status::with_details(
            status.code(),
            format!("{service}: {}", status.message()),
            status.details().to_vec().into(),
        ),
        _ => {
            tracing::warn!(cause = %status, "{service} unavailable");
            refused(
                Code::Unavailable,
                reason::PEER_UNAVAILABLE,
                format!("{service} is unavailable; retry later"),
                &[("service", service.to_owned())],
            )
        }
    }
}

/// The status of a storage error: retryable conditions are UNAVAILABLE,
/// anything else INTERNAL.
pub fn from_sqlx(what: &str, err: &sqlx::Error) -> Status {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            unavailable(what, err)
        }
        // Text the database cannot hold (PostgreSQL refuses NUL bytes):
        // the request's data, not the server, is at fault.
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("22021" | "22P05" | "22P02")) =>
        {
            tracing::info!(cause = %err, "{what}: the request's text was refused");
            invalid_argument(
                "request",
                "a text field holds a character that cannot be stored (a NUL byte)",
            )
        }
        _ => internal(what, err),
    }
}

/// Lets a service error with an `invalid(field, reason)` constructor take
/// a bad page token with `?`, so each service names the field the same way.
#[macro_export]
macro_rules! request_errors {
    ($error:ty) => {
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
        assert_eq!(details.error_info().unwrap().reason, reason::INVALID_FIELD);
    }

    #[test]
    fn refusals_a_client_acts_on_carry_a_reason() {
        let status = stale("stale".into(), 2, 3);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            (reason::STALE_VERSION, ERROR_DOMAIN)
        );
        assert_eq!(info.metadata["current_version"], "3");
        let batch = batch_limit(&purple_api::batch::BatchTooLarge {
            field: "ids".into(),
            len: 1_001,
            bad_id: None,
        });
        let details = batch.get_error_details();
        assert_eq!(
            details.error_info().unwrap().reason,
            reason::BATCH_LIMIT_EXCEEDED
        );
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "ids"
        );
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
