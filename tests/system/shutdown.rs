//! SIGTERM under load, as Kubernetes sends it on every rollout, against the real
//! binaries: readiness turns NOT_SERVING first while calls are still served, no call
//! in flight fails, streams are ended, and the process exits within its grace period
//! even when a client holds a stream open that the server cannot end.

use crate::{processes, support};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use contracts::inventory::v1::RestockProductsRequest;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::{GetOrderRequest, ListOrdersRequest, OrderStatus, WatchOrderRequest};
use processes::Process;
use support::InventoryProxy;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SHUTDOWN_DELAY: Duration = Duration::from_millis(500);
const GRACE_PERIOD: Duration = Duration::from_secs(3);
/// Orders whose saga is held at its first step when SIGTERM arrives.
const HELD_ORDERS: usize = 5;
/// Clients calling in a loop until readiness tells them to go elsewhere.
const CLIENTS: usize = 4;

/// A new connection to `uri`, as a separate client (or a kubelet probe) has.
fn connect(uri: &str) -> Channel {
    Endpoint::from_shared(uri.to_owned())
        .unwrap()
        .connect_lazy()
}

/// A `Watch` on the `readiness` health name, after its first answer (SERVING).
async fn watch_readiness(uri: &str) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let request = HealthCheckRequest {
        service: "readiness".into(),
    };
    let mut watch = HealthClient::new(connect(uri))
        .watch(request)
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    watch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_call_and_ends_within_the_grace_period() {
    let (inventory, payments) = tokio::join!(
        Process::start("inventory", &[]),
        Process::start("payments", &[]),
    );
    // Orders reaches inventory through a proxy that can hold its calls: the held
    // sagas keep PlaceOrder calls in flight for as long as the test wants.
    let proxy = InventoryProxy::start().await;
    let client_config = shared::ClientConfig::from_env(&shared::Env::default()).unwrap();
    proxy.forward_to(shared::client::channel(
        inventory.addr,
        &client_config,
        contracts::RETRY_SAFE_METHODS,
    ));
    let orders = Process::start(
        "orders",
        &[
            ("INVENTORY_ADDR", format!("http://{}", proxy.addr())),
            ("PAYMENTS_ADDR", payments.uri()),
            ("SHUTDOWN_DELAY", "500ms".into()),
            ("SHUTDOWN_GRACE_PERIOD", "3s".into()),
        ],
    )
    .await;
    // On one CPU, as in a pod of k8s/, the service runs on a single thread.
    if cfg!(target_os = "linux") {
        assert_eq!(orders.runtime().as_deref(), Some("current_thread"));
    }
    let uri = orders.uri();
    let client = OrderServiceClient::new(connect(&uri));

    proxy.hold_reservations();
    let mut placing = JoinSet::new();
    for n in 0..HELD_ORDERS {
        let mut client = client.clone();
        placing.spawn(async move {
            client
                .place_order(support::place_order(
                    &format!("sigterm-{n}"),
                    "cus_sigterm",
                    "SKU-001",
                ))
                .await
        });
    }
    proxy.reservations_held(HELD_ORDERS).await;
    let pending = client
        .clone()
        .list_orders(ListOrdersRequest {
            customer_id: "cus_sigterm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    let watched = pending[0].order_id.clone();
    let mut watch = client
        .clone()
        .watch_order(WatchOrderRequest {
            order_id: watched.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().order.unwrap().status(),
        OrderStatus::Pending
    );

    // Steady load: each client calls back to back, on its own connection, until
    // readiness turns NOT_SERVING (as a load balancer stops routing), and records
    // every call that failed.
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut load = JoinSet::new();
    for _ in 0..CLIENTS {
        let mut client = OrderServiceClient::new(connect(&uri));
        let mut readiness = watch_readiness(&uri).await;
        let (failed, calls, watched) = (failed.clone(), calls.clone(), watched.clone());
        load.spawn(async move {
            loop {
                let request = GetOrderRequest {
                    order_id: watched.clone(),
                };
                tokio::select! {
                    biased;
                    update = readiness.next() => {
                        let status = update.unwrap().unwrap().status;
                        assert_eq!(status, ServingStatus::NotServing as i32);
                        return;
                    }
                    answer = client.get_order(request) => {
                        calls.fetch_add(1, Ordering::Relaxed);
                        if let Err(status) = answer {
                            failed.lock().unwrap().push(status);
                        }
                    }
                }
            }
        });
    }
    let mut readiness = watch_readiness(&uri).await;
    shared::testing::eventually("the load to be running", || async {
        calls.load(Ordering::Relaxed) > 200
    })
    .await;

    let sigterm = Instant::now();
    orders.terminate();
    let update = readiness.next().await.unwrap().unwrap();
    let not_ready = sigterm.elapsed();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // Readiness flips first: during SHUTDOWN_DELAY the server still takes new calls,
    // on new connections too, while load balancers catch up.
    let late = OrderServiceClient::new(connect(&uri))
        .get_order(GetOrderRequest {
            order_id: watched.clone(),
        })
        .await;
    assert!(
        late.is_ok(),
        "still serving after readiness flipped: {late:?}"
    );
    load.join_all().await;

    // The drain ends the open WatchOrder stream, telling the client to watch again.
    let ended = watch.next().await.unwrap().unwrap_err();
    let drain_began = sigterm.elapsed();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(drain_began >= SHUTDOWN_DELAY, "{drain_began:?}");

    // The held sagas finish after the drain began, and their calls succeed.
    proxy.open_reservations();
    for placed in placing.join_all().await {
        let order = placed
            .expect("an in-flight PlaceOrder completes")
            .into_inner();
        assert_eq!(order.order.unwrap().status(), OrderStatus::Confirmed);
    }
    orders.exited().await;
    let exited = sigterm.elapsed();
    let failed = failed.lock().unwrap();
    eprintln!(
        "{} calls under load, {} failed; readiness NOT_SERVING {not_ready:?} after SIGTERM, \
         drain began at {drain_began:?}, exit at {exited:?}",
        calls.load(Ordering::Relaxed),
        failed.len()
    );
    assert!(failed.is_empty(), "no call failed: {failed:?}");
    assert!(not_ready < SHUTDOWN_DELAY, "{not_ready:?}");
    assert!(exited < SHUTDOWN_DELAY + GRACE_PERIOD, "{exited:?}");
}

#[tokio::test]
async fn a_stream_the_server_cannot_end_does_not_hold_the_exit_past_the_grace_period() {
    let inventory = Process::start("inventory", &[("SHUTDOWN_GRACE_PERIOD", "1s".into())]).await;
    let uri = inventory.uri();
    // A client-streaming call whose client never finishes sending, and a health
    // Watch: the first only the grace period can end, the second the drain ends.
    let (deliveries, stream) = tokio::sync::mpsc::channel(1);
    deliveries
        .send(RestockProductsRequest {
            sku: "SKU-001".into(),
            quantity: 1,
        })
        .await
        .unwrap();
    let mut client = InventoryServiceClient::new(connect(&uri));
    let restock = tokio::spawn(async move {
        client
            .restock_products(tokio_stream::wrappers::ReceiverStream::new(stream))
            .await
    });
    let mut readiness = watch_readiness(&uri).await;

    let sigterm = Instant::now();
    inventory.terminate();
    let update = readiness.next().await.unwrap().unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // The drain ends health Watch streams, possibly after one more NOT_SERVING.
    while let Some(Ok(update)) = readiness.next().await {
        assert_eq!(update.status, ServingStatus::NotServing as i32);
    }
    let logs = inventory.exited().await;
    let exited = sigterm.elapsed();
    eprintln!("exit {exited:?} after SIGTERM with a stream held open");
    assert!(exited < Duration::from_secs(3), "{exited:?}");
    assert!(
        logs.iter().any(|line| line.contains("drain timed out")),
        "the cut-short drain is logged"
    );
    // The held call ends with the process, as a failure the client can see.
    assert!(restock.await.unwrap().is_err());
    drop(deliveries);
}
