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
    shared::observe::in_trace(request.headers(), || {
        tracing::info_span!(
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
        )
    })
}

/// The answer's status on its request's span.
pub(crate) fn record_status(span: &Span, response: &Response) {
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Body;
    use axum::response::IntoResponse as _;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};

    use super::*;

    /// A span made: its target and fields.
    type Made = (String, BTreeMap<String, String>);

    /// The spans made.
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<Made>>>);

    impl tracing::Subscriber for Spans {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut fields = Fields::default();
            span.record(&mut fields);
            let mut spans = self.0.lock().unwrap();
            spans.push((span.metadata().target().to_owned(), fields.0));
            Id::from_u64(spans.len() as u64)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[derive(Default)]
    struct Fields(BTreeMap<String, String>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    /// The span of a request to a route names the route's template, made once at
    /// start-up; a request that matched no route is named by its method alone. The
    /// target is `gateway::http`, which log filters name.
    #[tokio::test]
    async fn the_span_names_the_route_template() {
        let spans = Spans::default();
        let _default = tracing::subscriber::set_default(spans.clone());
        let edge = Edge::new(
            Limits::new(10, Duration::from_secs(5)),
            Admission {
                authenticator: None,
                limiter: None,
            },
        );
        let route = SpanNames::new(&Method::GET, "/v1/products/{sku}");
        let request = || {
            Request::builder()
                .uri("/v1/products/SKU-1")
                .body(Body::empty())
                .unwrap()
        };
        let ok = |_, _| async { http::StatusCode::OK.into_response() };
        let response = edge.serve(Some(&route), Some("a:b"), request(), ok).await;
        assert_eq!(response.status(), http::StatusCode::OK);
        edge.serve(None, None, request(), ok).await;

        let spans = spans.0.lock().unwrap();
        let [(target, routed), (_, unrouted)] = &spans[..] else {
            panic!("two spans: {spans:?}");
        };
        assert_eq!(target, "gateway::http");
        assert_eq!(routed["otel.name"], "GET /v1/products/{sku}");
        assert_eq!(routed["http.route"], "/v1/products/{sku}");
        assert_eq!(routed["url.path"], "/v1/products/SKU-1");
        assert_eq!(routed["http.request.method"], "GET");
        assert_eq!(unrouted["otel.name"], "GET");
        assert!(!unrouted.contains_key("http.route"), "{unrouted:?}");
    }
}
