//! Observes every call on both ends: one span per call, following the OpenTelemetry RPC
//! semantic conventions, carrying the W3C trace context across processes, and one
//! sample in the call-duration histograms ([`crate::metrics`]).
//!
//! A call ends when its response body ends (the gRPC status arrives in the trailers),
//! so streaming calls are measured to their last message, and the span stays current
//! while the response stream is polled: log lines written by a streaming handler carry
//! the call's span and trace id too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::{Extractor, Injector};
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{self, Side};
use crate::telemetry;

/// The span attribute naming the service (`orders`, `gateway`, …) that made a server,
/// producer or consumer span. Each process exports under its own `service.name`
/// resource, except the `stack` launcher, which runs every service in one process
/// under `service.name=stack`: there this attribute tells them apart.
pub const APP_SERVICE: &str = "app.service";

/// The label of services and methods this server does not know.
const OTHER: &str = "_OTHER";

/// gRPC status codes the conventions count as errors on the server side; on the client
/// side every code but OK is one.
const SERVER_ERRORS: [i32; 6] = [2, 4, 12, 13, 14, 15];
const UNIMPLEMENTED: i32 = 12;
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

/// One call in flight.
#[derive(Debug)]
struct Call {
    side: Side,
    span: tracing::Span,
    service: &'static str,
    method: Arc<str>,
    start: Instant,
}

impl Call {
    fn finish(self, code: i32) {
        let error = match self.side {
            Side::Server => SERVER_ERRORS.contains(&code),
            Side::Client => code != 0,
        };
        self.span.record("rpc.grpc.status_code", code);
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
        // An unknown method of a known service: do not let clients mint labels.
        let method = if code == UNIMPLEMENTED {
            OTHER
        } else {
            &self.method
        };
        metrics::record_call(self.side, self.service, method, code, self.start.elapsed());
    }

    /// Finishes now if the status came with the headers (a "trailers-only" response,
    /// as errors usually are), otherwise when the body ends.
    fn observe<B>(self, response: http::Response<B>) -> http::Response<Observed<B>> {
        let call = match grpc_status(response.headers()) {
            Some(code) => {
                self.finish(code);
                None
            }
            None => Some(self),
        };
        response.map(|inner| Observed { inner, call })
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// `/package.Service/Method` → (`package.Service/Method`, `package.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str, &str) {
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    (name, service, method)
}

/// A response body that finishes its call when it ends, and runs inside the call's span.
#[derive(Debug)]
pub struct Observed<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Body for Observed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = {
            let _entered = this.call.as_ref().map(|call| call.span.enter());
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| grpc_status(t).unwrap_or(UNKNOWN)),
            Poll::Ready(Some(Err(_)) | None) => Some(UNKNOWN),
            Poll::Pending => None,
        };
        // Take the call only once the status is known: a data frame leaves it in place.
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Observed<B> {
    /// A body dropped before its end: the peer went away, or the call was cancelled.
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(CANCELLED);
        }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Observes the calls a server receives. `services` are the names it serves; calls to
/// any other service are labelled `_OTHER`.
#[derive(Clone, Debug)]
pub struct ServerLayer {
    app: &'static str,
    services: Arc<[&'static str]>,
}

impl ServerLayer {
    /// `app` is the name of the service that serves (`orders`): its server spans
    /// carry it as [`APP_SERVICE`], which tells the services of one process apart.
    pub fn new(app: &'static str, services: impl IntoIterator<Item = &'static str>) -> Self {
        Self {
            app,
            services: services.into_iter().collect(),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerRpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerRpc {
            inner,
            app: self.app,
            services: self.services.clone(),
        }
    }
}

/// See [`ServerLayer`].
#[derive(Clone, Debug)]
pub struct ServerRpc<S> {
    inner: S,
    app: &'static str,
    services: Arc<[&'static str]>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ServerRpc<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (name, service, method) = split_path(request.uri().path());
        let service = self
            .services
            .iter()
            .find(|s| **s == service)
            .copied()
            .unwrap_or(OTHER);
        let peer = request.extensions().get::<TcpConnectInfo>();
        let span = tracing::info_span!(
            "rpc",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            app.service = self.app,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            server.port = peer.and_then(|p| p.local_addr()).map(|a| a.port()),
            client.address = peer
                .and_then(|p| p.remote_addr())
                .map(|a| tracing::field::display(a.ip())),
        );
        continue_trace(&span, request.headers());
        let call = Call {
            side: Side::Server,
            span: span.clone(),
            service,
            method: Arc::from(method),
            start: Instant::now(),
        };
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move { Ok(call.observe(response.await?)) })
    }
}

/// Observes the calls made through a channel, and puts the current trace context in
/// their metadata (`traceparent`, `tracestate`, `baggage`).
#[derive(Clone, Debug)]
pub struct ClientRpc<S> {
    inner: S,
    /// `host:port` of the upstream, for the spans' `server.address`/`server.port`.
    host: Arc<str>,
    port: Option<u16>,
}

impl<S> ClientRpc<S> {
    pub(crate) fn new(inner: S, host: &str, port: Option<u16>) -> Self {
        Self {
            inner,
            host: Arc::from(host),
            port,
        }
    }

    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ClientRpc<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let (name, service, method) = split_path(request.uri().path());
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            server.address = &*self.host,
            server.port = self.port,
        );
        let call = Call {
            side: Side::Client,
            span: span.clone(),
            // The upstream's services are not known here; their names come from our
            // own generated clients, so they are bounded anyway.
            service: intern(service),
            method: Arc::from(method),
            start: Instant::now(),
        };
        inject_trace(&span, request.headers_mut());
        let response = self.inner.call(request).instrument(span);
        Box::pin(async move { Ok(call.observe(response.await?)) })
    }
}

