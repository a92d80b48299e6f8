//! An HTTP client of the REST API for tests, built on the hyper client that tonic
//! already brings into the build, so tests need no other HTTP crate; and a token
//! issuer, to test the gateway with authentication on.
//!
//! ```ignore
//! let http = HttpClient::new(gateway.local_addr());
//! let response = http.post_json("/v1/orders", &[("Idempotency-Key", "k1")], &order).await;
//! assert_eq!(response.status, StatusCode::CREATED);
//! assert_eq!(response.json()["status"], "ORDER_STATUS_CONFIRMED");
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};

/// A client of one server, keeping its connections open between requests. Cheap to
/// clone: clones share the connections. Panics, naming the request, when the server
/// cannot be reached: it is for tests.
#[derive(Clone, Debug)]
pub struct HttpClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A whole response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON; panics, showing the body, if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            let body = String::from_utf8_lossy(&self.body);
            panic!(
                "a {} response with a body that is not JSON ({e}): {body}",
                self.status
            )
        })
    }

    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl HttpClient {
    /// A client of `http://{addr}`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET path` (`path` may carry a query).
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    /// `POST path` with `body` as JSON, plus `headers`.
    pub async fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> HttpResponse {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(
            Method::POST,
            path,
            &all,
            serde_json::to_vec(body).expect("JSON values serialize"),
        )
        .await
    }

    /// `GET path` with `headers`, answered with Server-Sent Events: the response as soon
    /// as its head arrives, to read event by event.
    pub async fn events(&self, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.base))
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|e| panic!("invalid test request GET {path}: {e}"));
        let response = self
            .client
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let (parts, body) = response.into_parts();
        EventStream {
            status: parts.status,
            headers: parts.headers,
            body,
            buffer: Vec::new(),
        }
    }

    /// Any request, with exactly the headers given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> HttpResponse {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.into()))
            .unwrap_or_else(|e| panic!("invalid test request {method} {path}: {e}"));
        let response = self
            .client
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"))
            .to_bytes();
        HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A response of Server-Sent Events, read event by event as they arrive.
#[derive(Debug)]
pub struct EventStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

/// One event: its `event:` name (`message` when it has none) and its `data:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEvent {
    pub event: String,
    pub data: String,
}

impl ServerEvent {
    /// The data as JSON; panics, showing it, if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data that is not JSON ({e}): {}", self.data))
    }
}

impl EventStream {
    /// The next event; `None` once the stream has ended. Comments (keep-alives) are
    /// skipped.
    pub async fn next(&mut self) -> Option<ServerEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut event, mut data) = ("message".to_owned(), Vec::new());
                for line in text.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(line) = line.strip_prefix("data:") {
                        data.push(line.strip_prefix(' ').unwrap_or(line).to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(ServerEvent {
                    event,
                    data: data.join("\n"),
                });
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buffer.extend_from_slice(&bytes);
            }
        }
    }
}

/// An identity provider for tests: an Ed25519 key pair generated for the test, its
/// public key as a JWKS file, and tokens signed with it (EdDSA).
///
/// ```ignore
/// let issuer = TokenIssuer::new("test-key");
/// let env = [("GATEWAY_JWT_KEYS_FILE", issuer.jwks_file()), …issuer.env()];
/// let token = issuer.token("alice", "orders:read");
/// http.send(Method::GET, "/v1/orders/1", &[("authorization", &format!("Bearer {token}"))], "").await;
/// ```
#[derive(Debug)]
pub struct TokenIssuer {
    kid: String,
    key_pair: Ed25519KeyPair,
    jwks_file: PathBuf,
}

/// The `iss` of [`TokenIssuer`]'s tokens, and the `GATEWAY_JWT_ISSUER` of [`TokenIssuer::env`].
pub const TEST_ISSUER: &str = "https://issuer.test";
/// The `aud` of [`TokenIssuer`]'s tokens, and the `GATEWAY_JWT_AUDIENCE` of [`TokenIssuer::env`].
pub const TEST_AUDIENCE: &str = "gateway";

impl TokenIssuer {
    /// A new key pair of key id `kid`; its JWKS is written to a file of the system's
    /// temporary directory, removed when the issuer is dropped.
    pub fn new(kid: &str) -> Self {
        static FILES: AtomicU32 = AtomicU32::new(0);
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("a new key");
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("the key just made");
        let jwks_file = std::env::temp_dir().join(format!(
            "gateway-jwks-{}-{}.json",
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        ));
        let issuer = Self {
            kid: kid.to_owned(),
            key_pair,
            jwks_file,
        };
        let jwks = json!({"keys": [issuer.jwk()]});
        std::fs::write(&issuer.jwks_file, jwks.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", issuer.jwks_file.display()));
        issuer
    }

    /// The public key as a JWK (RFC 8037).
    pub fn jwk(&self) -> Value {
        let x = BASE64URL.encode(self.key_pair.public_key().as_ref());
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"})
    }

    /// The JWKS file of the public key.
    pub fn jwks_file(&self) -> &Path {
        &self.jwks_file
    }

    /// The gateway's settings that accept this issuer's tokens.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "GATEWAY_JWT_KEYS_FILE",
                self.jwks_file
                    .to_str()
                    .expect("a UTF-8 temp dir")
                    .to_owned(),
            ),
            ("GATEWAY_JWT_ISSUER", TEST_ISSUER.to_owned()),
            ("GATEWAY_JWT_AUDIENCE", TEST_AUDIENCE.to_owned()),
        ]
    }

    /// A valid token of `subject` granting `scope` (space-separated), for an hour.
    pub fn token(&self, subject: &str, scope: &str) -> String {
        let now = now();
        self.sign(&json!({
            "iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "sub": subject, "scope": scope,
            "iat": now, "exp": now + 3600,
        }))
    }

    /// A token with exactly `claims`, signed with the usual header.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    /// A token with exactly `header` and `claims`, signed by this issuer's key whatever
    /// the header says (to test what the gateway makes of a lying header).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let message = unsigned(header, claims);
        let signature = self.key_pair.sign(message.as_bytes());
        format!("{message}.{}", BASE64URL.encode(signature.as_ref()))
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.jwks_file);
    }
}

/// `base64url(header).base64url(claims)`: the signed part of a JWT.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    let encode = |value: &Value| BASE64URL.encode(value.to_string());
    format!("{}.{}", encode(header), encode(claims))
}

/// Seconds since the Unix epoch, as JWT claims count time.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}
