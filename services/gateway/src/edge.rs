//! What every API request goes through before its handler, built once and run as
//! plain calls: its span, the limits (`limits.rs`), admission (`auth/admission.rs`)
//! and the route's scope. Layers would do the same, but axum clones a layer's
//! service for every request, and boxes each layer's future: this way a request
//! costs no clone of anything but an `Arc`.

use std::future::Future;

use axum::extract::Request;
use axum::response::Response;
use http::Method;
use tracing::{Instrument as _, Span};

use crate::auth::{Admission, OnBehalf};
use crate::limits::Limits;

/// What every API request goes through, in this order, as plain calls rather than
/// layers (a layer's service is cloned for every request): its span (`http_span`),
/// the limits (`limits.rs`: 503, 504, 408), then admission (`auth/admission.rs`:
/// 429, 401, the route's scope 403).
#[derive(Debug)]
pub(crate) struct Edge {
    limits: Limits,
    admission: Admission,
}

/// An API route as its span names it, made once at start-up.
#[derive(Debug)]
pub(crate) struct SpanNames {
    /// `GET /v1/orders/{order_id}`.
    name: String,
    /// The template as the proto writes it (`/v1/orders/{order_id}`).
    route: String,
}

impl SpanNames {
    pub(crate) fn new(verb: &Method, template: &str) -> Self {
        Self {
            name: format!("{verb} {template}"),
            route: template.to_owned(),
        }
    }
}

impl Edge {
    pub(crate) fn new(limits: Limits, admission: Admission) -> Self {
        Self { limits, admission }
    }

    /// `handle` for `request` behind the span, the limits and admission. `route`
    /// and `scope` are `None` when no route matched (404, 405).
    pub(crate) async fn serve<F, Fut>(
        &self,
        route: Option<&SpanNames>,
        scope: Option<&str>,
        request: Request,
        handle: F,
    ) -> Response
    where
        F: FnOnce(OnBehalf, Request) -> Fut,
        Fut: Future<Output = Response>,
    {
        let span = match route {
            Some(route) => http_span(&route.name, Some(&route.route), &request),
            None => http_span(request.method().as_str(), None, &request),
        };
        let admitted = |request| self.admission.run(scope, request, handle);
        let response = self
            .limits
            .run(request, admitted)
            .instrument(span.clone())
            .await;
        record_status(&span, &response);
        response
    }
}

/// A server span per request, after the OpenTelemetry HTTP conventions, continuing
/// the caller's trace (W3C `traceparent` header); the gRPC calls the handler makes
/// become its children. `name` is `GET /v1/orders/{order_id}`, `route` the template.
pub(crate) fn http_span(name: &str, route: Option<&str>, request: &Request) -> Span {
    // The target is the router's module, as it was when this was one of its layers:
    // log filters name it (`RUST_LOG=gateway::http=info`).
    let span = tracing::info_span!(
        target: "gateway::http",
        "http",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        // shared::observe::APP_SERVICE: which service made the span, in a one-process stack.
        app.service = crate::NAME,
        http.request.method = request.method().as_str(),
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        // The token's subject, when the request carries a valid one (auth/admission.rs).
        enduser.id = tracing::field::Empty,
    );
    shared::observe::continue_trace(&span, request.headers());
    span
}

/// The answer's status on its request's span.
pub(crate) fn record_status(span: &Span, response: &Response) {
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}
