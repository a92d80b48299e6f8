//! Bad input at the gRPC layer (issue 8, test 5), sent to a real inventory server over
//! raw HTTP/2 (the `h2` crate) and raw TCP, the way no well-behaved client would: each
//! gets the answer the gRPC spec documents (README, "Bad input") or a clean close,
//! never a panic, and health stays SERVING. A flood of malformed streams on one
//! connection ends in GOAWAY. A deadline that runs out is DEADLINE_EXCEEDED.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use shared::testing::{TestServer, env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support;

const GET_PRODUCT: &str = "/inventory.v1.InventoryService/GetProduct";
const MAX_MESSAGE_SIZE: usize = 1024;
const MAX_HEADER_LIST_SIZE: usize = 8192;
const MAX_LOCAL_ERROR_RESETS: usize = 100;

/// Panics anywhere in this test process (each test that counts them runs alone in
/// its process: [`crate::alone`]),
/// counted so that a handler that panicked, which tonic turns into a dropped stream,
/// cannot pass for a clean close.
static PANICS: AtomicUsize = AtomicUsize::new(0);

async fn start() -> TestServer {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let message = MAX_MESSAGE_SIZE.to_string();
    let headers = MAX_HEADER_LIST_SIZE.to_string();
    let resets = MAX_LOCAL_ERROR_RESETS.to_string();
    let env = env([
        ("GRPC_MAX_MESSAGE_SIZE", message.as_str()),
        ("GRPC_MAX_HEADER_LIST_SIZE", headers.as_str()),
        ("GRPC_MAX_LOCAL_ERROR_RESETS", resets.as_str()),
    ]);
    let config = inventory::Config::from_env(&env).expect("valid test config");
    TestServer::start(inventory::build(config).await.expect("server binds"))
}

/// The server still answers health on a new connection, and nothing panicked.
async fn assert_healthy(server: &TestServer, after: &str) {
    let request = HealthCheckRequest {
        service: "inventory.v1.InventoryService".into(),
    };
    let response = server
        .health()
        .check(request)
        .await
        .unwrap_or_else(|status| panic!("health after {after}: {status:?}"));
    assert_eq!(
        response.into_inner().status,
        ServingStatus::Serving as i32,
        "health after {after}"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a panic after {after}");
}

/// A gRPC message frame: compressed flag, big-endian length, then the bytes.
fn frame(compressed: u8, message: &[u8]) -> Vec<u8> {
    let mut frame = vec![compressed];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// `GetProductRequest { sku }` encoded by hand: field 1, length-delimited.
fn get_product(sku: &[u8]) -> Vec<u8> {
    let mut message = vec![0x0a, u8::try_from(sku.len()).unwrap()];
    message.extend_from_slice(sku);
    message
}

/// What came back: the HTTP status and, for a gRPC answer, the status from the
/// headers (trailers-only) or the trailers.
#[derive(Debug)]
struct Answer {
    http: StatusCode,
    grpc: Option<tonic::Status>,
}

/// One request on a fresh HTTP/2 connection: `headers` on top of a valid gRPC request's
/// (an empty value removes one), then `body` and the end of the stream.
async fn call(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("connection ready");

    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        match *value {
            "" => request.headers_mut().remove(name),
            value => request.headers_mut().insert(name, value.parse().unwrap()),
        };
    }
    let (response, mut stream) = client
        .send_request(request, body.is_empty())
        .expect("request sent");
    if !body.is_empty() {
        // The server may answer (and reset the stream) before reading it all.
        let _ = stream.send_data(Bytes::copy_from_slice(body), true);
    }

    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer within 10 s")
        .expect("response headers");
    let http = response.status();
    let mut grpc = tonic::Status::from_header_map(response.headers());
    let mut body = response.into_body();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
    }
    if grpc.is_none()
        && let Ok(Some(trailers)) = body.trailers().await
    {
        grpc = tonic::Status::from_header_map(&trailers);
    }
    Answer { http, grpc }
}

fn assert_grpc(answer: &Answer, code: Code, what: &str) {
    assert_eq!(answer.http, StatusCode::OK, "{what}: {answer:?}");
    let status = answer
        .grpc
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no grpc-status"));
    assert_eq!(status.code(), code, "{what}: {status:?}");
}

