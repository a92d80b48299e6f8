//! A server at its limits, as `shared::Server` sets them for every service:
//! - overloaded at three times the rate it can serve, it refuses the excess at once with
//!   RESOURCE_EXHAUSTED, the calls it accepts stay fast, health keeps answering, and
//!   latency is back to normal as soon as the load ends;
//! - a connection older than `GRPC_MAX_CONNECTION_AGE` is sent away with GOAWAY and the
//!   client moves to a new one without a failed call;
//! - whatever method names clients make up, answered or shed before routing, the
//!   metrics keep a bounded set of series.
//!
//! The service under test has a real bottleneck, as a service with a database pool
//! does: 2 "connections", each held 20 ms per call, so it serves at most 100 calls/s.
//! (Slow enough that the test's own CPU, in a debug build, is never what limits.)

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contracts::payments::v1::payment_service_client::PaymentServiceClient;
use contracts::payments::v1::payment_service_server::{PaymentService, PaymentServiceServer};
use contracts::payments::v1::{
    ChargeRequest, ChargeResponse, GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest,
    ListPaymentsResponse, RefundRequest, RefundResponse,
};
use shared::testing::TestServer;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const POOL: usize = 2;
const QUERY: Duration = Duration::from_millis(20);
/// What the bottleneck allows: POOL / QUERY.
const CAPACITY_PER_SECOND: f64 = 100.0;

/// `GetPayment` waits for one of [`POOL`] connections and holds it [`QUERY`]; it also
/// remembers the client ports it was called from (one per connection).
struct Bottleneck {
    pool: Arc<Semaphore>,
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
}

#[tonic::async_trait]
impl PaymentService for Bottleneck {
    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<GetPaymentResponse>, Status> {
        if let Some(peer) = request.remote_addr() {
            self.peers.lock().unwrap().insert(peer);
        }
        let _connection = self.pool.acquire().await.expect("the pool is never closed");
        tokio::time::sleep(QUERY).await;
        Ok(Response::new(GetPaymentResponse::default()))
    }

    async fn charge(&self, _: Request<ChargeRequest>) -> Result<Response<ChargeResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }

    async fn refund(&self, _: Request<RefundRequest>) -> Result<Response<RefundResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }

    async fn list_payments(
        &self,
        _: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
}

/// The bottleneck service behind `shared::Server`, configured by `vars`.
struct Served {
    server: TestServer,
    /// The client addresses the service has seen.
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    /// The service's pool: a test that takes its permits holds every call in the handler.
    pool: Arc<Semaphore>,
}

async fn serve(vars: &[(&str, &str)]) -> Served {
    let env = shared::testing::env(vars.iter().copied());
    let config = shared::ServerConfig::from_env(&env, 0, 0).unwrap();
    let peers = Arc::default();
    let pool = Arc::new(Semaphore::new(POOL));
    let service = Bottleneck {
        pool: Arc::clone(&pool),
        peers: Arc::clone(&peers),
    };
    let server = shared::Server::builder("limits", &config)
        .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET)
        .add_service(PaymentServiceServer::new(service))
        .bind()
        .await
        .unwrap();
    Served {
        server: TestServer::start(server),
        peers,
        pool,
    }
}

/// A new connection to `server` (as a separate client or a kubelet probe would have).
fn connect(server: &TestServer) -> Channel {
    Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_lazy()
}

/// One call: its status code and how long it took.
async fn call(channel: Channel) -> (Code, Duration) {
    let started = Instant::now();
    let request = GetPaymentRequest {
        payment_id: "pay-1".into(),
    };
    let mut request = Request::new(request);
    request.set_timeout(Duration::from_secs(10));
    let code = match PaymentServiceClient::new(channel)
        .get_payment(request)
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    };
    (code, started.elapsed())
}

/// Sends `rate` calls per second for `duration`, whether or not earlier ones have been
/// answered (an open loop, as independent clients do), and returns every outcome.
async fn offer(channel: &Channel, rate: f64, duration: Duration) -> Vec<(Code, Duration)> {
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut calls = JoinSet::new();
    let started = Instant::now();
    let mut sent = 0_u64;
    while started.elapsed() < duration {
        ticks.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        for _ in sent..due {
            calls.spawn(call(channel.clone()));
        }
        sent = sent.max(due);
    }
    calls.join_all().await
}

