//! Faults injected into the running binaries: a downstream SIGKILLed in the middle of
//! a call, and one that hangs (SIGSTOP). What callers see must be quick, bounded and
//! explicit — UNAVAILABLE or DEADLINE_EXCEEDED, never a hang — and the system must
//! come back by itself. And the system fuzz test (`hostile/`): hostile clients change
//! nothing for a well-behaved one.

use crate::{processes, support};

use std::time::{Duration, Instant};

use contracts::inventory::v1::GetProductRequest;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::{OrderStatus, PlaceOrderRequest};
use gateway::testing::HttpClient;
use processes::Process;
use shared::client::Channel;
use shared::client::policy::BreakerState;
use shared::testing::eventually;
use shared::testing::proxy::FaultProxy;
use tonic::Code;

/// The value of the first sample of `/metrics` named `name` whose labels contain
/// every one of `labels` (`key="value"`); `None` when there is none (a misspelt name
/// too: the caller says whether that can mean 0).
async fn metric(process: &Process, name: &str, labels: &[&str]) -> Option<f64> {
    let text = HttpClient::new(process.admin_addr).get("/metrics").await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .find(|line| labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

fn channel(addr: impl Into<shared::client::Upstream>, env: &[(&str, &str)]) -> Channel {
    let env: shared::Env = env.iter().copied().collect();
    let config = shared::ClientConfig::from_env(&env).expect("valid client settings");
    shared::client::channel(addr, &config, contracts::RETRY_SAFE_METHODS)
}

async fn reserved(inventory: &Channel, sku: &str) -> i64 {
    let request = GetProductRequest { sku: sku.into() };
    let product = InventoryServiceClient::new(inventory.clone())
        .get_product(request)
        .await
        .expect("inventory answers")
        .into_inner()
        .product
        .expect("a product");
    product.reserved
}

fn order(request_id: &str, sku: &str) -> PlaceOrderRequest {
    support::place_order(request_id, "cus_resilience", sku)
}

/// Test 1. Payments is SIGKILLed while orders' Charge call waits on it: the call fails
/// with UNAVAILABLE at once (not at its 5 s deadline), the saga compensates (the
/// stock is released, the order FAILED), retries stay within the retry budget, and
/// once payments is back on its port, orders go through again.
#[tokio::test]
async fn a_downstream_killed_mid_call_fails_fast_and_the_system_recovers() {
    const SKU: &str = "SKU-003";
    let (inventory, payments) = tokio::join!(
        Process::start("inventory", &[]),
        Process::start("payments", &[]),
    );
    // Orders reaches payments through a proxy: the proxy tells when the Charge call's
    // bytes have reached payments, the moment to kill it.
    let proxy = FaultProxy::start(payments.addr).await;
    let payments_upstream = format!("http://{}/", proxy.addr());
    let orders = Process::start(
        "orders",
        &[
            ("INVENTORY_ADDR", inventory.uri()),
            ("PAYMENTS_ADDR", format!("http://{}", proxy.addr())),
            // Back quickly once payments is: a probe 200 ms after the breaker opens.
            ("GRPC_CLIENT_BREAKER_OPEN", "200ms".into()),
        ],
    )
    .await;
    let inventory_channel = channel(inventory.addr, &[]);
    let orders_client =
        OrderServiceClient::new(channel(orders.addr, &[("GRPC_CLIENT_TIMEOUT", "30s")]));

    // A first order goes through: the connections are up.
    let confirmed = orders_client.clone().place_order(order("warm", SKU)).await;
    let confirmed = confirmed.unwrap().into_inner().order.unwrap();
    assert_eq!(confirmed.status(), OrderStatus::Confirmed);
    let reserved_before = reserved(&inventory_channel, SKU).await;

    // Payments hangs; an order is placed; once the Charge has reached payments, kill it.
    payments.pause();
    let sent_before = proxy.sent();
    let placing = tokio::spawn({
        let mut client = orders_client.clone();
        async move { client.place_order(order("killed", SKU)).await }
    });
    eventually("the stock is reserved", || async {
        reserved(&inventory_channel, SKU).await > reserved_before
    })
    .await;
    eventually("the Charge call reached payments", || async {
        proxy.sent() > sent_before
    })
    .await;
    let payments_addr = payments.addr;
    let killed_at = Instant::now();
    payments.kill();

    let placed = tokio::time::timeout(Duration::from_secs(10), placing)
        .await
        .expect("PlaceOrder never hangs")
        .unwrap()
        .expect("a failed saga is still an answer")
        .into_inner()
        .order
        .unwrap();
    let answered_in = killed_at.elapsed();
    assert_eq!(placed.status(), OrderStatus::Failed, "{placed:?}");
    // Compensated: the reservation is released.
    assert_eq!(reserved(&inventory_channel, SKU).await, reserved_before);

    // Every Charge attempt failed with UNAVAILABLE, each within 1 s; none waited for
    // its deadline.
    let charge = ["rpc_method=\"Charge\"", "rpc_grpc_status_code=\"14\""];
    let failed = metric(&orders, "rpc_client_call_duration_seconds_count", &charge).await;
    let failed = failed.expect("a failed Charge recorded");
    let within_1s = [charge[0], charge[1], "le=\"1\""];
    let fast = metric(
        &orders,
        "rpc_client_call_duration_seconds_bucket",
        &within_1s,
    )
    .await
    .expect("the histogram has a 1 s bucket");
    assert!(failed >= 1.0, "no failed Charge recorded");
    assert_eq!(fast, failed, "a Charge took more than 1 s to fail");
    let timed_out = ["rpc_method=\"Charge\"", "rpc_grpc_status_code=\"4\""];
    let timed_out = metric(
        &orders,
        "rpc_client_call_duration_seconds_count",
        &timed_out,
    )
    .await
    // The series of a status that never happened is absent; `failed` is in its family.
    .unwrap_or(0.0);
    assert_eq!(timed_out, 0.0, "a Charge waited for its deadline");

    // The retry budget (10 tokens) allows retries while more than 5 are left: of the
    // saga's retries (Charge, then ListPayments to find a lost charge), at most 4 went.
    let upstream = format!("upstream=\"{payments_upstream}\"");
    // Retries went while the budget allowed them, so each series exists.
    let mut counts = Vec::new();
    for name in [
        "rpc_client_retries_total",
        "rpc_client_retries_throttled_total",
        "rpc_client_attempts_total",
    ] {
        let count = metric(&orders, name, &[&upstream]).await;
        counts.push(count.unwrap_or_else(|| panic!("no {name} for {upstream}")));
    }
    let [retries, throttled, attempts] = counts[..] else {
        unreachable!("three counts")
    };
    eprintln!(
        "PlaceOrder answered {answered_in:?} after the kill; payments: {attempts} attempts, \
         {retries} retries, {throttled} refused by the budget"
    );
    assert!((1.0..=4.0).contains(&retries), "{retries} retries");
    assert!(throttled >= 1.0, "the budget never stopped a retry");

    // Payments comes back on its port: orders go through again, once a probe has
    // closed the breaker.
    let payments = Process::start(
        "payments",
        &[
            ("LISTEN_ADDR", payments_addr.to_string()),
            ("ADMIN_LISTEN_ADDR", "127.0.0.1:0".into()),
        ],
    )
    .await;
    let mut attempt = 0;
    eventually("an order is confirmed after the restart", || {
        attempt += 1;
        let mut client = orders_client.clone();
        let request = order(&format!("after-restart-{attempt}"), SKU);
        async move {
            let placed = client.place_order(request).await.unwrap().into_inner();
            placed.order.unwrap().status() == OrderStatus::Confirmed
        }
    })
    .await;
    let closed = ["state=\"closed\"", &upstream];
    let closed = metric(&orders, "rpc_client_breaker_transitions_total", &closed).await;
    let closed = closed.expect("a transition to closed recorded");
    assert!(closed >= 1.0, "the breaker never closed");
    // PlaceOrder is idempotent: the killed order's retry answers its outcome.
    let again = orders_client
        .clone()
        .place_order(order("killed", SKU))
        .await;
    let again = again.unwrap().into_inner().order.unwrap();
    assert_eq!(again.status(), OrderStatus::Failed);
    assert_eq!(again.order_id, placed.order_id);

    drop(proxy);
    orders.stop().await;
    payments.stop().await;
    inventory.stop().await;
}

/// Test 2. Inventory hangs (SIGSTOP): calls end with DEADLINE_EXCEEDED when their
/// deadline says, also two hops away (orders passes the deadline on); the breaker
/// opens and then fails calls in well under a millisecond; after SIGCONT a probe
/// closes it.
#[tokio::test]
async fn a_hung_downstream_trips_the_breaker_which_closes_after_it_recovers() {
    let inventory = Process::start("inventory", &[]).await;
    // Orders serves every call within 300 ms (its cap; a caller could ask for less).
    let orders = Process::start(
        "orders",
        &[
            ("INVENTORY_ADDR", inventory.uri()),
            ("GRPC_REQUEST_TIMEOUT", "300ms".into()),
        ],
    )
    .await;
    let timeout = Duration::from_millis(300);
    let client = channel(
        inventory.addr,
        &[
            ("GRPC_CLIENT_TIMEOUT", "300ms"),
            ("GRPC_CLIENT_BREAKER_FAILURES", "3"),
            ("GRPC_CLIENT_BREAKER_OPEN", "2s"),
        ],
    );
    let breaker = client.breaker();
    let get = || {
        let mut inventory = InventoryServiceClient::new(client.clone());
        async move {
            let request = GetProductRequest {
                sku: "SKU-001".into(),
            };
            inventory.get_product(request).await.map(drop)
        }
    };
    get().await.expect("inventory answers");

    inventory.pause();
    // Deadlines fire on time, whatever the hung peer does.
    for _ in 0..3 {
        let start = Instant::now();
        let code = get().await.unwrap_err().code();
        let took = start.elapsed();
        eprintln!("hung inventory: DEADLINE_EXCEEDED after {took:?} (deadline {timeout:?})");
        assert_eq!(code, Code::DeadlineExceeded);
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(700),
            "{took:?}"
        );
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    // Open: every call fails at once, without the network.
    let n: u32 = 1000;
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(get().await.unwrap_err().code(), Code::Unavailable);
    }
    let per_call = start.elapsed() / n;
    eprintln!("breaker open: {per_call:?} per call over {n} calls");
    assert!(per_call < Duration::from_millis(1), "{per_call:?} per call");

    // Two hops: orders serves a PlaceOrder within 300 ms, so its call to inventory
    // gives up then too (DEADLINE_EXCEEDED within 0.5 s), instead of after its own
    // GRPC_CLIENT_TIMEOUT (5 s), and orders answers in time. (This client waits
    // longer, so that it does not hang up first, and makes one attempt: orders'
    // UNAVAILABLE would be retried.)
    let settings = [("GRPC_CLIENT_RETRY_MAX_ATTEMPTS", "1")];
    let mut orders_client = OrderServiceClient::new(channel(orders.addr, &settings));
    let start = Instant::now();
    let answer = orders_client.place_order(order("hung", "SKU-001")).await;
    let code = answer.unwrap_err().code();
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Unavailable),
        "{code:?}"
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?} {code:?}");
    let pricing = ["rpc_method=\"GetProduct\"", "rpc_grpc_status_code=\"4\""];
    let in_time = [pricing[0], pricing[1], "le=\"0.5\""];
    eventually(
        "orders' call to inventory ends at the propagated deadline",
        || async {
            let timely = metric(&orders, "rpc_client_call_duration_seconds_bucket", &in_time);
            timely.await.is_some_and(|count| count >= 1.0)
        },
    )
    .await;

    // Recovery: after SIGCONT, a half-open probe succeeds and closes the breaker.
    inventory.resume();
    eventually("a probe closes the breaker", || async {
        get().await.is_ok()
    })
    .await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    let metrics = shared::metrics::render();
    let upstream = format!("upstream=\"http://{}/\"", inventory.addr);
    for state in ["open", "half_open", "closed"] {
        let line = metrics.lines().find(|l| {
            l.starts_with("rpc_client_breaker_transitions_total")
                && l.contains(&upstream)
                && l.contains(&format!("state=\"{state}\""))
        });
        assert!(line.is_some(), "no transition to {state} in\n{metrics}");
    }

    orders.stop().await;
    inventory.stop().await;
}
