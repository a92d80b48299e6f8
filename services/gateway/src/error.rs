//! The one mapping from gRPC statuses to HTTP errors, and the one JSON shape of every
//! error the gateway answers, modeled on Google's JSON error model:
//!
//! ```json
//! {"error": {"code": 400, "status": "INVALID_ARGUMENT",
//!            "message": "invalid request: items[0].quantity: must be from 1 to 10000",
//!            "details": [{"field": "items[0].quantity", "description": "must be from 1 to 10000"}]}}
//! ```
//!
//! `code` is the HTTP status, `status` the gRPC code's name (stable, for programs),
//! `message` is for people. `details` (omitted when empty) holds a field violation
//! (`field`, `description`) per invalid input, or a precondition violation (`type`,
//! `subject`, `description`) per rule the current state breaks.
//!
//! | gRPC code | HTTP | message |
//! |---|---|---|
//! | `INVALID_ARGUMENT`, `OUT_OF_RANGE` | 400 | the service's, with field violations |
//! | `UNAUTHENTICATED` | 401 | the service's |
//! | `PERMISSION_DENIED` | 403 | the service's |
//! | `NOT_FOUND` | 404 | the service's |
//! | `ALREADY_EXISTS`, `ABORTED` | 409 | the service's |
//! | `FAILED_PRECONDITION` | 409 | the service's, with precondition violations |
//! | `RESOURCE_EXHAUSTED` | 429 | generic |
//! | `UNIMPLEMENTED` | 501 | generic |
//! | `UNAVAILABLE` | 503 | generic |
//! | `DEADLINE_EXCEEDED`, `CANCELLED` | 504 (`DEADLINE_EXCEEDED`) | generic |
//! | `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, any other | 500 | generic |
//!
//! This is google.rpc.Code's own HTTP mapping but for two codes:
//! - FAILED_PRECONDITION, which Google maps to 400, is 409 Conflict: the request was
//!   valid and the resource's current state is what stands in the way (as for
//!   ALREADY_EXISTS), so the same request can succeed once that state changes, where
//!   400 tells a REST client to fix its request (and 422, that the request itself is
//!   unprocessable).
//! - CANCELLED, which Google maps to 499 (the client closed the request), is 504:
//!   when the HTTP client goes away its request is dropped and nobody reads the answer,
//!   so a CANCELLED that reaches a handler is tonic reporting the expiry of the
//!   gateway's own deadline on the upstream call.
//!
//! Services write the messages of the client-error codes for their callers, so they
//! pass through. Every other status can carry internals (a connection error with an
//! address, a panic message), so the caller gets a fixed message and the log gets
//! the status.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Serialize;
use shared::ValidationError;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// An error answer: see the module documentation.
#[derive(Debug)]
pub(crate) struct ApiError {
    http: StatusCode,
    code: Code,
    message: String,
    details: Vec<Detail>,
    /// Headers the status calls for: `WWW-Authenticate` on 401 and 403 (RFC 6750),
    /// `Retry-After` on 429. (A list, not a `HeaderMap`: this error is the `Err` of
    /// every handler, and small is cheap to return.)
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// One entry of `details`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum Detail {
    /// An invalid input: `field` is its path in the JSON body (`items[0].quantity`),
    /// or the name of the query parameter or header.
    Field { field: String, description: String },
    /// A rule the current state breaks: `type` says which kind (e.g. `STOCK`),
    /// `subject` what it is about (e.g. a sku).
    Precondition {
        #[serde(rename = "type")]
        kind: String,
        subject: String,
        description: String,
    },
}

