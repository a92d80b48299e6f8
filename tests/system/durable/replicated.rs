// remove-service: notifications {
//! Many replicas, one truth: **two processes of every service** on one PostgreSQL and
//! one NATS, each replica on its own address and every client balancing over both (as
//! Kubernetes' headless Services make them do). A burst of orders goes through both
//! gateways, a quarter of them sent again at once with the same `Idempotency-Key`
//! through the other gateway, while one replica each of orders, payments and
//! notifications is SIGKILLed mid-burst and restarted. Then the invariants, from the
//! services' APIs and the card network's own log lines, are checked and printed:
//! every order final, one order per key, at most one authorization per order, captured
//! money equal to the confirmed orders' totals, stock conserved, every confirmed order
//! notified exactly once, and a WatchOrder and a StreamNotifications held on a replica
//! that did not process the order saw its end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contracts::inventory::v1::GetProductRequest;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::notifications::v1::StreamNotificationsRequest;
use contracts::notifications::v1::notification_service_client::NotificationServiceClient;
use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::{ListOrdersRequest, Order, OrderStatus, WatchOrderRequest};
use contracts::payments::v1::payment_service_client::PaymentServiceClient;
use contracts::payments::v1::{ListPaymentsRequest, PaymentStatus};
use gateway::testing::HttpClient;
use serde_json::{Value, json};
use shared::testing::{NatsServer, eventually, fresh_database};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::processes::{PATIENCE, Process};

/// Orders of the burst, and how many of them are in flight at once.
const ORDERS: usize = 240;
const IN_FLIGHT: usize = 16;
/// Every this many orders, the same request also goes through the other gateway at once.
const RETRIED_EVERY: usize = 4;
/// Orders done when one replica each of orders, payments and notifications is killed.
const KILL_AFTER: usize = 80;
const CUSTOMERS: usize = 8;
/// The product every order buys one unit of (500 in stock at start).
const SKU: &str = "SKU-005";
/// Orders placed while both payments replicas hang, watched on the other orders replica.
const WATCHED: usize = 6;
/// The final states of an order, as the gateway writes them (proto3 JSON: enum names).
const FINAL: [&str; 3] = [
    "ORDER_STATUS_CONFIRMED",
    "ORDER_STATUS_REJECTED",
    "ORDER_STATUS_FAILED",
];
/// How long one order may take, its retries included.
const ORDER_PATIENCE: Duration = Duration::from_secs(120);

/// One service's two replicas; `None` while one is down.
struct Replicas {
    name: &'static str,
    processes: [Option<Process>; 2],
    /// Each replica's gRPC port: a restarted replica listens where it did, as a pod
    /// behind the same Service name would be found again.
    ports: [u16; 2],
    /// The lines of the processes that ended (killed), for the checks of the end.
    ended: Vec<String>,
}

impl Replicas {
    async fn start(name: &'static str, env: &[(&'static str, String)]) -> Self {
        let (a, b) = tokio::join!(Process::start(name, env), Process::start(name, env));
        Self {
            name,
            ports: [a.addr.port(), b.addr.port()],
            processes: [Some(a), Some(b)],
            ended: Vec::new(),
        }
    }

    /// Both addresses, as an upstream variable lists them.
    fn addrs(&self) -> String {
        let uri = |port: u16| format!("http://127.0.0.1:{port}");
        format!("{},{}", uri(self.ports[0]), uri(self.ports[1]))
    }

    fn get(&self, replica: usize) -> &Process {
        let process = self.processes[replica].as_ref();
        process.unwrap_or_else(|| panic!("{} replica {replica} runs", self.name))
    }

    fn channel(&self, replica: usize) -> Channel {
        Channel::from_shared(self.get(replica).uri())
            .expect("a valid URI")
            .connect_lazy()
    }

    /// SIGKILL, then a new process on the same port.
    async fn kill_and_restart(&mut self, replica: usize, env: &[(&'static str, String)]) {
        let killed = self.processes[replica].take().expect("the replica runs");
        self.ended.extend(killed.kill());
        let mut env = env.to_vec();
        env.push(("LISTEN_ADDR", format!("127.0.0.1:{}", self.ports[replica])));
        self.processes[replica] = Some(Process::start(self.name, &env).await);
    }

    /// SIGTERM to both (each must exit cleanly); every line either wrote, the killed
    /// processes' included.
    async fn stop(mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.ended);
        for process in self.processes.iter_mut().filter_map(Option::take) {
            lines.extend(process.stop().await);
        }
        lines
    }
}

