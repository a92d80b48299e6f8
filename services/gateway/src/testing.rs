//! An HTTP client of the REST API for tests, built on the hyper client that tonic
//! already brings into the build, so tests need no other HTTP crate.
//!
//! ```ignore
//! let http = HttpClient::new(gateway.local_addr());
//! let response = http.post_json("/v1/orders", &[("Idempotency-Key", "k1")], &order).await;
//! assert_eq!(response.status, StatusCode::CREATED);
//! assert_eq!(response.json()["status"], "CONFIRMED");
//! ```

use std::net::SocketAddr;

use axum::body::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