/// Makes `span` continue the trace whose context (`traceparent`, `tracestate`,
/// `baggage`) came in `headers`, e.g. from an HTTP client. Call it before the span is
/// first entered.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    continue_trace_from(span, &HeaderExtractor(headers));
}

/// Writes the trace context of `span` into `headers`, for the next hop to continue it.
pub fn inject_trace(span: &tracing::Span, headers: &mut HeaderMap) {
    inject_trace_into(span, &mut HeaderInjector(headers));
}

/// [`continue_trace`] for message headers as name-value pairs (an event's
/// [`headers`](crate::events::Event::headers)).
pub fn continue_trace_from_pairs(span: &tracing::Span, headers: &[(String, String)]) {
    continue_trace_from(span, &PairsExtractor(headers));
}

/// Runs `f` with the trace context that `headers` carry as the current OpenTelemetry
/// context, so that a span `f` creates while no tracing span is current (in a
/// background task) continues that trace. For work done long after the span that asked
/// for it ended: orders' outbox relay publishes an event inside the trace its writer
/// stored in the event's headers.
pub fn in_trace_from_pairs<T>(headers: &[(String, String)], f: impl FnOnce() -> T) -> T {
    if !telemetry::tracing_enabled() {
        return f();
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&PairsExtractor(headers))
    });
    let _attached = parent.attach();
    f()
}

/// [`inject_trace`] for message headers as name-value pairs: replaces the trace
/// context already there, keeps every other header.
pub fn inject_trace_into_pairs(span: &tracing::Span, headers: &mut Vec<(String, String)>) {
    inject_trace_into(span, &mut PairsInjector(headers));
}

/// The one place that reads a trace context, whatever carries it.
fn continue_trace_from(span: &tracing::Span, carrier: &dyn Extractor) {
    if telemetry::tracing_enabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(carrier)
        });
        let _ = span.set_parent(parent);
    }
}

/// The one place that writes a trace context, whatever carries it.
fn inject_trace_into(span: &tracing::Span, carrier: &mut dyn Injector) {
    if telemetry::tracing_enabled() {
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, carrier);
        });
    }
}

/// A `'static` copy of a service name, made once per name (the generated clients of a
/// process call a handful of services).
fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Reads the trace context from request headers (gRPC metadata or HTTP).
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes the trace context into request headers.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Reads the trace context from message headers given as name-value pairs; names
/// match case-insensitively, as HTTP and NATS header names do.
#[derive(Debug)]
pub struct PairsExtractor<'a>(pub &'a [(String, String)]);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Writes the trace context into message headers given as name-value pairs.
#[derive(Debug)]
pub struct PairsInjector<'a>(pub &'a mut Vec<(String, String)>);

impl Injector for PairsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_carry_headers_case_insensitively_without_duplicates() {
        let mut headers = vec![
            ("Traceparent".to_owned(), "old".to_owned()),
            ("other".to_owned(), "kept".to_owned()),
        ];
        PairsInjector(&mut headers).set("traceparent", "new".to_owned());
        assert_eq!(
            headers,
            [
                ("other".to_owned(), "kept".to_owned()),
                ("traceparent".to_owned(), "new".to_owned())
            ]
        );
        let extractor = PairsExtractor(&headers);
        assert_eq!(extractor.get("TRACEPARENT"), Some("new"));
        assert_eq!(extractor.get("tracestate"), None);
        assert_eq!(extractor.keys(), ["other", "traceparent"]);
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/inventory.v1.InventoryService/GetProduct"),
            (
                "inventory.v1.InventoryService/GetProduct",
                "inventory.v1.InventoryService",
                "GetProduct"
            )
        );
        assert_eq!(split_path("/"), ("", "", ""));
        assert_eq!(split_path("/nomethod"), ("nomethod", "nomethod", ""));
    }

    #[test]
    fn status_is_read_from_headers_or_trailers() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(grpc_status(&headers), Some(5));
        headers.insert("grpc-status", "five".parse().unwrap());
        assert_eq!(grpc_status(&headers), None);
    }

    #[test]
    fn interned_names_are_reused() {
        let a = intern("x.v1.Service");
        let b = intern(&String::from("x.v1.Service"));
        assert!(std::ptr::eq(a, b));
    }
}
