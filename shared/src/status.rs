//! Building rich gRPC statuses (google.rpc error details via `tonic-types`) from the
//! shared error types. Each service's `error.rs` maps its own errors with these.
//!
//! **Every status built here is small**, whatever the request it answers: an error
//! travels in headers (`grpc-message`, percent-encoded, and `grpc-status-details-bin`,
//! base64), and a client refuses an answer whose header list is larger than its limit
//! (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`: 8 KiB in grpc-java and grpc-c, 16 KiB in
//! hyper and so in tonic). It would see a broken answer instead of the mistake it made.
//! So the message is cut at [`MAX_MESSAGE_BYTES`], every string of a detail at
//! [`MAX_DETAIL_BYTES`], and a list of violations at [`MAX_VIOLATIONS`] (or fewer, when
//! their strings pass [`MAX_DETAILS_BYTES`]) plus one saying how many more: an error
//! answer's header list stays under [`MAX_ERROR_HEADERS`] (tested below with the worst
//! inputs), which is the least `GRPC_MAX_HEADER_LIST_SIZE` accepts.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::validation::{FieldViolation, ValidationError};
// Defined with the validation errors, whose messages list violations while they fit.
pub use crate::validation::{MAX_MESSAGE_BYTES, MAX_VIOLATIONS};

/// Longest string in an error detail (a field path, a subject, a description).
pub const MAX_DETAIL_BYTES: usize = 128;

/// Most bytes of strings in the listed violations of one status, all together.
pub const MAX_DETAILS_BYTES: usize = 2 << 10;

/// Bound of the HTTP/2 header list of any error answer built here (as HTTP/2 counts
/// it: name + value + 32 per header), with room for the transport's own headers.
pub const MAX_ERROR_HEADERS: usize = 8 << 10;

impl From<ValidationError> for Status {
    /// INVALID_ARGUMENT with one `BadRequest.FieldViolation` per problem (at most
    /// [`MAX_VIOLATIONS`], then how many more), visible with `grpcurl -v` and to
    /// clients that read error details.
    fn from(error: ValidationError) -> Self {
        let message = error.to_string();
        let violations = error.violations.into_iter().map(|v| FieldViolation {
            field: cut(&v.field),
            description: cut(&v.description),
        });
        let size = |v: &FieldViolation| v.field.len() + v.description.len();
        let mut details = ErrorDetails::new();
        for v in capped(violations, error.more, size, FieldViolation::more) {
            details.add_bad_request_violation(v.field, v.description);
        }
        rich(Code::InvalidArgument, message, details)
    }
}

/// A status without details; the message is cut at [`MAX_MESSAGE_BYTES`]. For every
/// status whose message may hold what a caller sent.
pub fn new(code: Code, message: impl Into<String>) -> Status {
    Status::new(code, bounded(message.into(), MAX_MESSAGE_BYTES))
}

