//! The resilient channel (`shared::client`) against in-process servers whose answers
//! the tests script: retries, budget, deadlines, breaker, bulkhead, load balancing.
//!
//! The scripted downstream is OTLP's `TraceService` (already in the tree, generated
//! client and server): `shared` knows no contract of this project.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use shared::client::policy::BreakerState;
use shared::client::{Channel, NoRetry};
use shared::testing::{TestServer, eventually};
use shared::{ClientConfig, Env, Server, ServerConfig};
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};

/// The method the channels of these tests may retry, as a service's contracts would
/// list it (`contracts::RETRY_SAFE_METHODS`).
const RETRY_SAFE: &[&str] = &["/opentelemetry.proto.collector.trace.v1.TraceService/Export"];

/// A downstream whose `Export` answers as scripted: each call takes the next code
/// of `script` (OK when it is empty) and waits while `hang` is set.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Code>>>,
    hang: Arc<watch::Sender<bool>>,
    in_flight: Arc<watch::Sender<usize>>,
    /// The `grpc-timeout` of the last call.
    timeout: Arc<Mutex<Option<String>>>,
    /// Scripted errors carry a 20 KB message, which no service of the project sends
    /// (`shared::status` bounds them): over the client's header-list limit.
    huge: Arc<AtomicBool>,
}

impl Fake {
    fn script(&self, codes: impl IntoIterator<Item = Code>) {
        self.script.lock().unwrap().extend(codes);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn hang(&self, hang: bool) {
        self.hang.send_replace(hang);
    }

    async fn in_flight(&self, n: usize) {
        let mut in_flight = self.in_flight.subscribe();
        in_flight.wait_for(|i| *i >= n).await.unwrap();
    }
}

#[tonic::async_trait]
impl TraceService for Fake {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = request.metadata().get("grpc-timeout");
        *self.timeout.lock().unwrap() = timeout.and_then(|t| t.to_str().ok()).map(str::to_owned);
        self.in_flight.send_modify(|i| *i += 1);
        let _ = self.hang.subscribe().wait_for(|hang| !*hang).await;
        self.in_flight.send_modify(|i| *i -= 1);
        let code = self.script.lock().unwrap().pop_front();
        match code {
            None | Some(Code::Ok) => Ok(Response::new(ExportTraceServiceResponse::default())),
            Some(code) if self.huge.load(Ordering::SeqCst) => {
                Err(Status::new(code, "x".repeat(20_000)))
            }
            Some(code) => Err(Status::new(code, "scripted")),
        }
    }
}

async fn serve(fake: &Fake) -> TestServer {
    let config = ServerConfig::from_env(&shared::testing::env([]), 0, 0).unwrap();
    let server = Server::builder("fake-downstream", &config)
        .add_service(TraceServiceServer::new(fake.clone()))
        .bind()
        .await
        .unwrap();
    TestServer::start(server)
}

/// A channel to `addrs` with the defaults and `settings`, which may retry `Export`.
fn channel(addrs: &str, settings: &[(&str, &str)]) -> Channel {
    channel_retrying(addrs, settings, RETRY_SAFE)
}

