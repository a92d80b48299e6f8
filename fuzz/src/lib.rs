//! What the fuzz targets share: a service's real gRPC server, called in-process.
//!
//! One input is one call. Its first byte picks the method, among those the service's
//! proto declares (read from the descriptor set, so a new method is fuzzed without
//! touching this file); its second says how the rest is sent: as one gRPC message
//! (even), or as the raw request body (odd: the fuzzer writes the frames itself,
//! lengths, compression flags and several messages included). The call goes through
//! [`shared::conformance`] and the service's router (`shared::Server::routes`: health and
//! reflection included; the deadline and observability layers aside): tonic's
//! decoding, the validation and the handlers, on the in-memory stores, with no HTTP/2.
//!
//! A call fails the target (panics) when its answer breaks the protocol or shows a
//! bug: no `grpc-status`, a status other than HTTP 200, UNKNOWN (what a panic in a
//! handler becomes), or INTERNAL for anything but input tonic could not decode.
#![forbid(unsafe_code)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;
use shared::Env;
use shared::conformance::{Conformance, ConformanceLayer};
use tonic::Code;
use tonic::service::Routes;
use tower::{Layer, Service};

/// How long a server-streaming call is followed: its first messages only, as a stream
/// such as `WatchNotifications` never ends by itself.
const STREAM_WINDOW: Duration = Duration::from_millis(5);

/// INTERNAL is the spec's answer to a request that cannot be decoded (tonic's
/// messages); any other INTERNAL is an unexpected error of a handler.
const UNDECODABLE: [&str; 3] = [
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
    "protocol error",
];

/// One method of the service: its HTTP/2 path and whether it streams its answer.
#[derive(Debug)]
struct Method {
    path: String,
    server_streaming: bool,
}

/// A service's server, built once per fuzzing process.
#[derive(Debug)]
pub struct GrpcTarget {
    runtime: tokio::runtime::Runtime,
    service: Conformance<Routes>,
    methods: Vec<Method>,
}

impl GrpcTarget {
    /// Builds the server with `build` (given an environment with free loopback ports
    /// and nothing else, so the in-memory defaults) and fuzzes the methods of
    /// `service`, a full proto name such as `inventory.v1.InventoryService`.
    pub fn new(service: &str, build: impl AsyncFnOnce(Env) -> shared::Server) -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
        let server = runtime.block_on(build(shared::testing::env([])));
        Self {
            runtime,
            service: ConformanceLayer.layer(server.routes()),
            methods: methods(service),
        }
    }

    /// Makes the call `data` describes (see the crate documentation).
    pub fn call(&self, data: &[u8]) {
        let [method, mode, payload @ ..] = data else {
            return;
        };
        let method = &self.methods[usize::from(*method) % self.methods.len()];
        let body = if mode % 2 == 0 {
            frame(payload)
        } else {
            payload.to_vec()
        };
        let request = http::Request::post(&method.path)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let mut service = self.service.clone();
        let streaming = method.server_streaming;
        let answer = self.runtime.block_on(async move {
            let response = service.call(request).await.expect("routes never fail");
            let (parts, mut body) = response.into_parts();
            if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
                return Some((parts.status, status));
            }
            loop {
                let frame = if streaming {
                    match tokio::time::timeout(STREAM_WINDOW, body.frame()).await {
                        Ok(frame) => frame,
                        Err(_) => return None, // still streaming: fine so far
                    }
                } else {
                    body.frame().await
                };
                let frame = frame.expect("the response ends with trailers");
                let frame = frame.expect("the response body does not fail");
                if let Some(trailers) = frame.trailers_ref() {
                    let status = tonic::Status::from_header_map(trailers)
                        .expect("the trailers carry grpc-status");
                    return Some((parts.status, status));
                }
            }
        });
        if let Some((http, status)) = answer {
            check(&method.path, http, &status);
        }
    }
}

fn check(path: &str, http: http::StatusCode, status: &tonic::Status) {
    assert_eq!(http, http::StatusCode::OK, "{path}: {status:?}");
    assert_ne!(status.code(), Code::Unknown, "{path}: {status:?}");
    if status.code() == Code::Internal {
        assert!(
            UNDECODABLE.iter().any(|m| status.message().starts_with(m)),
            "{path}: INTERNAL for decodable input: {status:?}"
        );
    }
}

/// `payload` as one uncompressed gRPC message.
fn frame(payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The methods `service` declares in the contracts' descriptor set.
fn methods(service: &str) -> Vec<Method> {
    let files = prost_types::FileDescriptorSet::decode(contracts::FILE_DESCRIPTOR_SET)
        .expect("the contracts' descriptor set decodes");
    let (package, name) = service.rsplit_once('.').expect("a full service name");
    let methods: Vec<Method> = files
        .file
        .iter()
        .filter(|file| file.package() == package)
        .flat_map(|file| &file.service)
        .filter(|s| s.name() == name)
        .flat_map(|s| &s.method)
        .map(|m| Method {
            path: format!("/{service}/{}", m.name()),
            server_streaming: m.server_streaming(),
        })
        .collect();
    assert!(!methods.is_empty(), "{service} has no methods");
    methods
}
