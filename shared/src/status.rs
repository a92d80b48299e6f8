//! Building rich gRPC statuses (google.rpc error details via `tonic-types`) from the
//! shared error types. Each service's `error.rs` maps its own errors with these.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::ValidationError;

impl From<ValidationError> for Status {
    /// INVALID_ARGUMENT with one `BadRequest.FieldViolation` per problem, visible with
    /// `grpcurl -v` and to clients that read error details.
    fn from(error: ValidationError) -> Self {
        let mut details = ErrorDetails::new();
        for v in &error.violations {
            details.add_bad_request_violation(&v.field, &v.description);
        }
        Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
    }
}

/// NOT_FOUND naming the missing resource (`ResourceInfo`).
pub fn not_found(resource_type: &str, name: &str) -> Status {
    Status::with_error_details(
        Code::NotFound,
        format!("{resource_type} {name:?} not found"),
        ErrorDetails::with_resource_info(resource_type, name, "", "not found"),
    )
}

/// A rule the current state breaks, for FAILED_PRECONDITION.
#[derive(Clone, Debug)]
pub struct Precondition {
    /// A machine-readable kind, e.g. `"STOCK"`.
    pub kind: &'static str,
    /// What it is about, e.g. a sku.
    pub subject: String,
    pub description: String,
}

/// FAILED_PRECONDITION with a `PreconditionFailure` violation per broken rule.
pub fn failed_precondition(message: impl Into<String>, violations: &[Precondition]) -> Status {
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_precondition_failure_violation(v.kind, &v.subject, &v.description);
    }
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

/// ALREADY_EXISTS for an idempotency key (or id) reused for a different request.
pub fn key_reused(field: &str, value: &str) -> Status {
    Status::with_error_details(
        Code::AlreadyExists,
        format!("{field} {value:?} was already used for a different request"),
        ErrorDetails::with_resource_info(field, value, "", "already used"),
    )
}

/// INTERNAL with a generic message. The cause goes to the log (with the call's span),
/// never to the caller.
pub fn internal(error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %ErrorChain(error), "internal error");
    Status::internal("internal error")
}

/// Displays an error with its causes: `a: b: c`.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// A status with an `ErrorInfo` detail: a machine-readable `reason` (UPPER_SNAKE_CASE)
/// within `domain` (the service's proto package), plus string `metadata`.
pub fn with_reason<'a>(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    domain: &str,
    metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Status {
    let metadata: std::collections::HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, domain, metadata),
    )
}
