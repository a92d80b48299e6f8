//! Observes every call on both ends: one span per call, following the OpenTelemetry RPC
//! semantic conventions, carrying the W3C trace context across processes, and one
//! sample in the call-duration histograms ([`crate::metrics`]).
//!
//! A call ends when its response body ends (the gRPC status arrives in the trailers),
//! so streaming calls are measured to their last message, and the span stays current
//! while the response stream is polled: log lines written by a streaming handler carry
//! the call's span and trace id too.
//!
//! A request that is not gRPC (its `content-type`) is no call: it is passed on
//! unobserved, and [`crate::conformance`] answers it.
//!
//! A handler that panics, before answering or while streaming, ends its call with
//! INTERNAL ("internal error"; the panic message stays in the logs), not a reset
//! stream: the panic costs that one call, and the metrics count it ([`crate::panic`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::headers::{GRPC_MESSAGE, GRPC_STATUS};
use crate::metrics::{self, CallMetrics, Side};
use crate::panic::{self, Panic};

mod context;

pub use context::{
    HeaderExtractor, HeaderInjector, PairsExtractor, PairsInjector, in_trace, in_trace_from_pairs,
    inject_trace, inject_trace_into_pairs,
};

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
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const INTERNAL: i32 = 13;

/// One call in flight.
#[derive(Debug)]
struct Call {
    span: tracing::Span,
    metrics: &'static CallMetrics,
    start: Instant,
}

impl Call {
    fn finish(self, code: i32) {
        let error = match self.metrics.side() {
            Side::Server => SERVER_ERRORS.contains(&code),
            Side::Client => code != 0,
        };
        self.span.record("rpc.grpc.status_code", code);
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
        self.metrics.record(code, self.start.elapsed());
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
        response.map(|inner| Observed {
            inner: Some(inner),
            call,
        })
    }

    /// Ends the call of a handler that panicked before answering: a trailers-only
    /// INTERNAL response.
    fn panicked<B>(self, panic: &Panic) -> http::Response<Observed<B>> {
        tracing::error!(parent: &self.span, %panic, "handler panicked: answered INTERNAL");
        self.finish(INTERNAL);
        let mut response = http::Response::new(Observed {
            inner: None,
            call: None,
        });
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.extend(internal_status());
        response
    }
}

/// The status of a call whose handler panicked: INTERNAL, with no detail for the client.
fn internal_status() -> HeaderMap {
    let mut status = HeaderMap::with_capacity(2);
    status.insert(GRPC_STATUS, HeaderValue::from(INTERNAL));
    status.insert(GRPC_MESSAGE, HeaderValue::from_static("internal error"));
    status
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// `/package.Service/Method` → (`package.Service/Method`, `package.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str, &str) {
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    (name, service, method)
}

/// A response body that finishes its call when it ends, and runs inside the call's span.
/// A panic while polling it ends the call with INTERNAL trailers.
#[derive(Debug)]
pub struct Observed<B> {
    /// `None` once there is nothing more to poll: after a panic, or for the empty body
    /// of a call whose handler panicked before answering.
    inner: Option<B>,
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
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(None);
        };
        let polled = {
            let _entered = this.call.as_ref().map(|call| call.span.enter());
            panic::catch(|| Pin::new(inner).poll_frame(cx))
        };
        let polled = polled.unwrap_or_else(|panic| {
            this.inner = None;
            if let Some(call) = &this.call {
                tracing::error!(parent: &call.span, %panic, "handler panicked: answered INTERNAL");
            }
            Poll::Ready(Some(Ok(Frame::trailers(internal_status()))))
        });
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
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
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

pin_project! {
    /// The answer to a call, observed: a [`ServerRpc`]'s (which also catches a panic
    /// of the handler) or a [`ClientRpc`]'s. `call` is `None` for a request that is no
    /// call, passed on unobserved.
    #[derive(Debug)]
    pub struct ObservedFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        call: Option<Call>,
        catch_panics: bool,
    }
}

impl<F, B, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<Observed<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = if *this.catch_panics {
            panic::catch(|| inner.as_mut().poll(cx))
        } else {
            Ok(inner.poll(cx))
        };
        let response = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(response)) => response?,
            Err(panic) => {
                let call = this.call.take().expect("only calls catch panics");
                return Poll::Ready(Ok(call.panicked(&panic)));
            }
        };
        Poll::Ready(Ok(match this.call.take() {
            Some(call) => call.observe(response),
            None => response.map(|inner| Observed {
                inner: Some(inner),
                call: None,
            }),
        }))
    }
}

