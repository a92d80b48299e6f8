//! Load of the driver's scenarios.
//!
//! [`open_loop`] sends at a fixed rate whatever the answers do, and times each call
//! from the moment it *should* have been sent: a stalled server then shows in the
//! latencies instead of silently slowing the sender down (coordinated omission).
//! [`closed_loop`] keeps a fixed number of calls in flight, for the throughput of
//! calls h2load cannot make (each order needs its own idempotency key).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use contracts::inventory::v1::GetProductRequest;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tonic::transport::Channel;

/// Calls still unanswered beyond this many are not sent, and counted apart
/// ([`Outcome::not_sent`]): the server is past saturation, and the generator would
/// only grow its memory (and the run its length) without bound.
const MAX_IN_FLIGHT: u64 = 2_000;

/// How long the stragglers of a run may take before they count as errors.
const DRAIN: Duration = Duration::from_secs(5);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One kind of call.
#[derive(Clone, Debug)]
pub enum Target {
    /// `inventory.v1.InventoryService/GetProduct` as a raw HTTP/2 request with a
    /// pre-encoded body, checking the answer's grpc-status: the fixed-rate load. A
    /// tonic client on the load core costs about as much CPU per call as the server it
    /// measures, so at half the bare server's rate the generator itself fell behind;
    /// this costs a fraction of that.
    ///
    /// One connection, so that the calls due together leave in one write: over 4
    /// connections taken in turn, each call was a write of its own, and sending
    /// through loopback TCP is most of the generator's work (the receiving side's
    /// processing runs in the sender's system call). Against the bare server at 39k
    /// calls/s (half its saturation) the generator then used all of its core (p99
    /// 1666 µs); on one connection it uses 86% (p99 743 µs).
    Grpc {
        connection: h2::client::SendRequest<Bytes>,
        uri: Uri,
        body: Bytes,
    },
    /// The same over one tonic `Channel`: the bare client of the client comparison.
    GetProduct {
        client: InventoryServiceClient<Channel>,
        sku: String,
    },
    /// The same through `shared::client::channel`, as the services call each other
    /// (client span, trace context, metrics, deadline, retry budget, breaker,
    /// bulkhead, balancing).
    GetProductShared {
        client: InventoryServiceClient<shared::client::Channel>,
        sku: String,
    },
    /// An HTTP/1.1 GET expecting 200 (keep-alive connection pool).
    HttpGet { client: HttpClient, uri: Uri },
    /// `POST /v1/orders` on the gateway, each with a new `Idempotency-Key`; 201 expected.
    PlaceOrder {
        client: HttpClient,
        uri: Uri,
        body: Bytes,
        next_key: Arc<AtomicU64>,
    },
}

impl Target {
    /// GetProduct of `sku` on the gRPC server at `uri` (`http://host:port`) as raw
    /// HTTP/2 ([`Target::Grpc`]), its connection made now.
    pub async fn grpc_get_product(uri: &str, sku: &str) -> Result<Self, String> {
        let base: Uri = uri.parse().map_err(|e| format!("{uri}: {e}"))?;
        let authority = base.authority().ok_or(format!("{uri}: no host"))?.clone();
        let tcp = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| format!("cannot connect to {uri}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        // Each answer comes in small DATA frames ahead of its trailers, and with up to
        // [`MAX_IN_FLIGHT`] calls waiting to be read, h2's guard against floods of
        // small frames (a budget of half the connection window) took the server for
        // an attacker once it answered 47k calls a second: unbounded here, as this
        // client is the load, not the target.
        let (send, connection) = h2::client::Builder::new()
            .data_frame_budget(usize::MAX)
            .handshake(tcp)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {uri}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let path = "/inventory.v1.InventoryService/GetProduct";
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| e.to_string())?;
        let body = crate::frame::frame(&GetProductRequest { sku: sku.into() });
        Ok(Self::Grpc {
            connection: send,
            uri,
            body: Bytes::from(body),
        })
    }

    /// GetProduct of `sku` on the gRPC server at `uri` (one connection, made now).
    pub async fn get_product(uri: &str, sku: &str) -> Result<Self, String> {
        let channel = tonic::transport::Endpoint::from_shared(uri.to_owned())
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {uri}: {e}"))?;
        Ok(Self::GetProduct {
            client: InventoryServiceClient::new(channel),
            sku: sku.to_owned(),
        })
    }