impl ApiError {
    /// 400 INVALID_ARGUMENT naming each invalid input.
    pub(crate) fn invalid(message: impl Into<String>, violations: Vec<Detail>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message).with_details(violations)
    }

    /// 400 INVALID_ARGUMENT for one invalid input.
    pub(crate) fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let (field, description) = (field.into(), description.into());
        let message = format!("invalid request: {field}: {description}");
        Self::invalid(message, vec![Detail::Field { field, description }])
    }

    /// 400: the body is not valid JSON.
    pub(crate) fn malformed_json(error: &serde_json::Error) -> Self {
        let message = format!("the request body is not valid JSON: {error}");
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    }

    /// 500 for a broken promise of an upstream (e.g. a response without its order).
    /// `what` goes to the log only.
    pub(crate) fn internal(what: &str) -> Self {
        tracing::error!(error = what, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            "internal error",
        )
    }

    /// 409 ALREADY_EXISTS: idempotency key `key` of `header` was used for another request.
    pub(crate) fn key_reused(header: &str, key: &str) -> Self {
        let description = "was already used for a different request; a new request needs a new key";
        let message = format!("{header} {key:?} {description}");
        Self::new(StatusCode::CONFLICT, Code::AlreadyExists, message).with_details(vec![
            Detail::Field {
                field: header.to_owned(),
                description: description.to_owned(),
            },
        ])
    }

    /// 413: the body is larger than `limit` bytes. INVALID_ARGUMENT rather than
    /// RESOURCE_EXHAUSTED: the same request will never fit, however long one waits.
    pub(crate) fn body_too_large(limit: usize) -> Self {
        let message = format!("the request body is larger than {limit} bytes");
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            message,
        )
    }

    /// 415: the body is not declared as JSON.
    pub(crate) fn not_json() -> Self {
        let message = "the request body must be JSON, sent with Content-Type: application/json";
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            message,
        )
    }

    /// 404 for a path that is no route of the API.
    pub(crate) fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!("no route for {path}"),
        )
    }

    /// 405 for a route that does not take the request's method.
    pub(crate) fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        let message = format!("{path} does not take {method}");
        Self::new(StatusCode::METHOD_NOT_ALLOWED, Code::Unimplemented, message)
    }

    /// 401 UNAUTHENTICATED. `problem` is `None` when the request carries no bearer
    /// token at all: RFC 6750 (section 3.1) then asks for a bare challenge, without an
    /// error code. Otherwise it is a short reason (e.g. "expired") that says which rule
    /// the token breaks, never what the cryptography found.
    pub(crate) fn unauthenticated(problem: Option<&str>) -> Self {
        let (message, challenge) = match problem {
            None => (
                "this route requires a bearer token (Authorization: Bearer <JWT>)".to_owned(),
                r#"Bearer realm="gateway""#.to_owned(),
            ),
            Some(problem) => (
                format!("the bearer token is invalid: {problem}"),
                format!(
                    r#"Bearer realm="gateway", error="invalid_token", error_description="{problem}""#
                ),
            ),
        };
        Self::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, message)
            .with_header(WWW_AUTHENTICATE, challenge)
    }

    /// 403 PERMISSION_DENIED: the token is valid but does not grant `scope`.
    pub(crate) fn insufficient_scope(scope: &str) -> Self {
        let message = format!("the bearer token does not grant the scope {scope:?}");
        let challenge =
            format!(r#"Bearer realm="gateway", error="insufficient_scope", scope="{scope}""#);
        Self::new(StatusCode::FORBIDDEN, Code::PermissionDenied, message)
            .with_header(WWW_AUTHENTICATE, challenge)
    }

    /// 429 RESOURCE_EXHAUSTED: the client sent more than its rate; it may try again
    /// after `retry_after` (sent in whole seconds, rounded up).
    pub(crate) fn rate_limited(retry_after: Duration) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        let message = format!("too many requests; try again in {seconds} s");
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::ResourceExhausted,
            message,
        )
        .with_header(RETRY_AFTER, seconds.to_string())
    }

    /// 503 UNAVAILABLE: the gateway has `GATEWAY_CONCURRENCY_LIMIT` requests in flight;
    /// the client may try again in a second.
    pub(crate) fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            generic_message(Code::Unavailable),
        )
        .with_header(RETRY_AFTER, "1".to_owned())
    }

    /// 504 DEADLINE_EXCEEDED: the request outlasted `GATEWAY_REQUEST_TIMEOUT`, as an
    /// upstream call that outlasts its deadline is answered.
    pub(crate) fn timed_out() -> Self {
        Self::from(Status::deadline_exceeded("GATEWAY_REQUEST_TIMEOUT"))
    }

    /// 408 DEADLINE_EXCEEDED: the client did not send its body within
    /// `GATEWAY_REQUEST_TIMEOUT`; the slowness is its own, not an upstream's.
    pub(crate) fn body_timed_out() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            Code::DeadlineExceeded,
            "the request body did not arrive within GATEWAY_REQUEST_TIMEOUT",
        )
    }

    /// The same error with each field path rewritten by `rename`, e.g. from the proto
    /// field names a service reports to the names of the JSON body.
    pub(crate) fn rename_fields(mut self, rename: impl Fn(&str) -> String) -> Self {
        for detail in &mut self.details {
            if let Detail::Field { field, .. } = detail {
                *field = rename(field);
            }
        }
        self.message = self.message_with_fields();
        self
    }

    /// The HTTP status.
    #[cfg(test)]
    pub(crate) fn http_status(&self) -> StatusCode {
        self.http
    }

    fn new(http: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self {
            http,
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The same error with header `name` set to `value`, which is made of visible
    /// ASCII by every caller.
    fn with_header(mut self, name: HeaderName, value: String) -> Self {
        match HeaderValue::try_from(value) {
            Ok(value) => self.headers.push((name, value)),
            Err(error) => tracing::error!(%name, %error, "an error header that is no header value"),
        }
        self
    }

    fn with_details(mut self, details: Vec<Detail>) -> Self {
        self.details = details;
        self
    }

    /// For INVALID_ARGUMENT, a message listing the violations as they are now named.
    fn message_with_fields(&self) -> String {
        let fields: Vec<String> = self
            .details
            .iter()
            .filter_map(|d| match d {
                // The request as a whole (e.g. how many more violations there are).
                Detail::Field { field, description } if field.is_empty() => {
                    Some(description.clone())
                }
                Detail::Field { field, description } => Some(format!("{field}: {description}")),
                Detail::Precondition { .. } => None,
            })
            .collect();
        if self.code == Code::InvalidArgument && !fields.is_empty() {
            format!("invalid request: {}", fields.join("; "))
        } else {
            self.message.clone()
        }
    }
}

/// The HTTP status of a gRPC code, and whether the service's message (and details)
/// may reach the caller.
fn http_mapping(code: Code) -> (StatusCode, bool) {
    match code {
        Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, true),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, true),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, true),
        Code::NotFound => (StatusCode::NOT_FOUND, true),
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => {
            (StatusCode::CONFLICT, true)
        }
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, false),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, false),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, false),
        Code::DeadlineExceeded | Code::Cancelled => (StatusCode::GATEWAY_TIMEOUT, false),
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        }
    }
}