/// Observes the calls a server receives. Calls to a service it does not serve are
/// labelled `_OTHER`, and so are calls to a method its services do not have, in the
/// metrics (whatever the answer: UNIMPLEMENTED, or RESOURCE_EXHAUSTED when shed before
/// routing), so that clients cannot mint label values.
#[derive(Clone, Debug)]
pub struct ServerLayer {
    app: &'static str,
    methods: Arc<Methods>,
}

impl ServerLayer {
    /// `app` is the name of the service that serves (`orders`): its server spans
    /// carry it as [`APP_SERVICE`], which tells the services of one process apart.
    /// `services` are the full names of the services served, each with its methods.
    pub fn new<'a, M>(app: &'static str, services: impl IntoIterator<Item = (&'a str, M)>) -> Self
    where
        M: IntoIterator<Item = &'a str>,
    {
        Self {
            app,
            methods: Arc::new(Methods::new(services)),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerRpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerRpc {
            inner,
            app: self.app,
            methods: self.methods.clone(),
        }
    }
}

/// The services and methods a server serves, each with its metric series, resolved
/// once when the server is built.
#[derive(Debug)]
struct Methods {
    services: Box<[Served]>,
    /// `_OTHER/_OTHER`: a service not served.
    other: &'static CallMetrics,
}

#[derive(Debug)]
struct Served {
    name: &'static str,
    methods: Box<[(&'static str, &'static CallMetrics)]>,
    /// `service/_OTHER`: a method the service does not have.
    other: &'static CallMetrics,
}

impl Methods {
    fn new<'a, M>(services: impl IntoIterator<Item = (&'a str, M)>) -> Self
    where
        M: IntoIterator<Item = &'a str>,
    {
        let series = |service: &str, method: &str| {
            metrics::call_metrics(Side::Server, &[service, method].join("/"))
        };
        let services = services
            .into_iter()
            .map(|(service, methods)| Served {
                name: intern(service),
                methods: methods
                    .into_iter()
                    .map(|method| (intern(method), series(service, method)))
                    .collect(),
                other: series(service, OTHER),
            })
            .collect();
        Self {
            services,
            other: series(OTHER, OTHER),
        }
    }

    /// The service's label (its name, or `_OTHER`) and the method's series.
    fn find(&self, service: &str, method: &str) -> (&'static str, &'static CallMetrics) {
        let Some(served) = self.services.iter().find(|s| s.name == service) else {
            return (OTHER, self.other);
        };
        let series = served
            .methods
            .iter()
            .find(|(name, _)| *name == method)
            .map_or(served.other, |(_, series)| series);
        (served.name, series)
    }
}

/// See [`ServerLayer`].
#[derive(Clone, Debug)]
pub struct ServerRpc<S> {
    inner: S,
    app: &'static str,
    methods: Arc<Methods>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ServerRpc<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if !crate::conformance::is_grpc(request.headers()) {
            // Not a call (`crate::conformance` answers HTTP 415): no span and no sample,
            // so that no path a client makes up becomes a metric label.
            return ObservedFuture {
                inner: self.inner.call(request).instrument(tracing::Span::none()),
                call: None,
                catch_panics: false,
            };
        }
        let (name, service, method) = split_path(request.uri().path());
        let (service, metrics) = self.methods.find(service, method);
        let peer = request.extensions().get::<TcpConnectInfo>();
        let span = in_trace(request.headers(), || {
            tracing::info_span!(
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
            )
        });
        let call = Call {
            span: span.clone(),
            metrics,
            start: Instant::now(),
        };
        ObservedFuture {
            inner: self.inner.call(request).instrument(span),
            call: Some(call),
            catch_panics: true,
        }
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
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

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
            span: span.clone(),
            // The upstream's methods are not known here; their names come from our
            // own generated clients, so they are bounded anyway.
            metrics: metrics::call_metrics(Side::Client, name),
            start: Instant::now(),
        };
        inject_trace(&span, request.headers_mut());
        ObservedFuture {
            inner: self.inner.call(request).instrument(span),
            call: Some(call),
            catch_panics: false,
        }
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

#[cfg(test)]
mod tests;