/// The one constructor of statuses with details: the message bounded like [`new`].
fn rich(code: Code, message: String, details: ErrorDetails) -> Status {
    Status::with_error_details(code, bounded(message, MAX_MESSAGE_BYTES), details)
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// A string of a detail, cut at [`MAX_DETAIL_BYTES`].
fn cut(text: &str) -> String {
    bounded(text.to_owned(), MAX_DETAIL_BYTES)
}

/// The one bound of every list of violations: the first of `items`, at most
/// [`MAX_VIOLATIONS`] of them and [`MAX_DETAILS_BYTES`] of strings (`size`); when any
/// is left out (or `omitted` were already), one last item made by `more` says how many.
fn capped<T>(
    items: impl IntoIterator<Item = T>,
    omitted: usize,
    size: impl Fn(&T) -> usize,
    more: impl FnOnce(usize) -> T,
) -> Vec<T> {
    let (mut kept, mut bytes, mut left) = (Vec::new(), 0, 0);
    for item in items {
        // Once one is left out, the rest are too: the list stays a prefix.
        if left > 0 || kept.len() == MAX_VIOLATIONS || bytes + size(&item) > MAX_DETAILS_BYTES {
            left += 1;
        } else {
            bytes += size(&item);
            kept.push(item);
        }
    }
    if left + omitted > 0 {
        kept.push(more(left + omitted));
    }
    kept
}

/// NOT_FOUND naming the missing resource (`ResourceInfo`).
pub fn not_found(resource_type: &str, name: &str) -> Status {
    let (resource_type, name) = (cut(resource_type), cut(name));
    rich(
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

/// FAILED_PRECONDITION with a `PreconditionFailure` violation per broken rule (at
/// most [`MAX_VIOLATIONS`], then one of type `MORE` saying how many more).
pub fn failed_precondition(message: impl Into<String>, violations: &[Precondition]) -> Status {
    let violations = violations.iter().map(|v| Precondition {
        kind: v.kind,
        subject: cut(&v.subject),
        description: cut(&v.description),
    });
    let size = |v: &Precondition| v.kind.len() + v.subject.len() + v.description.len();
    let more = |count| Precondition {
        kind: "MORE",
        subject: String::new(),
        description: FieldViolation::more(count).description,
    };
    let mut details = ErrorDetails::new();
    for v in capped(violations, 0, size, more) {
        details.add_precondition_failure_violation(v.kind, v.subject, v.description);
    }
    rich(Code::FailedPrecondition, message.into(), details)
}

/// ALREADY_EXISTS for an idempotency key (or id) reused for a different request.
pub fn key_reused(field: &str, value: &str) -> Status {
    let (field, value) = (cut(field), cut(value));
    rich(
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
    let metadata = metadata.into_iter().map(|(k, v)| (cut(k), cut(v)));
    let size = |(k, v): &(String, String)| k.len() + v.len();
    let more = |count: usize| ("more".to_owned(), count.to_string());
    let metadata: std::collections::HashMap<String, String> =
        capped(metadata, 0, size, more).into_iter().collect();
    rich(
        code,
        message.into(),
        ErrorDetails::with_error_info(reason, domain, metadata),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Violations;

    /// The size of the answer's header list as HTTP/2 counts it (RFC 9113 6.5.2).
    fn header_list_size(status: &Status) -> usize {
        let response = status.clone().into_http::<tonic::body::Body>();
        let headers = response.headers().iter();
        headers
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum()
    }

    /// Characters that percent-encoding triples, and a multi-byte one to cut through.
    fn huge() -> String {
        "é\n%".repeat(50_000)
    }

    #[test]
    fn every_error_fits_the_smallest_header_list_a_client_accepts() {
        let huge = huge();
        let mut violations = Violations::new();
        for i in 0..10_000 {
            violations.add(format!("{huge}[{i}]"), huge.as_str());
        }
        let by_hand = ValidationError {
            violations: vec![
                FieldViolation {
                    field: huge.clone(),
                    description: huge.clone()
                };
                1000
            ],
            more: 7,
        };
        let precondition = Precondition {
            kind: "STOCK",
            subject: huge.clone(),
            description: huge.clone(),
        };
        let metadata: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("{i}{huge}"), huge.clone()))
            .collect();
        let statuses = [
            Status::from(violations.finish().unwrap_err()),
            Status::from(by_hand),
            not_found(&huge, &huge),
            failed_precondition(huge.as_str(), &vec![precondition; 1000]),
            key_reused(&huge, &huge),
            with_reason(
                Code::FailedPrecondition,
                huge.as_str(),
                "REASON",
                "test.v1",
                metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ),
            new(Code::NotFound, huge.as_str()),
        ];
        for status in &statuses {
            let size = header_list_size(status);
            // The transport adds `content-type` (and perhaps `date`): keep room.
            assert!(
                size <= MAX_ERROR_HEADERS - 512,
                "{size} bytes: {:?}",
                status.code()
            );
            assert!(status.message().len() <= MAX_MESSAGE_BYTES);
            assert!(status.message().len() > 100, "{:?}", status.code());
        }
    }

    #[test]
    fn at_most_twenty_violations_then_how_many_more() {
        let mut violations = Violations::new();
        for i in 0..110 {
            violations.id(format!("items[{i}].sku"), "");
            violations.quantity(format!("items[{i}].quantity"), 0);
        }
        let status = Status::from(violations.finish().unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_details_bad_request().unwrap();
        let listed = &details.field_violations;
        assert_eq!(listed.len(), MAX_VIOLATIONS + 1);
        assert_eq!(listed[0].field, "items[0].sku");
        assert_eq!(listed[MAX_VIOLATIONS].field, "");
        assert_eq!(
            listed[MAX_VIOLATIONS].description,
            "200 more violations not listed"
        );
        let message = status.message();
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{message}");
        assert!(
            message.ends_with(" more") && !message.ends_with('…'),
            "{message}"
        );

        let shortages: Vec<_> = (0..100)
            .map(|i| Precondition {
                kind: "STOCK",
                subject: format!("SKU-{i}"),
                description: "requested 2, available 1".into(),
            })
            .collect();
        let status = failed_precondition("not enough stock", &shortages);
        let listed = status
            .get_details_precondition_failure()
            .unwrap()
            .violations;
        assert_eq!(listed.len(), MAX_VIOLATIONS + 1);
        assert_eq!(listed[MAX_VIOLATIONS].r#type, "MORE");
        assert_eq!(
            listed[MAX_VIOLATIONS].description,
            "80 more violations not listed"
        );
    }

    #[test]
    fn small_errors_pass_whole() {
        let mut violations = Violations::new();
        violations.id("sku", "");
        let status = Status::from(violations.finish().unwrap_err());
        assert_eq!(status.message(), "invalid request: sku: is required");
        let listed = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(listed.len(), 1);
        assert_eq!(bounded("ab".into(), 2), "ab");
        assert_eq!(bounded("abcdef".into(), 5), "ab…");
        assert_eq!(bounded("ééé".into(), 5), "é…");
    }
}
