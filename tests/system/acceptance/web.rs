//! What browsers and Node programs see: gRPC-Web with Connect's gRPC-Web transport from
//! the npm registry (`tests/web/grpc-web.mjs`), CORS preflights as browsers send them,
//! and the gateway's API explorer in a headless Chromium (`tests/web/explorer.mjs`).
//! `scripts/tools.sh` installs the npm packages and Chromium.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use tokio::net::TcpStream;

use super::harness::Running;
use super::tools::{self, Invocation, Output, root};

/// Which HTTP version the client speaks: Node and browsers over TLS use HTTP/2,
/// browsers on plaintext HTTP/1.1.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Http {
    V1,
    V2,
}

/// What a gRPC-Web call printed: its answers (proto3 JSON), or its status.
#[derive(Debug)]
pub(crate) enum Answer {
    Messages(Vec<Value>),
    Error {
        code: i64,
        message: String,
        details: Vec<String>,
    },
}

/// The address of the service named `name` (`inventory`, …) in the stack.
pub(crate) fn addr(running: &Running, name: &str) -> SocketAddr {
    running
        .services
        .iter()
        .find(|(spec, _)| spec.name == name)
        .map(|(_, addr)| *addr)
        .unwrap_or_else(|| panic!("the stack runs no {name}"))
}

/// Calls `method` of `service` (full names) at `addr` over gRPC-Web with `request`
/// (proto3 JSON); panics with the run's output when the client itself fails.
pub(crate) async fn call(
    addr: SocketAddr,
    http: Http,
    service: &str,
    method: &str,
    request: Value,
) -> Answer {
    let version = match http {
        Http::V1 => "1.1",
        Http::V2 => "2",
    };
    let script = root().join("tests/web/grpc-web.mjs");
    let args = [
        script.display().to_string(),
        descriptor_set().display().to_string(),
        format!("http://{addr}"),
        version.to_owned(),
        service.to_owned(),
        method.to_owned(),
        request.to_string(),
    ];
    let output = tools::run_one(Invocation::new(&node(), args)).await;
    parse(&output).unwrap_or_else(|problem| panic!("{problem}\n{output}"))
}

fn parse(output: &Output) -> Result<Answer, String> {
    if output.code != Some(0) {
        return Err("the gRPC-Web client failed".into());
    }
    let json: Value = serde_json::from_str(output.stdout.trim())
        .map_err(|e| format!("the client printed no JSON line: {e}"))?;
    if let Some(messages) = json["messages"].as_array() {
        return Ok(Answer::Messages(messages.clone()));
    }
    let error = &json["error"];
    Ok(Answer::Error {
        code: error["code"].as_i64().ok_or("no error code")?,
        message: error["message"].as_str().ok_or("no message")?.to_owned(),
        details: error["details"]
            .as_array()
            .ok_or("no details")?
            .iter()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect(),
    })
}

/// What the API explorer showed in Chromium: see `tests/web/explorer.mjs`.
pub(crate) async fn explorer(gateway: SocketAddr) -> Value {
    let script = root().join("tests/web/explorer.mjs");
    let args = [script.display().to_string(), format!("http://{gateway}")];
    let run = Invocation::new(&node(), args).deadline(std::time::Duration::from_secs(90));
    let output = tools::run_one(run).await;
    let shown = (output.code == Some(0))
        .then(|| serde_json::from_str(output.stdout.trim()).ok())
        .flatten();
    shown.unwrap_or_else(|| panic!("the browser run failed\n{output}"))
}

/// `node`, with the packages of `tests/web` installed; panics with what to run if not.
pub(crate) fn node() -> PathBuf {
    let modules = root().join("tests/web/node_modules/@connectrpc/connect-node");
    assert!(
        modules.is_dir(),
        "{} is missing: run scripts/tools.sh (or make test, which runs it) to install the \
         npm packages of tests/web",
        modules.display()
    );
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("node"))
        .find(|candidate| candidate.is_file())
        .expect("node not found on PATH: install Node.js 20 or later (scripts/tools.sh names it)")
}

/// The contracts' descriptor set in a file, for the client to build messages from.
fn descriptor_set() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("contracts-{}.binpb", std::process::id()));
        std::fs::write(&path, contracts::FILE_DESCRIPTOR_SET).expect("descriptor set written");
        path
    })
}

/// A CORS preflight for a gRPC-Web call of `path` from a page of `origin`, over HTTP/2:
/// the answer's status and headers.
pub(crate) async fn preflight(addr: SocketAddr, path: &str, origin: &str) -> http::Response<()> {
    let request = http::Request::builder()
        .method(http::Method::OPTIONS)
        .uri(format!("http://{addr}{path}"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,grpc-timeout",
        );
    send(addr, request, &[]).await
}

/// A gRPC-Web call of `path` with an empty request message from a page of `origin`,
/// over HTTP/2: the answer's status and headers.
pub(crate) async fn empty_call(addr: SocketAddr, path: &str, origin: &str) -> http::Response<()> {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("origin", origin)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    // One uncompressed message of zero bytes.
    send(addr, request, &[0, 0, 0, 0, 0]).await
}

async fn send(
    addr: SocketAddr,
    request: http::request::Builder,
    body: &[u8],
) -> http::Response<()> {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("the connection is ready");
    let request = request.body(()).expect("a valid request");
    let (answer, mut stream) = client
        .send_request(request, body.is_empty())
        .expect("request sent");
    if !body.is_empty() {
        stream
            .send_data(bytes::Bytes::copy_from_slice(body), true)
            .expect("body sent");
    }
    answer.await.expect("an answer").map(|_| ())
}