    /// GetProduct of `sku` on the gRPC server at `uri` through `shared::client::channel`
    /// with the default client configuration (connects on the first call).
    pub fn get_product_shared(uri: &str, sku: &str) -> Result<Self, String> {
        let uri: Uri = uri.parse().map_err(|e| format!("{uri}: {e}"))?;
        let env: shared::Env = std::iter::empty::<(&str, &str)>().collect();
        let config = shared::ClientConfig::from_env(&env).map_err(|e| e.to_string())?;
        Ok(Self::GetProductShared {
            client: InventoryServiceClient::new(shared::client::channel(
                uri,
                &config,
                contracts::RETRY_SAFE_METHODS,
            )),
            sku: sku.to_owned(),
        })
    }

    pub fn http_get(uri: Uri) -> Self {
        Self::HttpGet {
            client: http_client(),
            uri,
        }
    }

    /// Orders of one unit of `sku`, approved card.
    pub fn place_order(uri: Uri, sku: &str) -> Self {
        let body = serde_json::json!({
            "customerId": "bench",
            "items": [{ "sku": sku, "quantity": 1 }],
            "cardToken": "tok_visa",
        });
        Self::PlaceOrder {
            client: http_client(),
            uri,
            body: Bytes::from(body.to_string()),
            next_key: Arc::new(AtomicU64::new(0)),
        }
    }

    /// One call; `Err` names what went wrong (the gRPC code, the HTTP status).
    pub async fn call(&self) -> Result<(), String> {
        match self {
            Self::Grpc {
                connection,
                uri,
                body,
            } => grpc_call(connection.clone(), uri, body.clone()).await,
            Self::GetProduct { client, sku } => client
                .clone()
                .get_product(GetProductRequest { sku: sku.clone() })
                .await
                .map(drop)
                .map_err(|status| format!("grpc-status {:?}", status.code())),
            Self::GetProductShared { client, sku } => client
                .clone()
                .get_product(GetProductRequest { sku: sku.clone() })
                .await
                .map(drop)
                .map_err(|status| format!("grpc-status {:?}", status.code())),
            Self::HttpGet { client, uri } => {
                let response = client.get(uri.clone()).await.map_err(|e| e.to_string())?;
                expect(response, StatusCode::OK).await
            }
            Self::PlaceOrder {
                client,
                uri,
                body,
                next_key,
            } => {
                let key = format!(
                    "bench-{}-{}",
                    std::process::id(),
                    next_key.fetch_add(1, Ordering::Relaxed)
                );
                let request = Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header("idempotency-key", key)
                    .body(Full::new(body.clone()))
                    .map_err(|e| e.to_string())?;
                let response = client.request(request).await.map_err(|e| e.to_string())?;
                expect(response, StatusCode::CREATED).await
            }
        }
    }
}

/// One unary gRPC call over `connection`; `Ok` when it ends with grpc-status 0
/// (in the trailers, or in the headers of a trailers-only answer).
async fn grpc_call(
    connection: h2::client::SendRequest<Bytes>,
    uri: &Uri,
    body: Bytes,
) -> Result<(), String> {
    let request = Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let mut connection = connection.ready().await.map_err(|e| e.to_string())?;
    let (response, mut stream) = connection
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    stream.send_data(body, true).map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("HTTP {}", response.status()));
    }
    if let Some(status) = response.headers().get("grpc-status") {
        return grpc_status(Some(status));
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    grpc_status(trailers.as_ref().and_then(|t| t.get("grpc-status")))
}

fn grpc_status(status: Option<&http::HeaderValue>) -> Result<(), String> {
    match status.map(http::HeaderValue::as_bytes) {
        Some(b"0") => Ok(()),
        Some(other) => Err(format!("grpc-status {}", String::from_utf8_lossy(other))),
        None => Err("no grpc-status".into()),
    }
}

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

async fn expect<B>(response: http::Response<B>, wanted: StatusCode) -> Result<(), String>
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status == wanted {
        Ok(())
    } else {
        let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
        Err(format!("HTTP {status}: {body}"))
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Latencies in microseconds, of the calls of the measured window.
    pub histogram: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    /// Open loop: calls of the measured window not sent because [`MAX_IN_FLIGHT`]
    /// were unanswered already (the server could not keep up). Not in `errors`.
    pub not_sent: u64,
    pub first_error: Option<String>,
    /// Calls per second answered in the measured window (closed loop) or due in it
    /// (open loop).
    pub rate: f64,
}

impl Outcome {
    /// The `q` quantile (0 to 1) of the latencies, in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.histogram.value_at_quantile(q)
    }
}

#[derive(Debug)]
struct Stats {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    not_sent: u64,
    first_error: Option<String>,
}