/// What a client saw of one Idempotency-Key.
#[derive(Debug)]
struct Answer {
    key: String,
    customer: String,
    order_id: String,
    status: String,
    /// Answers that were not final (a replica died under the call): retried.
    retries: usize,
}

/// POSTs one order through `gateways[first]`, retrying through the other gateway on
/// anything but a final answer, as a client with an Idempotency-Key may.
async fn place(gateways: &[HttpClient; 2], first: usize, key: &str, customer: &str) -> Answer {
    let body = json!({"customerId": customer, "items": [{"sku": SKU, "quantity": 1}], "cardToken": "tok_visa"});
    let started = Instant::now();
    let mut retries = 0;
    loop {
        let gateway = &gateways[(first + retries) % 2];
        let response = gateway
            .post_json("/v1/orders", &[("Idempotency-Key", key)], &body)
            .await;
        if response.status.is_success() {
            let order = response.json();
            let status = order["status"].as_str().unwrap_or_default().to_owned();
            assert!(
                FINAL.contains(&status.as_str()),
                "an answer is final: {order}"
            );
            return Answer {
                key: key.to_owned(),
                customer: customer.to_owned(),
                order_id: order["orderId"].as_str().expect("an order id").to_owned(),
                status,
                retries,
            };
        }
        assert!(
            response.status.is_server_error() || response.status.as_u16() == 429,
            "{key}: a client error is a bug here: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        assert!(
            started.elapsed() < ORDER_PATIENCE,
            "{key}: no final answer within {ORDER_PATIENCE:?}; last: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        retries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every order of `customer`, through `orders`.
async fn orders_of(orders: Channel, customer: &str) -> Vec<Order> {
    let mut client = OrderServiceClient::new(orders);
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_orders(ListOrdersRequest {
                customer_id: customer.into(),
                page_size: 100,
                page_token,
            })
            .await
            .expect("ListOrders")
            .into_inner();
        all.extend(page.orders);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// The event ids notified to `customer`, each with how often.
async fn notified(notifications: Channel, customer: &str) -> BTreeMap<String, usize> {
    let client = NotificationServiceClient::new(notifications);
    let mut events = BTreeMap::new();
    for notification in super::notifications_of(client, customer).await {
        *events.entry(notification.event_id).or_default() += 1;
    }
    events
}

/// A field of a JSON log line, at the top or under `fields`.
fn log_field(line: &Value, key: &str) -> Option<String> {
    let value = line.get(key).or_else(|| line.get("fields")?.get(key))?;
    Some(
        value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned),
    )
}

/// SKU's (available, reserved, sold).
async fn stock(inventory: Channel) -> (i64, i64, i64) {
    let product = InventoryServiceClient::new(inventory)
        .get_product(GetProductRequest { sku: SKU.into() })
        .await
        .expect("GetProduct")
        .into_inner()
        .product
        .expect("a product");
    (product.available, product.reserved, product.sold)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_of_every_service_agree_while_replicas_die() {
    let started = Instant::now();
    let nats = NatsServer::start().await;
    let env: Vec<(&'static str, String)> = vec![
        ("NATS_URL", nats.url()),
        ("DATABASE_URL", fresh_database().await),
        // What a dead replica left is taken over quickly (defaults: 30 s, 10 s, 30 s).
        ("NATS_ACK_WAIT", "2s".into()),
        ("SAGA_RESUME_AFTER", "1s".into()),
        ("SAGA_RESUME_INTERVAL", "250ms".into()),
        ("AUTHORIZATION_TIMEOUT", "2s".into()),
    ];
    // Replicas of one service start together: their migrations race, as in a rollout.
    let (inventory, mut payments, mut notifications) = tokio::join!(
        Replicas::start("inventory", &env),
        Replicas::start("payments", &env),
        Replicas::start("notifications", &env),
    );
    let mut orders_env = env.clone();
    orders_env.push(("INVENTORY_ADDR", inventory.addrs()));
    orders_env.push(("PAYMENTS_ADDR", payments.addrs()));
    let mut orders = Replicas::start("orders", &orders_env).await;
    let mut gateway_env = env.clone();
    gateway_env.extend([
        ("ORDERS_ADDR", orders.addrs()),
        ("INVENTORY_ADDR", inventory.addrs()),
        ("NOTIFICATIONS_ADDR", notifications.addrs()),
        // One test client sends everything: no per-client rate limit.
        ("GATEWAY_RATE_LIMIT", "0".into()),
    ]);
    let gateways = Replicas::start("gateway", &gateway_env).await;
    let http = [
        HttpClient::new(gateways.get(0).addr),
        HttpClient::new(gateways.get(1).addr),
    ];
    let initial = stock(inventory.channel(0)).await;
    let customers: Vec<String> = (0..CUSTOMERS).map(|c| format!("cus_rep_{c}")).collect();

    // Held open on notifications replica 1 (never killed) from the start: what each
    // customer's stream delivers, whichever replica consumed the event.
    let streamed: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let mut streams = JoinSet::new();
    for customer in customers.iter().cloned().chain(["cus_watch".to_owned()]) {
        let mut client = NotificationServiceClient::new(notifications.channel(1));
        let mut stream = client
            .stream_notifications(StreamNotificationsRequest {
                customer_id: customer.clone(),
            })
            .await
            .expect("StreamNotifications")
            .into_inner();
        let streamed = streamed.clone();
        streams.spawn(async move {
            while let Some(message) = stream.message().await.transpose() {
                let notification = message
                    .unwrap_or_else(|status| panic!("{customer}'s stream broke: {status:?}"))
                    .notification
                    .expect("a notification");
                let mut streamed = streamed.lock().unwrap();
                streamed
                    .entry(customer.clone())
                    .or_default()
                    .insert(notification.event_id);
            }
        });
    }

    // WatchOrder on the replica that does not run the saga: both payments replicas
    // hang, orders replica 1 places the orders and waits on the charges, replica 0
    // watches them from PENDING to their end.
    payments.get(0).pause();
    payments.get(1).pause();
    let mut watched_places = JoinSet::new();
    for i in 0..WATCHED {
        let mut client = OrderServiceClient::new(orders.channel(1));
        watched_places.spawn(async move {
            let mut request = crate::support::place_order(&format!("watch-{i}"), "cus_watch", SKU);
            request.items[0].quantity = 1;
            client.place_order(request).await
        });
    }
    eventually("the watched orders pending", || async {
        orders_of(orders.channel(0), "cus_watch").await.len() == WATCHED
    })
    .await;
    let mut watches = JoinSet::new();
    for order in orders_of(orders.channel(0), "cus_watch").await {
        let mut client = OrderServiceClient::new(orders.channel(0));
        let mut stream = client
            .watch_order(WatchOrderRequest {
                order_id: order.order_id.clone(),
            })
            .await
            .expect("WatchOrder")
            .into_inner();
        let first = stream.message().await.expect("a healthy stream");
        let first = first
            .and_then(|m| m.order)
            .expect("the order's current state");
        assert_eq!(first.status(), OrderStatus::Pending, "{first:?}");
        watches.spawn(async move {
            let mut last = first;
            while let Some(message) = stream.message().await.expect("a healthy stream") {
                last = message.order.expect("an order");
            }
            last
        });
    }
    payments.get(0).resume();
    payments.get(1).resume();
    let watched: Vec<Order> = tokio::time::timeout(PATIENCE, watches.join_all())
        .await
        .expect("every watch ends");
    for order in &watched {
        assert!(
            matches!(
                order.status(),
                OrderStatus::Confirmed | OrderStatus::Rejected | OrderStatus::Failed
            ),
            "a watch ends with the order final: {order:?}"
        );
    }
    for placed in watched_places.join_all().await {
        placed.expect("PlaceOrder of a watched order");
    }

    // The burst, through both gateways; one replica each of orders, payments and
    // notifications dies a third of the way in, and comes back.
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let mut burst = JoinSet::new();
    for i in 0..ORDERS {
        let (gate, done, progress) = (gate.clone(), done.clone(), progress.clone());
        let http = http.clone();
        let customer = customers[i % CUSTOMERS].clone();
        burst.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("the gate stays open");
            let key = format!("rep-{i}");
            let answers = if i % RETRIED_EVERY == 0 {
                let (a, b) = tokio::join!(
                    place(&http, i % 2, &key, &customer),
                    place(&http, (i + 1) % 2, &key, &customer),
                );
                vec![a, b]
            } else {
                vec![place(&http, i % 2, &key, &customer).await]
            };
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            progress.notify_waiters();
            answers
        });
    }
    loop {
        let notified = progress.notified();
        if done.load(std::sync::atomic::Ordering::SeqCst) >= KILL_AFTER {
            break;
        }
        tokio::time::timeout(ORDER_PATIENCE, notified)
            .await
            .expect("orders keep being placed");
    }
    let killed_at = done.load(std::sync::atomic::Ordering::SeqCst);
    tokio::join!(
        orders.kill_and_restart(0, &orders_env),
        payments.kill_and_restart(0, &env),
        notifications.kill_and_restart(0, &env),
    );
    let restarted_at = done.load(std::sync::atomic::Ordering::SeqCst);
    let answers: Vec<Answer> = burst.join_all().await.into_iter().flatten().collect();
    let burst_done = started.elapsed();

    // One order per key: every answer to a key names the same order.
    let mut by_key: HashMap<&str, &Answer> = HashMap::new();
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for answer in &answers {
        let first = by_key.entry(&answer.key).or_insert(answer);
        assert_eq!(first.order_id, answer.order_id, "one order per key");
        assert_eq!(first.status, answer.status, "one outcome per key");
    }
    for answer in by_key.values() {
        *statuses.entry(&answer.status).or_default() += 1;
    }
    assert_eq!(by_key.len(), ORDERS);
    let retried_answers = answers.iter().filter(|a| a.retries > 0).count();

    // Every order final, and no order but those of a key.
    let mut all_orders: Vec<Order> = watched.clone();
    for customer in &customers {
        let listed = orders_of(orders.channel(1), customer).await;
        let keys = by_key.values().filter(|a| &a.customer == customer).count();
        assert_eq!(listed.len(), keys, "{customer}: one order per key");
        all_orders.extend(listed);
    }
    for order in &all_orders {
        assert_ne!(order.status(), OrderStatus::Pending, "final: {order:?}");
        if let Some(answer) = by_key.get(order.request_id.as_str()) {
            assert_eq!(answer.order_id, order.order_id, "{order:?}");
        }
    }
    let confirmed: Vec<&Order> = all_orders
        .iter()
        .filter(|o| o.status() == OrderStatus::Confirmed)
        .collect();

    // Captured money equals the confirmed orders' totals, order by order.
    let mut payments_client = PaymentServiceClient::new(payments.channel(1));
    let (mut captured_total, mut confirmed_total) = (0i64, 0i64);
    for order in &all_orders {
        let charged = payments_client
            .list_payments(ListPaymentsRequest {
                order_id: order.order_id.clone(),
                ..Default::default()
            })
            .await
            .expect("ListPayments")
            .into_inner()
            .payments;
        let captured: i64 = charged
            .iter()
            .filter(|p| p.status() == PaymentStatus::Captured)
            .map(|p| p.amount.as_ref().map_or(0, |m| m.amount_minor))
            .sum();
        assert!(charged.len() <= 1, "one payment per order: {charged:?}");
        let total = order.total.as_ref().map_or(0, |m| m.amount_minor);
        if order.status() == OrderStatus::Confirmed {
            assert_eq!(captured, total, "{order:?}: {charged:?}");
            confirmed_total += total;
        } else {
            assert_eq!(captured, 0, "{order:?}: {charged:?}");
        }
        captured_total += captured;
    }
    assert_eq!(captured_total, confirmed_total);

    // Stock conserved: nothing reserved is left, and what was sold is what was confirmed.
    let after = stock(inventory.channel(1)).await;
    assert_eq!(
        after.0 + after.1 + after.2,
        initial.0 + initial.1 + initial.2
    );
    assert_eq!(after.1, 0, "nothing left reserved");
    assert_eq!(
        after.2 - initial.2,
        confirmed.len() as i64,
        "sold = confirmed"
    );

    // Every confirmed order notified exactly once, and seen by the stream held on the
    // replica that lived, whichever replica consumed its event.
    let mut by_customer: BTreeMap<String, Vec<&Order>> = BTreeMap::new();
    for order in &confirmed {
        by_customer
            .entry(order.customer_id.clone())
            .or_default()
            .push(order);
    }
    for (customer, orders) in &by_customer {
        let expected: BTreeSet<String> = orders
            .iter()
            .flat_map(|o| {
                [
                    format!("{}.placed", o.order_id),
                    format!("{}.confirmed", o.order_id),
                ]
            })
            .collect();
        eventually("every confirmed order notified", || async {
            let events = notified(notifications.channel(1), customer).await;
            expected.iter().all(|id| events.contains_key(id))
        })
        .await;
        let events = notified(notifications.channel(0), customer).await;
        for id in &expected {
            assert_eq!(events.get(id), Some(&1), "{customer}: {id} notified once");
        }
        eventually("the stream saw every confirmed order", || async {
            let streamed = streamed.lock().unwrap();
            let seen = streamed.get(customer).cloned().unwrap_or_default();
            orders
                .iter()
                .all(|o| seen.contains(&format!("{}.confirmed", o.order_id)))
        })
        .await;
    }
    streams.abort_all();

    // At most one authorization per order, counted at the card network (both
    // replicas' lines, the killed one's included).
    let stopped = started.elapsed();
    let _ = gateways.stop().await;
    let payment_lines = payments.stop().await;
    let mut keys_by_order: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut authorizations, mut repeated) = (0, 0);
    for line in &payment_lines {
        let Ok(line) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let message = log_field(&line, "message").unwrap_or_default();
        if !message.starts_with("test card network") {
            continue;
        }
        let order = log_field(&line, "order_id").expect("an order id");
        let key = log_field(&line, "idempotency_key").expect("a key");
        if message.ends_with("authorized") {
            authorizations += 1;
        } else {
            repeated += 1;
        }
        keys_by_order.entry(order).or_default().insert(key);
    }
    for (order, keys) in &keys_by_order {
        assert_eq!(keys.len(), 1, "{order}: authorized under {keys:?}");
    }
    assert!(
        keys_by_order.len() >= confirmed.len(),
        "every confirmed order was authorized ({} < {})",
        keys_by_order.len(),
        confirmed.len()
    );

    println!(
        "replicated: {} orders ({} keys sent twice at once, {} answers after a retry) through \
         2 gateways; killed orders, payments and notifications replica 0 after {killed_at} \
         orders, all three back after {restarted_at}; outcomes {statuses:?}; {} confirmed \
         in all; captured {captured_total} = confirmed totals {confirmed_total} (minor \
         units); {authorizations} authorizations for {} orders, {repeated} repeated keys \
         answered again; stock {initial:?} -> {after:?} (available, reserved, sold); \
         {} watched orders ended on the other orders replica; burst {burst_done:.1?}, \
         checks done {stopped:.1?}",
        ORDERS,
        ORDERS / RETRIED_EVERY,
        retried_answers,
        confirmed.len(),
        keys_by_order.len(),
        watched.len(),
    );
    let _ = (
        orders.stop().await,
        notifications.stop().await,
        inventory.stop().await,
    );
}
// remove-service: notifications }
