//! Answers as the gRPC spec says where tonic answers otherwise:
//!
//! - a request whose `content-type` is not `application/grpc` (or `application/grpc+…`,
//!   `application/grpc;…`) gets HTTP 415 Unsupported Media Type, so that a plain HTTP
//!   client never takes a gRPC error (HTTP 200) for success (PROTOCOL-HTTP2.md); tonic
//!   does not look at the header and decodes whatever comes;
//! - a message over the size limit (`GRPC_MAX_MESSAGE_SIZE`), received or sent, ends
//!   the call with RESOURCE_EXHAUSTED (statuscodes.md); tonic says OUT_OF_RANGE, which
//!   clients read as "asked past the end of something", not "too big";
//! - a unary call whose request stream ends without a message gets UNIMPLEMENTED, the
//!   spec's code for a request cardinality violation; tonic says INTERNAL (found by
//!   fuzzing, `fuzz/`).
//!
//! Deadlines are the job of [`crate::deadline`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::headers::GRPC_STATUS;

/// The answers of tonic that the spec words otherwise: tonic's code (`grpc-status`)
/// and the start of its message (`tonic::codec` and `tonic::server::grpc`), the code
/// the spec gives. A tonic upgrade that rewords them is caught by the tests below
/// (the encoder's) and `tests/system/bad_input.rs` (the decoder's).
static REWRITES: [(&str, &str, HeaderValue); 3] = [
    (
        "11",
        "Error, decoded message length too large",
        RESOURCE_EXHAUSTED,
    ),
    (
        "11",
        "Error, encoded message length too large",
        RESOURCE_EXHAUSTED,
    ),
    ("13", "Missing request message", UNIMPLEMENTED),
];
const RESOURCE_EXHAUSTED: HeaderValue = HeaderValue::from_static("8");
const UNIMPLEMENTED: HeaderValue = HeaderValue::from_static("12");

/// Applies [`Conformance`] to a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConformanceLayer;

impl<S> Layer<S> for ConformanceLayer {
    type Service = Conformance<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Conformance { inner }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Conformance<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Conformance<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<SpecStatus<ResBody>>;
    type Error = S::Error;
    type Future = ConformanceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !is_grpc(request.headers()) {
            return ConformanceFuture { inner: None };
        }
        ConformanceFuture {
            inner: Some(self.inner.call(request)),
        }
    }
}

pin_project! {
    /// The answer of [`Conformance`]: the inner service's with the spec's status codes, or
    /// HTTP 415 (no inner future).
    #[derive(Debug)]
    pub struct ConformanceFuture<F> {
        #[pin]
        inner: Option<F>,
    }
}

impl<F, B, E> Future for ConformanceFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<SpecStatus<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.project().inner.as_pin_mut() else {
            let mut response = Response::new(SpecStatus::default());
            *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Poll::Ready(Ok(response));
        };
        let mut response = std::task::ready!(inner.poll(cx))?;
        // A trailers-only response (a request too large, or any early error)...
        spec_status(response.headers_mut());
        // ...or the trailers after the messages (a response too large).
        Poll::Ready(Ok(response.map(|inner| SpecStatus { inner })))
    }
}

pin_project! {
    /// A response body whose trailers get the spec's status codes.
    #[derive(Debug, Default)]
    pub struct SpecStatus<B> {
        #[pin]
        inner: B,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for SpecStatus<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = std::task::ready!(self.project().inner.poll_frame(cx));
        Poll::Ready(frame.map(|frame| frame.map(trailers_spec_status)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

fn trailers_spec_status(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            spec_status(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

/// Applies [`REWRITES`]; the message stays.
fn spec_status(headers: &mut HeaderMap) {
    if let Some(code) = spec_code(headers) {
        headers.insert(GRPC_STATUS, code.clone());
    }
}

/// The spec's code where it differs from tonic's. The same code with another message
/// (an OUT_OF_RANGE that a handler returns) is left alone.
fn spec_code(headers: &HeaderMap) -> Option<&'static HeaderValue> {
    let code = headers.get(GRPC_STATUS)?;
    // Most calls end with OK: decode the message only when a rewrite may apply.
    if !REWRITES.iter().any(|(from, ..)| code == from) {
        return None;
    }
    let status = tonic::Status::from_header_map(headers)?;
    REWRITES
        .iter()
        .find(|(from, message, _)| code == from && status.message().starts_with(message))
        .map(|(.., to)| to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (http::HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn only_grpc_content_types_pass() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;charset=utf-8",
        ] {
            assert!(is_grpc(&headers(&[("content-type", ok)])), "{ok}");
        }
        for refused in [
            "application/json",
            "application/grpc-web",
            "application/grpcx",
            "text/plain",
            "",
        ] {
            assert!(
                !is_grpc(&headers(&[("content-type", refused)])),
                "{refused}"
            );
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn tonic_answers_get_the_spec_codes_and_handler_answers_stay() {
        let tonic_limit = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 2000 bytes, the limit is: 1024 bytes",
        );
        let mut map = HeaderMap::new();
        tonic_limit.add_header(&mut map).unwrap();
        spec_status(&mut map);
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), tonic_limit.message());

        let mut map = HeaderMap::new();
        let handler = tonic::Status::out_of_range("page 7 is past the end");
        handler.add_header(&mut map).unwrap();
        spec_status(&mut map);
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(status.code(), tonic::Code::OutOfRange);

        let mut map = HeaderMap::new();
        tonic::Status::internal("Missing request message.")
            .add_header(&mut map)
            .unwrap();
        spec_status(&mut map);
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }

    /// Through tonic's real encoder: a health answer over a 1-byte limit.
    #[tokio::test]
    async fn a_response_over_the_limit_ends_with_resource_exhausted() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        use http_body_util::BodyExt as _;
        let mut service = ConformanceLayer.layer(health.max_encoding_message_size(1));
        let empty_check = http_body_util::Full::new(Bytes::from_static(&[0; 5]));
        let request = Request::post("/grpc.health.v1.Health/Check")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(empty_check)
            .unwrap();

        let response = service.call(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap();
        let status = tonic::Status::from_header_map(body.trailers().unwrap()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("too large"), "{status:?}");
    }
}