impl Stats {
    fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds"),
            ok: 0,
            errors: 0,
            not_sent: 0,
            first_error: None,
        }))
    }

    fn record(&mut self, result: Result<(), String>, latency: Duration) {
        match result {
            Ok(()) => {
                self.ok += 1;
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.histogram.saturating_record(micros.max(1));
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    fn outcome(stats: &Mutex<Self>, rate: f64) -> Outcome {
        let stats = stats.lock().expect("no panics while recording");
        Outcome {
            histogram: stats.histogram.clone(),
            ok: stats.ok,
            errors: stats.errors,
            not_sent: stats.not_sent,
            first_error: stats.first_error.clone(),
            rate,
        }
    }
}

/// Sends `rate` calls per second for `warmup + measure`; reports the calls whose
/// intended send time falls in `measure`, each timed from that intended time.
pub async fn open_loop(target: &Target, rate: f64, warmup: Duration, measure: Duration) -> Outcome {
    let stats = Stats::new();
    let in_flight = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let mut due = pacer(start, end, rate);
    let mut sent_in_window = 0u64;
    while let Some(intended) = due.recv().await {
        let measured = intended >= measure_from;
        sent_in_window += u64::from(measured);
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            if measured {
                stats.lock().expect("no panics while recording").not_sent += 1;
            }
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (target, stats, in_flight) = (target.clone(), stats.clone(), in_flight.clone());
        tokio::spawn(async move {
            let result = target.call().await;
            let latency = intended.elapsed();
            if measured {
                stats
                    .lock()
                    .expect("no panics while recording")
                    .record(result, latency);
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let drained = Instant::now() + DRAIN;
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let outcome = Stats::outcome(&stats, sent_in_window as f64 / measure.as_secs_f64());
    let unanswered = in_flight.load(Ordering::Relaxed);
    Outcome {
        errors: outcome.errors + unanswered,
        ..outcome
    }
}

/// The intended send times, `1 / rate` apart from `start` until `end`, each delivered
/// when it comes. A thread of its own sleeps in between (high-resolution timers, a
/// few tens of µs late at worst, the same in every scenario): Tokio's 1 ms timer
/// wheel would bunch calls, and spinning would fight the other work on the core.
fn pacer(start: Instant, end: Instant, rate: f64) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let (due, receiver) = tokio::sync::mpsc::unbounded_channel();
    let (start, end) = (start.into_std(), end.into_std());
    std::thread::spawn(move || {
        for i in 0u64.. {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            if intended >= end {
                return;
            }
            let now = std::time::Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if due.send(Instant::from_std(intended)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Keeps `concurrency` calls in flight for `warmup + measure`; reports the calls
/// started in `measure`.
pub async fn closed_loop(
    target: &Target,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> Outcome {
    let stats = Stats::new();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (target, stats) = (target.clone(), stats.clone());
        workers.spawn(async move {
            loop {
                let sent = Instant::now();
                if sent >= end {
                    return;
                }
                let result = target.call().await;
                if sent >= measure_from {
                    stats
                        .lock()
                        .expect("no panics while recording")
                        .record(result, sent.elapsed());
                }
            }
        });
    }
    workers.join_all().await;
    let stats_now = Stats::outcome(&stats, 0.0);
    let rate = (stats_now.ok + stats_now.errors) as f64 / measure.as_secs_f64();
    Outcome { rate, ..stats_now }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineInventory, InventoryServiceServer, SKU};

    /// The bare server on 127.0.0.1:0, served until the test ends.
    async fn baseline() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(InventoryServiceServer::new(BaselineInventory))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_raw_grpc_call_reads_the_status_of_the_answer() {
        let uri = baseline().await;
        let found = Target::grpc_get_product(&uri, SKU).await.unwrap();
        for _ in 0..3 {
            assert_eq!(found.call().await, Ok(()));
        }
        // The baseline knows one product: NOT_FOUND (5), a trailers-only answer.
        let missing = Target::grpc_get_product(&uri, "SKU-404").await.unwrap();
        assert_eq!(missing.call().await, Err("grpc-status 5".into()));
    }

    #[tokio::test]
    async fn past_the_in_flight_bound_calls_are_counted_not_sent() {
        // An HTTP/2 server that takes every call and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(tcp).await.unwrap();
                    let mut held = Vec::new();
                    while let Some(Ok(call)) = connection.accept().await {
                        held.push(call);
                    }
                });
            }
        });
        let target = Target::grpc_get_product(&format!("http://{addr}"), SKU)
            .await
            .unwrap();
        let outcome = open_loop(&target, 5_000.0, Duration::ZERO, Duration::from_millis(600)).await;
        server.abort();
        assert_eq!(outcome.ok, 0);
        // 3000 due: the first 2000 sent and never answered (errors once the run
        // drained), the rest not sent and counted apart.
        assert_eq!(outcome.errors, MAX_IN_FLIGHT, "{outcome:?}");
        assert!(outcome.not_sent >= 900, "{outcome:?}");
    }
}
