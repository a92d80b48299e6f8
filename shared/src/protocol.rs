//! Answers as the gRPC spec says where tonic answers otherwise:
//!
//! - a request whose `content-type` is not `application/grpc` (or `application/grpc+…`,
//!   `application/grpc;…`) gets HTTP 415 Unsupported Media Type, so that a plain HTTP
//!   client never takes a gRPC error (HTTP 200) for success (PROTOCOL-HTTP2.md); tonic
//!   does not look at the header and decodes whatever comes;
//! - a message over the size limit (`GRPC_MAX_MESSAGE_SIZE`), received or sent, ends
//!   the call with RESOURCE_EXHAUSTED (statuscodes.md); tonic says OUT_OF_RANGE, which
//!   clients read as "asked past the end of something", not "too big".
//!
//! Deadlines are the job of [`crate::deadline`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tonic::body::Body;
use tower::{Layer, Service};

/// The messages of tonic's size checks (`tonic::codec`, decoding and encoding). A
/// tonic upgrade that rewords them is caught by the bad-input tests (`tests/bad_input.rs`).
const TOO_LARGE: [&str; 2] = [
    "Error, decoded message length too large",
    "Error, encoded message length too large",
];
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: HeaderValue = HeaderValue::from_static("8");

/// Applies [`Protocol`] to a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProtocolLayer;

impl<S> Layer<S> for ProtocolLayer {
    type Service = Protocol<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Protocol { inner }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Protocol<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Protocol<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !is_grpc(request.headers()) {
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Box::pin(std::future::ready(Ok(response)));
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // A trailers-only response (a request too large, or any early error)...
            size_status(response.headers_mut());
            // ...or the trailers after the messages (a response too large).
            Ok(response.map(|body| Body::new(body.map_frame(trailers_size_status))))
        })
    }
}

/// `application/grpc`, alone or followed by `+codec` or `;parameters`; media types
/// compare case-insensitively.
fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

fn trailers_size_status(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            size_status(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

/// OUT_OF_RANGE from tonic's size checks becomes RESOURCE_EXHAUSTED; the message stays.
/// OUT_OF_RANGE that a handler returns is left alone.
fn size_status(headers: &mut HeaderMap) {
    if headers.get("grpc-status").map(HeaderValue::as_bytes) != Some(OUT_OF_RANGE.as_bytes()) {
        return;
    }
    let too_large = tonic::Status::from_header_map(headers)
        .is_some_and(|status| TOO_LARGE.iter().any(|m| status.message().starts_with(m)));
    if too_large {
        headers.insert("grpc-status", RESOURCE_EXHAUSTED);
    }
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
    fn size_limits_become_resource_exhausted_and_other_out_of_range_stays() {
        let tonic_limit = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 2000 bytes, the limit is: 1024 bytes",
        );
        let mut map = HeaderMap::new();
        tonic_limit.add_header(&mut map).unwrap();
        size_status(&mut map);
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), tonic_limit.message());

        let mut map = HeaderMap::new();
        let handler = tonic::Status::out_of_range("page 7 is past the end");
        handler.add_header(&mut map).unwrap();
        size_status(&mut map);
        let status = tonic::Status::from_header_map(&map).unwrap();
        assert_eq!(status.code(), tonic::Code::OutOfRange);
    }

    /// Through tonic's real encoder: a health answer over a 1-byte limit.
    #[tokio::test]
    async fn a_response_over_the_limit_ends_with_resource_exhausted() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let mut service = ProtocolLayer.layer(health.max_encoding_message_size(1));
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