/// What a bad request is, its path, headers on top of a valid request's, its body, and
/// the code it must get.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8], Code);

#[tokio::test]
async fn bad_messages_get_the_status_the_spec_documents() {
    if !alone!() {
        return;
    }
    let server = start().await;
    let addr = server.addr;
    let sku = get_product(b"SKU-001");

    // A control: the same request, well formed, is answered.
    let answer = call(addr, GET_PRODUCT, &[], &frame(0, &sku)).await;
    assert_grpc(&answer, Code::Ok, "a valid request");

    let oversized = frame(0, &get_product(&[b'x'; 200]).repeat(MAX_MESSAGE_SIZE / 100));
    let bad_protobuf = frame(0, &[0x0a, 0x10, b'x']); // a length past the end
    let bad_wire_type = frame(0, &[0x0f, 0x00]); // wire type 7 does not exist
    let invalid_utf8 = frame(0, &get_product(&[0xff, 0xfe, 0x41]));
    let mut truncated = frame(0, &sku);
    truncated.truncate(truncated.len() - 3);
    let cases: [Case; 10] = [
        (
            "a frame cut short",
            GET_PRODUCT,
            &[],
            &truncated,
            Code::Internal,
        ),
        (
            "a unary call without a message",
            GET_PRODUCT,
            &[],
            &[],
            Code::Unimplemented,
        ),
        (
            "a frame header cut short",
            GET_PRODUCT,
            &[],
            &[0, 0, 0],
            Code::Internal,
        ),
        (
            "bad protobuf",
            GET_PRODUCT,
            &[],
            &bad_protobuf,
            Code::Internal,
        ),
        (
            "an unknown wire type",
            GET_PRODUCT,
            &[],
            &bad_wire_type,
            Code::Internal,
        ),
        (
            "invalid UTF-8 in a string",
            GET_PRODUCT,
            &[],
            &invalid_utf8,
            Code::Internal,
        ),
        (
            "the compressed flag without grpc-encoding",
            GET_PRODUCT,
            &[],
            &frame(1, &sku),
            Code::Internal,
        ),
        (
            "an unknown grpc-encoding",
            GET_PRODUCT,
            &[("grpc-encoding", "snappy")],
            &frame(1, &sku),
            Code::Unimplemented,
        ),
        (
            "a message over GRPC_MAX_MESSAGE_SIZE",
            GET_PRODUCT,
            &[],
            &oversized,
            Code::ResourceExhausted,
        ),
        (
            "an unknown method",
            "/inventory.v1.InventoryService/Teleport",
            &[],
            &frame(0, &sku),
            Code::Unimplemented,
        ),
    ];
    for (what, path, headers, body, code) in cases {
        let answer = call(addr, path, headers, body).await;
        assert_grpc(&answer, code, what);
        assert_healthy(&server, what).await;
    }
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn requests_that_are_not_grpc_get_http_errors() {
    if !alone!() {
        return;
    }
    let server = start().await;
    let addr = server.addr;
    let body = frame(0, &get_product(b"SKU-001"));

    let json = call(
        addr,
        GET_PRODUCT,
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(json.http, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{json:?}");
    assert!(json.grpc.is_none(), "{json:?}");
    assert_healthy(&server, "a JSON content-type").await;

    let none = call(addr, GET_PRODUCT, &[("content-type", "")], &body).await;
    assert_eq!(none.http, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{none:?}");
    assert_healthy(&server, "no content-type").await;

    let metadata = "x".repeat(MAX_HEADER_LIST_SIZE);
    let big = call(addr, GET_PRODUCT, &[("x-big", &metadata)], &body).await;
    assert_eq!(
        big.http,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{big:?}"
    );
    assert_healthy(&server, "metadata over GRPC_MAX_HEADER_LIST_SIZE").await;

    // Metadata just under the limit still passes.
    let fits = "x".repeat(MAX_HEADER_LIST_SIZE / 2);
    let answer = call(addr, GET_PRODUCT, &[("x-fits", &fits)], &body).await;
    assert_grpc(&answer, Code::Ok, "metadata under the limit");

    server.stop().await.expect("clean shutdown");
}

/// The server speaks HTTP/2 only: an HTTP/1.1 request gets no HTTP/1.1 answer, only
/// the server's HTTP/2 SETTINGS, and the connection is closed (seen: with a TCP reset,
/// as the request was not read to its end).
#[tokio::test]
async fn an_http1_request_is_closed() {
    if !alone!() {
        return;
    }
    let server = start().await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connects");
    let request = format!(
        "POST {GET_PRODUCT} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/grpc\r\n\
         content-length: 0\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("request written");
    let mut answer = Vec::new();
    let mut chunk = [0; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
    })
    .await
    .expect("closed within 10 s");
    assert!(
        !answer.starts_with(b"HTTP/1.1"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_healthy(&server, "an HTTP/1.1 request").await;
    server.stop().await.expect("clean shutdown");
}

/// HTTP/2 frame types and codes (RFC 9113).
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = length[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Thousands of requests without `:path` on one connection, each of which the server
/// resets (PROTOCOL_ERROR): after `GRPC_MAX_LOCAL_ERROR_RESETS` of them it sends
/// GOAWAY ENHANCE_YOUR_CALM and closes, instead of resetting streams forever.
#[tokio::test]
async fn a_flood_of_malformed_streams_ends_in_goaway() {
    if !alone!() {
        return;
    }
    let server = start().await;
    let tcp = TcpStream::connect(server.addr).await.expect("connects");
    let (mut read, mut write) = tcp.into_split();
    let flood = tokio::spawn(async move {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(h2_frame(SETTINGS, 0, 0, &[]));
        // HPACK static table: `:method: POST` (3), `:scheme: http` (6); no `:path`.
        for stream in (1..6000).step_by(2) {
            bytes.extend(h2_frame(
                HEADERS,
                END_STREAM_AND_HEADERS,
                stream,
                &[0x83, 0x86],
            ));
        }
        // The server closes the connection part-way: a failed write is the point.
        let _ = write.write_all(&bytes).await;
    });

    let mut resets = 0;
    let goaway = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut header = [0; 9];
            read.read_exact(&mut header)
                .await
                .expect("a frame, not EOF");
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
            let mut payload = vec![0; length as usize];
            read.read_exact(&mut payload)
                .await
                .expect("the frame's payload");
            match header[3] {
                RST_STREAM => resets += 1,
                GOAWAY => break u32::from_be_bytes(payload[4..8].try_into().unwrap()),
                _ => {}
            }
        }
    })
    .await
    .expect("GOAWAY within 10 s");
    assert_eq!(goaway, ENHANCE_YOUR_CALM);
    assert!(
        (1..=MAX_LOCAL_ERROR_RESETS + 1).contains(&resets),
        "{resets} streams reset before GOAWAY"
    );
    flood.await.expect("the flood task ends");
    assert_healthy(&server, "a flood of malformed streams").await;
    server.stop().await.expect("clean shutdown");
}

/// The deadline a client sends (`grpc-timeout`) ends the call with DEADLINE_EXCEEDED,
/// as the spec says, every time and never early: tonic's own timer on the same header
/// answers CANCELLED, and must never win the race (`shared::deadline`). Over raw
/// HTTP/2, because a tonic client runs a timer of its own too, and reports CANCELLED
/// when it fires first (`shared::client` reads that as DEADLINE_EXCEEDED).
#[tokio::test]
async fn a_deadline_that_runs_out_is_deadline_exceeded() {
    let held = support::InventoryProxy::start().await;
    held.hold_reservations();
    let path = "/inventory.v1.InventoryService/ReserveStock";
    for call_number in 1..=50 {
        let start = Instant::now();
        let answer = call(
            held.addr(),
            path,
            &[("grpc-timeout", "10m")],
            &frame(0, b""),
        )
        .await;
        let elapsed = start.elapsed();
        assert_grpc(
            &answer,
            Code::DeadlineExceeded,
            &format!("call {call_number}"),
        );
        assert!(
            elapsed >= Duration::from_millis(10),
            "call {call_number} ended after {elapsed:?}, before its deadline"
        );
    }
}