fn channel_retrying(
    addrs: &str,
    settings: &[(&str, &str)],
    retry_safe: &[&'static str],
) -> Channel {
    let env: Env = settings.iter().copied().collect();
    let config = ClientConfig::from_env(&env).unwrap();
    let upstream = shared::client::Upstream::parse(addrs).unwrap();
    shared::client::channel(upstream, &config, retry_safe)
}

async fn get(channel: &Channel) -> Result<(), Status> {
    TraceServiceClient::new(channel.clone())
        .export(ExportTraceServiceRequest::default())
        .await
        .map(drop)
}

#[tokio::test]
async fn unavailable_answers_of_retry_safe_methods_are_retried() {
    let fake = Fake::default();
    let server = serve(&fake).await;
    let channel = channel(&format!("http://{}", server.addr), &[]);

    fake.script([Code::Unavailable, Code::Unavailable]);
    get(&channel).await.expect("the third attempt answers");
    assert_eq!(fake.calls(), 3);

    // A code that means "processed" is never retried.
    fake.script([Code::Internal]);
    assert_eq!(get(&channel).await.unwrap_err().code(), Code::Internal);
    assert_eq!(fake.calls(), 4);

    // At most GRPC_CLIENT_RETRY_MAX_ATTEMPTS (3) attempts.
    fake.script([Code::Unavailable; 5]);
    assert_eq!(get(&channel).await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(fake.calls(), 7);
    fake.script.lock().unwrap().clear();

    // A caller that retries on its own turns the channel's retries off.
    fake.script([Code::Unavailable]);
    let mut request = Request::new(ExportTraceServiceRequest::default());
    request.extensions_mut().insert(NoRetry);
    let answer = TraceServiceClient::new(channel.clone())
        .export(request)
        .await;
    assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    assert_eq!(fake.calls(), 8);
    server.stop().await.unwrap();
}

/// The caller names the methods that may be sent again: one it does not name is sent
/// once, whatever the answer.
#[tokio::test]
async fn methods_the_caller_does_not_name_retry_safe_are_sent_once() {
    let fake = Fake::default();
    let server = serve(&fake).await;
    let addr = format!("http://{}", server.addr);
    let other = "/opentelemetry.proto.collector.trace.v1.TraceService/Other";
    let channel = channel_retrying(&addr, &[], &[other]);
    fake.script([Code::Unavailable]);
    assert_eq!(get(&channel).await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(fake.calls(), 1);

    // Listed in any order, it is found.
    let channel = channel_retrying(&addr, &[], &["/z.Z/Z", RETRY_SAFE[0], "/a.A/A"]);
    fake.script([Code::Unavailable]);
    get(&channel).await.expect("the second attempt answers");
    assert_eq!(fake.calls(), 3);
    server.stop().await.unwrap();
}

/// Issue 15: the caller's own faults, and answers this client refuses for its own
/// limits, are neither retried nor counted against the downstream (the table of
/// `shared::client::outcome`).
#[tokio::test]
async fn the_callers_own_faults_never_retry_nor_open_the_breaker() {
    let fake = Fake::default();
    let server = serve(&fake).await;
    let settings = [("GRPC_CLIENT_BREAKER_FAILURES", "2")];
    let channel = channel(&format!("http://{}", server.addr), &settings);
    let breaker = channel.breaker();
    let faults = [
        Code::InvalidArgument,
        Code::FailedPrecondition,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::Unauthenticated,
        Code::OutOfRange,
        Code::ResourceExhausted,
    ];
    fake.script(faults);
    for code in faults {
        assert_eq!(get(&channel).await.unwrap_err().code(), code);
    }
    assert_eq!(fake.calls(), faults.len(), "each sent once");
    assert_eq!(breaker.state(), BreakerState::Closed);

    // Answered, but over the 16 KiB header list this client accepts: refused here,
    // as the client's own limit, not sent again, not the downstream's failure.
    fake.huge.store(true, Ordering::SeqCst);
    fake.script([Code::InvalidArgument; 5]);
    for _ in 0..5 {
        let error = get(&channel).await.unwrap_err();
        assert_eq!(error.code(), Code::Internal, "{error:?}");
        assert!(error.message().contains("refused"), "{error:?}");
    }
    assert_eq!(fake.calls(), faults.len() + 5, "none retried");
    assert_eq!(breaker.state(), BreakerState::Closed);
    fake.huge.store(false, Ordering::SeqCst);
    get(&channel).await.expect("the downstream still answers");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_budget_bounds_retries_when_everything_fails() {
    let fake = Fake::default();
    let server = serve(&fake).await;
    let settings = [
        ("GRPC_CLIENT_RETRY_MAX_ATTEMPTS", "5"),
        ("GRPC_CLIENT_RETRY_BACKOFF", "1ms"),
        ("GRPC_CLIENT_RETRY_BUDGET", "10"),
        ("GRPC_CLIENT_BREAKER_FAILURES", "0"),
    ];
    let channel = channel(&format!("http://{}", server.addr), &settings);
    fake.script([Code::Unavailable; 1000]);
    for _ in 0..50 {
        assert_eq!(get(&channel).await.unwrap_err().code(), Code::Unavailable);
    }
    // 50 calls; without a budget, 250 attempts. With 10 tokens, retries stop once
    // 5 are left: 4 retries in all.
    assert_eq!(fake.calls(), 54);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_deadline_of_the_call_being_served_bounds_outgoing_calls() {
    let fake = Fake::default();
    let server = serve(&fake).await;
    let channel = channel(&format!("http://{}", server.addr), &[]);

    // No call being served: the channel's own 5 s.
    get(&channel).await.unwrap();
    let sent = fake.timeout.lock().unwrap().clone().unwrap();
    assert!(sent.starts_with('4') && sent.len() == 8, "{sent}");

    // Serving a call due in 300 ms: what is left of it goes on, and bounds the wait.
    let due = tokio::time::Instant::now() + Duration::from_millis(300);
    shared::deadline::scope(due, get(&channel)).await.unwrap();
    let sent = fake.timeout.lock().unwrap().clone().unwrap();
    let micros: u64 = sent.trim_end_matches('u').parse().unwrap();
    assert!((200_000..=300_000).contains(&micros), "{sent}");

    fake.hang(true);
    let start = Instant::now();
    let due = tokio::time::Instant::now() + Duration::from_millis(300);
    let answer = shared::deadline::scope(due, get(&channel)).await;
    let took = start.elapsed();
    let error = answer.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // A deadline already passed: not even sent.
    let calls = fake.calls();
    let passed = tokio::time::Instant::now();
    let answer = shared::deadline::scope(passed, get(&channel)).await;
    assert_eq!(answer.unwrap_err().code(), Code::DeadlineExceeded);
    assert_eq!(fake.calls(), calls);
    fake.hang(false);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_breaker_opens_on_a_hung_server_fails_fast_and_closes_after_a_probe() {
    let fake = Fake::default();
    let server = serve(&fake).await;
    let settings = [
        ("GRPC_CLIENT_TIMEOUT", "200ms"),
        ("GRPC_CLIENT_BREAKER_FAILURES", "3"),
        ("GRPC_CLIENT_BREAKER_OPEN", "2s"),
    ];
    let channel = channel(&format!("http://{}", server.addr), &settings);
    let breaker = channel.breaker();
    get(&channel).await.unwrap();

    fake.hang(true);
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(
            get(&channel).await.unwrap_err().code(),
            Code::DeadlineExceeded
        );
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    // Open: fails at once, without reaching the server.
    let calls = fake.calls();
    let n = 1000;
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(get(&channel).await.unwrap_err().code(), Code::Unavailable);
    }
    let per_call = start.elapsed() / n;
    eprintln!("breaker open: {per_call:?} per call over {n} calls");
    assert!(per_call < Duration::from_millis(1), "{per_call:?} per call");
    assert_eq!(fake.calls(), calls);

    // Still hung when the probe goes: open again. Then it recovers: closed.
    fake.hang(false);
    eventually("a probe closes the breaker", || async {
        get(&channel).await.is_ok()
    })
    .await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_bulkhead_fails_calls_beyond_its_limit_at_once() {
    let fake = Fake::default();
    let server = serve(&fake).await;
    let settings = [("GRPC_CLIENT_MAX_CONCURRENCY", "2")];
    let channel = channel(&format!("http://{}", server.addr), &settings);
    fake.hang(true);
    let held: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn({
                let channel = channel.clone();
                async move { get(&channel).await }
            })
        })
        .collect();
    fake.in_flight(2).await;
    let start = Instant::now();
    let answer = get(&channel).await;
    assert_eq!(answer.unwrap_err().code(), Code::ResourceExhausted);
    assert!(start.elapsed() < Duration::from_millis(100));
    fake.hang(false);
    for call in held {
        call.await.unwrap().unwrap();
    }
    get(&channel).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn calls_spread_over_every_address_and_go_on_when_one_dies() {
    let (a, b) = (Fake::default(), Fake::default());
    let (server_a, server_b) = (serve(&a).await, serve(&b).await);
    let channel = channel(
        &format!("http://{},http://{}", server_a.addr, server_b.addr),
        &[],
    );
    for _ in 0..10 {
        get(&channel).await.unwrap();
    }
    assert_eq!((a.calls(), b.calls()), (5, 5), "round robin");

    server_a.stop().await.unwrap();
    let before = b.calls();
    for _ in 0..20 {
        get(&channel).await.expect("the other address answers");
    }
    assert_eq!(b.calls() - before, 20);
    server_b.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_not_made_in_time_sends_the_call_at_once_to_another_address() {
    // A listener that never accepts, its queue full: the kernel drops the SYNs of any
    // further connection, which then waits for the connect timeout, as towards a
    // node that is gone.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let silent = socket.listen(0).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _queued = tokio::net::TcpStream::connect(silent_addr).await.unwrap();
    let fake = Fake::default();
    let server = serve(&fake).await;
    let upstream = format!("http://{silent_addr},http://{}", server.addr);
    let channel = channel(&upstream, &[("GRPC_CLIENT_CONNECT_TIMEOUT", "200ms")]);
    // Round robin: one of the two calls tries the silent address first.
    for _ in 0..2 {
        get(&channel)
            .await
            .expect("sent again to the address that answers");
    }
    assert_eq!(fake.calls(), 2);
    // Sent again at once as never sent, not after a back-off as a broken call.
    let transparent = shared::metrics::render()
        .lines()
        .find(|line| {
            line.starts_with("rpc_client_transparent_retries_total{")
                && line.contains(&silent_addr.to_string())
        })
        .map(|line| line.rsplit(' ').next().unwrap().to_owned());
    assert_eq!(transparent.as_deref(), Some("1"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_address_whose_connections_are_reset_is_set_aside() {
    let (a, b) = (Fake::default(), Fake::default());
    let (server_a, server_b) = (serve(&a).await, serve(&b).await);
    // A reaches its server through a proxy that will reset every connection, as a
    // crashed pod's node would.
    let proxy = shared::testing::proxy::FaultProxy::start(server_a.addr).await;
    let channel = channel(
        &format!("http://{},http://{}", proxy.addr(), server_b.addr),
        &[],
    );
    for _ in 0..10 {
        get(&channel).await.unwrap();
    }
    assert_eq!((a.calls(), b.calls()), (5, 5), "round robin");

    proxy.set(shared::testing::proxy::Faults::reset());
    for _ in 0..20 {
        get(&channel).await.expect("retried on the other address");
    }
    assert_eq!(a.calls(), 5);
    assert_eq!(b.calls(), 25);
    server_a.stop().await.unwrap();
    server_b.stop().await.unwrap();
}