/// The message of a status whose own message stays in the log.
fn generic_message(code: Code) -> &'static str {
    match code {
        Code::ResourceExhausted => "too many requests; try again later",
        Code::Unimplemented => "not implemented",
        Code::Unavailable => "the service is unavailable; try again later",
        Code::DeadlineExceeded => "the request took too long",
        _ => "internal error",
    }
}

/// The name of a gRPC code, as in `google.rpc.Code`.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<ValidationError> for ApiError {
    /// The gateway's own checks (a header, a query parameter), reported as a service
    /// reports its INVALID_ARGUMENT.
    fn from(error: ValidationError) -> Self {
        let message = error.to_string();
        let more = (error.more > 0).then(|| shared::FieldViolation::more(error.more));
        let details = error
            .violations
            .into_iter()
            .chain(more)
            .map(|v| Detail::Field {
                field: v.field,
                description: v.description,
            })
            .collect();
        Self::invalid(message, details)
    }
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        let code = status.code();
        let (http, for_the_caller) = http_mapping(code);
        if !for_the_caller {
            // The whole status, for whoever investigates the 5xx the caller saw.
            tracing::error!(
                code = code_name(code),
                message = status.message(),
                "upstream call failed"
            );
            let code = match code {
                Code::Cancelled => Code::DeadlineExceeded,
                Code::Ok => Code::Internal,
                code => code,
            };
            return Self::new(http, code, generic_message(code));
        }
        tracing::debug!(
            code = code_name(code),
            message = status.message(),
            "upstream refused the call"
        );
        let details = status.get_error_details();
        let fields = details
            .bad_request()
            .into_iter()
            .flat_map(|b| &b.field_violations);
        let preconditions = details
            .precondition_failure()
            .into_iter()
            .flat_map(|p| &p.violations);
        let details = fields
            .map(|v| Detail::Field {
                field: v.field.clone(),
                description: v.description.clone(),
            })
            .chain(preconditions.map(|v| Detail::Precondition {
                kind: v.r#type.clone(),
                subject: v.subject.clone(),
                description: v.description.clone(),
            }))
            .collect();
        Self::new(http, code, status.message()).with_details(details)
    }
}

/// The JSON document of an error: `{"error": {…}}`.
#[derive(Serialize)]
struct Body<'a> {
    error: BodyError<'a>,
}

#[derive(Serialize)]
struct BodyError<'a> {
    code: u16,
    status: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
    details: &'a [Detail],
}

impl ApiError {
    fn body(&self) -> Body<'_> {
        Body {
            error: BodyError {
                code: self.http.as_u16(),
                status: code_name(self.code),
                message: &self.message,
                details: &self.details,
            },
        }
    }
}

impl ApiError {
    /// The JSON document of the error, e.g. for the `error` event of a stream.
    pub(crate) fn body_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.http, Json(self.body())).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

#[cfg(test)]
mod tests;
