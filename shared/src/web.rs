//! gRPC-Web on every gRPC server, so that a browser or a Node program calls a service
//! without a proxy (Envoy) in front to translate.
//!
//! A request whose `content-type` is `application/grpc-web…` is translated to gRPC by
//! `tonic-web` and then goes through the same layers as any call: spans, metrics, load
//! shedding, deadlines, size limits. Every other request passes straight on; plain gRPC
//! pays one header comparison here, no allocation.
//!
//! CORS is off unless `GRPC_WEB_CORS_ORIGINS` names the origins whose pages may call
//! (a comma-separated list such as `https://app.example.com,http://localhost:5173`, or
//! `*` for any). With it on, the server answers preflights for those origins and, as
//! browsers speak gRPC-Web over HTTP/1.1 on plaintext connections, also accepts
//! HTTP/1.1; without it the server stays HTTP/2-only and a preflight gets no CORS
//! headers (HTTP 415, like any request that is not gRPC), so browsers refuse
//! cross-origin calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::Either;
use pin_project_lite::pin_project;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt as _};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::env::{ConfigError, Env};
use crate::headers::{GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS};

/// The variable naming the origins allowed to call from a browser.
pub const CORS_ORIGINS: &str = "GRPC_WEB_CORS_ORIGINS";

/// What browsers may read of an answer: the status travels in these headers when it
/// comes without messages (a "trailers-only" answer).
const EXPOSED: [HeaderName; 3] = [GRPC_STATUS, GRPC_MESSAGE, GRPC_STATUS_DETAILS];

/// `GRPC_WEB_CORS_ORIGINS`: the origins whose pages may call this server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any page.
    Any,
    /// Exactly these origins (`scheme://host[:port]`, as browsers send them).
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// Reads [`CORS_ORIGINS`]; `None` (CORS off) when unset or empty.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        env.parse_with(
            CORS_ORIGINS,
            None,
            "`*` or comma-separated origins like https://app.example.com,http://localhost:5173 \
             (scheme, host and optional port; no path)",
            |value| Self::parse(value).map(Some),
        )
    }

    fn parse(value: &str) -> Option<Self> {
        if value == "*" {
            return Some(Self::Any);
        }
        let origins = value
            .split(',')
            .map(|origin| parse_origin(origin.trim()))
            .collect::<Option<Vec<_>>>()?;
        Some(Self::List(origins))
    }

    /// The CORS policy of gRPC-Web calls from these origins.
    fn layer(&self) -> CorsLayer {
        let origins = match self {
            Self::Any => AllowOrigin::any(),
            Self::List(origins) => AllowOrigin::list(origins.iter().cloned()),
        };
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::POST])
            // gRPC metadata is any header the service reads (authorization, an
            // idempotency key, grpc-timeout, x-grpc-web…): the origin is what is checked.
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(EXPOSED)
            // Browsers cap it lower (Chromium: 2 h); a day spares the preflight per call.
            .max_age(Duration::from_secs(24 * 60 * 60))
    }
}

/// An origin as browsers send it: `http` or `https`, a host, an optional port, nothing
/// else (not even a trailing `/`).
fn parse_origin(origin: &str) -> Option<HeaderValue> {
    let uri: http::Uri = origin.parse().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let authority = uri.authority()?;
    let bare = format!("{scheme}://{authority}") == origin && !authority.as_str().contains('@');
    bare.then(|| HeaderValue::from_str(origin).ok()).flatten()
}

/// Applies [`Web`] to a server's services, with CORS when `origins` are given.
#[derive(Clone, Debug, Default)]
pub struct WebLayer {
    cors: Option<Arc<CorsLayer>>,
}

impl WebLayer {
    pub fn new(origins: Option<&CorsOrigins>) -> Self {
        Self {
            cors: origins.map(|origins| Arc::new(origins.layer())),
        }
    }
}

impl<S> Layer<S> for WebLayer {
    type Service = Web<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Web {
            inner,
            cors: self.cors.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Web<S> {
    inner: S,
    cors: Option<Arc<CorsLayer>>,
}

type WebFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, ResBody> Service<Request<Body>> for Web<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError> + std::fmt::Display,
{
    type Response = Response<Either<ResBody, Body>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let preflight = self.cors.is_some() && request.method() == Method::OPTIONS;
        if !preflight && !is_grpc_web(request.headers()) {
            return ResponseFuture::Plain {
                inner: self.inner.call(request),
            };
        }
        // The instance polled ready serves this call; a fresh clone stays for the next.
        let ready = self.inner.clone();
        let web = tonic_web::GrpcWebLayer::new().layer(std::mem::replace(&mut self.inner, ready));
        let future: WebFuture<S::Error> = match &self.cors {
            Some(cors) => Box::pin(cors.layer(web).oneshot(request)),
            None => Box::pin(web.oneshot(request)),
        };
        ResponseFuture::Web { inner: future }
    }
}

/// `application/grpc-web`, `…+proto`, `-text`, `-text+proto` (what tonic-web accepts).
fn is_grpc_web(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web"))
}

pin_project! {
    /// The answer of [`Web`]: the inner service's as is, or the gRPC-Web translation's.
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F, E> {
        Plain { #[pin] inner: F },
        Web { inner: WebFuture<E> },
    }
}

impl<F, E> std::fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain { .. } => "ResponseFuture::Plain",
            Self::Web { .. } => "ResponseFuture::Web",
        })
    }
}

impl<F, B, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, Body>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Plain { inner } => {
                inner.poll(cx).map_ok(|response| response.map(Either::Left))
            }
            ResponseFutureProj::Web { inner } => inner
                .as_mut()
                .poll(cx)
                .map_ok(|response| response.map(Either::Right)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<Option<CorsOrigins>, ConfigError> {
        CorsOrigins::from_env(&[(CORS_ORIGINS, value)].into_iter().collect())
    }

    #[test]
    fn origins_are_parsed() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("*").unwrap(), Some(CorsOrigins::Any));
        assert_eq!(
            parse("https://app.example.com, http://localhost:5173").unwrap(),
            Some(CorsOrigins::List(vec![
                HeaderValue::from_static("https://app.example.com"),
                HeaderValue::from_static("http://localhost:5173"),
            ]))
        );
    }

    #[test]
    fn a_bad_origin_names_the_variable() {
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://app.example.com",
            "https://user@app.example.com",
            "https://a.example.com,,https://b.example.com",
            "https://app.example.com?x=1",
            "*,https://app.example.com",
        ] {
            let error = parse(bad).expect_err(bad);
            assert_eq!(error.var, CORS_ORIGINS, "{bad}");
            assert!(error.expected.contains("origins like"), "{error}");
        }
    }
}