/// The `q` quantile (0 to 1) of `latencies` (zero if there are none).
fn quantile(latencies: &mut [Duration], q: f64) -> Duration {
    latencies.sort_unstable();
    let index = (latencies.len().saturating_sub(1) as f64 * q).round() as usize;
    latencies.get(index).copied().unwrap_or_default()
}

fn latencies(outcomes: &[(Code, Duration)], code: Code) -> Vec<Duration> {
    outcomes
        .iter()
        .filter(|(c, _)| *c == code)
        .map(|(_, latency)| *latency)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_quickly_and_what_is_accepted_stays_fast() {
    let Served { server, .. } = serve(&[("GRPC_CONCURRENCY_LIMIT", "4")]).await;
    let channel = connect(&server);
    assert_eq!(call(channel.clone()).await.0, Code::Ok);

    // A probe on its own connection, every 20 ms for as long as the load lasts.
    let probing = tokio_util::sync::CancellationToken::new();
    let probe = tokio::spawn({
        let mut health = HealthClient::new(connect(&server));
        let probing = probing.clone();
        async move {
            let mut answers = Vec::new();
            while !probing.is_cancelled() {
                let started = Instant::now();
                let answer = health.check(HealthCheckRequest::default()).await;
                let serving =
                    answer.is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32);
                answers.push((serving, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        }
    });

    let outcomes = offer(&channel, 3.0 * CAPACITY_PER_SECOND, Duration::from_secs(3)).await;
    probing.cancel();
    let probes = probe.await.unwrap();

    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|(code, _)| !matches!(code, Code::Ok | Code::ResourceExhausted))
        .collect();
    assert!(
        unexpected.is_empty(),
        "only OK or RESOURCE_EXHAUSTED: {unexpected:?}"
    );
    let mut accepted = latencies(&outcomes, Code::Ok);
    let mut shed = latencies(&outcomes, Code::ResourceExhausted);
    let shed_share = shed.len() as f64 / outcomes.len() as f64;
    let (accepted_p99, shed_p99) = (quantile(&mut accepted, 0.99), quantile(&mut shed, 0.99));
    let shed_p50 = quantile(&mut shed, 0.5);
    let slowest_probe = probes.iter().map(|(_, latency)| *latency).max().unwrap();
    eprintln!(
        "{} calls in 3 s: {} accepted (p50 {:?}, p99 {accepted_p99:?}), {} shed ({:.0}%, p50 {:?}, p99 {shed_p99:?}); {} health checks, slowest {slowest_probe:?}",
        outcomes.len(),
        accepted.len(),
        quantile(&mut accepted, 0.5),
        shed.len(),
        shed_share * 100.0,
        shed_p50,
        probes.len(),
    );
    // At three times capacity, two calls in three cannot be served; allow for a slow machine.
    assert!(shed_share > 0.5, "the excess is shed: {shed_share:.2}");
    assert!(accepted.len() > 100, "the server kept serving");
    // Without the limit the queue would grow by 200 calls a second and its calls
    // would wait seconds; with it, at most 4 calls are in: 2 rounds of 20 ms.
    assert!(
        accepted_p99 < Duration::from_millis(500),
        "{accepted_p99:?}"
    );
    // Refused without waiting for the bottleneck: faster than one query, as a rule.
    // (Bounds generous enough for a CI machine running other tests beside this one.)
    assert!(shed_p50 < QUERY, "refused quickly: p50 {shed_p50:?}");
    assert!(
        shed_p99 < Duration::from_millis(500),
        "refused quickly: p99 {shed_p99:?}"
    );
    assert!(
        probes.iter().all(|(serving, _)| *serving),
        "health kept answering SERVING"
    );
    assert!(
        slowest_probe < Duration::from_millis(500),
        "{slowest_probe:?}"
    );

    // Back to normal: unloaded calls take one query's time again.
    shared::testing::eventually("latency to recover", || async {
        let mut calls = Vec::new();
        for _ in 0..10 {
            calls.push(call(channel.clone()).await);
        }
        calls
            .iter()
            .all(|(code, latency)| *code == Code::Ok && *latency < Duration::from_millis(100))
    })
    .await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_old_connection_is_sent_away_without_failing_a_call() {
    let Served { server, peers, .. } = serve(&[("GRPC_MAX_CONNECTION_AGE", "200ms")]).await;
    // Through the channel every service calls with: a call written onto a connection in
    // the instant the server closes it was never processed, and the channel sends it
    // again. (A bare tonic Channel reports that one as CANCELLED: 1 to 4 runs in 20 on
    // a loaded 2-core machine.)
    let env = shared::testing::env([]);
    let config = shared::ClientConfig::from_env(&env).expect("valid client settings");
    let client = PaymentServiceClient::new(shared::client::channel(
        server.addr,
        &config,
        contracts::RETRY_SAFE_METHODS,
    ));
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(1) {
        let request = GetPaymentRequest {
            payment_id: "pay-1".into(),
        };
        let answer = client.clone().get_payment(request).await;
        assert_eq!(
            answer.err().map(|status| status.code()),
            None,
            "call {calls} failed"
        );
        calls += 1;
    }
    let connections = peers.lock().unwrap().len();
    // One connection per 200 ms: GOAWAY made the client reconnect, call after call.
    assert!(
        connections >= 3,
        "{calls} calls over {connections} connections"
    );
    server.stop().await.unwrap();
}

/// A call to `path` (any name a client makes up), answered with its status code.
async fn call_path(channel: &Channel, path: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let codec = tonic_prost::ProstCodec::<GetPaymentRequest, GetPaymentResponse>::default();
    match grpc
        .unary(Request::new(GetPaymentRequest::default()), path, codec)
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The series of the call-duration histogram of the server (one `_count` line each).
fn server_series() -> Vec<String> {
    shared::metrics::render()
        .lines()
        .filter(|line| line.starts_with("rpc_server_call_duration_seconds_count{"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn made_up_method_names_never_become_labels_even_when_shed() {
    if !alone!() {
        return;
    }
    let Served { server, pool, .. } = serve(&[("GRPC_CONCURRENCY_LIMIT", "1")]).await;
    let channel = connect(&server);
    // A call to a real method, then its answers stop: it holds the only place.
    assert_eq!(call(channel.clone()).await.0, Code::Ok);
    let held = pool.acquire_many(POOL as u32).await.unwrap();
    let in_flight = tokio::spawn(call(channel.clone()));
    shared::testing::eventually("the server to shed", || async {
        // Not a method of the service: answered at once while the place is free.
        call_path(&channel, "/payments.v1.PaymentService/MadeUp").await == Code::ResourceExhausted
    })
    .await;

    // Shed before routing: neither the router nor a handler saw these names.
    for i in 0..1000 {
        let path = match i % 2 {
            0 => format!("/payments.v1.PaymentService/MadeUp{i}"),
            _ => format!("/made.up{i}.v1.Service/Method{i}"),
        };
        assert_eq!(call_path(&channel, &path).await, Code::ResourceExhausted);
    }
    drop(held);
    assert_eq!(in_flight.await.unwrap().0, Code::Ok);
    // Routed: UNIMPLEMENTED.
    for path in ["/payments.v1.PaymentService/MadeUp", "/made.up.v1.S/M"] {
        assert_eq!(call_path(&channel, path).await, Code::Unimplemented);
    }

    let series = server_series();
    let text = series.join("\n");
    assert!(
        !text.contains("MadeUp") && !text.contains("made.up"),
        "{text}"
    );
    // GetPayment (OK, RESOURCE_EXHAUSTED), and `_OTHER` for the made-up methods of a
    // real service and for made-up services (RESOURCE_EXHAUSTED, UNIMPLEMENTED each).
    let made_up = series
        .iter()
        .filter(|s| s.contains(r#"rpc_method="_OTHER""#));
    assert_eq!(made_up.count(), 4, "{text}");
    assert!(series.len() <= 8, "{text}");
    server.stop().await.unwrap();
}
