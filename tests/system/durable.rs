//! Nothing is lost when a process dies at the worst moment: the services as separate
//! processes on a real NATS JetStream and a real PostgreSQL (`make test` provides both:
//! `nats-server` from scripts/tools.sh, PostgreSQL from scripts/with-postgres.sh).
//!
//! Each order makes two events (placed, then its outcome) and so two notifications;
//! "exactly once" below means each event id notified once. The notifications service is
//! how these tests see what was delivered, so `make remove-service NAME=notifications`
//! removes them with it.

// remove-service: notifications {
#[path = "durable/replicated.rs"]
mod replicated;

use crate::{processes, support};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use contracts::inventory::v1::GetProductRequest;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::notifications::v1::notification_service_client::NotificationServiceClient;
use contracts::notifications::v1::{ListNotificationsRequest, Notification};
use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::{GetOrderRequest, ListOrdersRequest, OrderStatus};
use contracts::payments::v1::payment_service_client::PaymentServiceClient;
use contracts::payments::v1::{ListPaymentsRequest, PaymentStatus};
use processes::{PATIENCE, Process};
use shared::testing::{NatsServer, eventually, fresh_database};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// inventory, payments, orders and notifications, each its own process, on one NATS
/// server and one database (each service in its own schema).
struct Durable {
    /// Behind a lock so that a test can kill and restart it while others use the system.
    nats: Mutex<NatsServer>,
    env: Vec<(&'static str, String)>,
    inventory: Process,
    payments: Process,
    /// `None` while stopped (or killed) by the test.
    notifications: Option<Process>,
    orders: Option<Process>,
}

impl Durable {
    async fn start() -> Self {
        let nats = NatsServer::start().await;
        let env = vec![
            ("NATS_URL", nats.url()),
            ("DATABASE_URL", fresh_database().await),
        ];
        let (inventory, payments, notifications) = tokio::join!(
            Process::start("inventory", &env),
            Process::start("payments", &env),
            Process::start("notifications", &env),
        );
        let mut system = Self {
            nats: Mutex::new(nats),
            env,
            inventory,
            payments,
            notifications: Some(notifications),
            orders: None,
        };
        system.start_orders().await;
        system
    }

    async fn start_orders(&mut self) {
        self.start_orders_with(&[]).await;
    }

    /// Starts orders with `extra` added to its environment.
    async fn start_orders_with(&mut self, extra: &[(&'static str, &str)]) {
        let mut env = self.env.clone();
        // These tests kill orders mid-publication: what its relay claimed waits this.
        env.push(("OUTBOX_CLAIM_LEASE", "1s".to_owned()));
        env.push(("INVENTORY_ADDR", self.inventory.uri()));
        env.push(("PAYMENTS_ADDR", self.payments.uri()));
        env.extend(
            extra
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned())),
        );
        self.orders = Some(Process::start("orders", &env).await);
    }

    fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(channel(&self.inventory))
    }

    fn payments(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(channel(&self.payments))
    }

    /// SKU-001's stock: (available, reserved, sold).
    async fn stock(&self) -> (i64, i64, i64) {
        let product = self
            .inventory()
            .get_product(GetProductRequest {
                sku: "SKU-001".into(),
            })
            .await
            .expect("GetProduct")
            .into_inner()
            .product
            .expect("a product");
        (product.available, product.reserved, product.sold)
    }

    async fn start_notifications(&mut self) {
        self.notifications = Some(Process::start("notifications", &self.env).await);
    }

    fn orders(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(channel(self.orders.as_ref().expect("orders runs")))
    }

    fn notifications(&self) -> NotificationServiceClient<Channel> {
        let notifications = self.notifications.as_ref().expect("notifications runs");
        NotificationServiceClient::new(channel(notifications))
    }

    /// Places an order of one SKU-001 for `customer`, and returns it once final.
    async fn place(&self, request_id: &str, customer: &str) -> String {
        let order = self
            .orders()
            .place_order(support::place_order(request_id, customer, "SKU-001"))
            .await
            .unwrap_or_else(|status| panic!("PlaceOrder {request_id}: {status:?}"))
            .into_inner()
            .order
            .expect("an order");
        assert_eq!(order.status(), OrderStatus::Confirmed, "{order:?}");
        order.order_id
    }

    /// How many notifications each event id of `customer` has, by order id.
    async fn notified(&self, customer: &str) -> BTreeMap<String, Vec<String>> {
        let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for notification in notifications_of(self.notifications(), customer).await {
            by_order
                .entry(notification.order_id)
                .or_default()
                .push(notification.event_id);
        }
        by_order
    }

    /// Waits until every order of `orders` has its two notifications, then checks that
    /// no event was notified twice and nothing else was notified.
    async fn assert_notified_once(&self, customer: &str, orders: &BTreeSet<String>) {
        eventually("every order's two notifications", || async {
            let notified = self.notified(customer).await;
            orders
                .iter()
                .all(|id| notified.get(id).is_some_and(|events| events.len() >= 2))
        })
        .await;
        let notified = self.notified(customer).await;
        assert_eq!(
            notified.keys().cloned().collect::<BTreeSet<_>>(),
            *orders,
            "notifications of orders never placed"
        );
        for (order, events) in &notified {
            let distinct: BTreeSet<_> = events.iter().collect();
            assert_eq!(distinct.len(), events.len(), "{order}: {events:?}");
            assert_eq!(
                distinct,
                [format!("{order}.placed"), format!("{order}.confirmed")]
                    .iter()
                    .collect(),
            );
        }
    }
}

/// Every notification of `customer`, page after page.
async fn notifications_of(
    mut client: NotificationServiceClient<Channel>,
    customer: &str,
) -> Vec<Notification> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_notifications(ListNotificationsRequest {
                customer_id: customer.into(),
                page_size: 100,
                page_token,
            })
            .await
            .expect("ListNotifications")
            .into_inner();
        all.extend(page.notifications);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

fn channel(process: &Process) -> Channel {
    Channel::from_shared(process.uri())
        .expect("a valid URI")
        .connect_lazy()
}

#[tokio::test]
async fn an_event_committed_but_never_published_is_published_after_a_restart() {
    let mut system = Durable::start().await;
    // With the broker down, the order commits (with its events, in the outbox) but
    // nothing can be published: then orders dies without a chance to clean up.
    system.nats.lock().await.kill();
    let order = system.place("outbox-1", "cus_outbox").await;
    system.orders.take().expect("orders runs").kill();
    assert!(system.notified("cus_outbox").await.is_empty());

    system.nats.lock().await.restart().await;
    system.start_orders().await;
    system
        .assert_notified_once("cus_outbox", &BTreeSet::from([order]))
        .await;
}

#[tokio::test]
async fn a_consumer_that_was_down_gets_every_event_once() {
    let mut system = Durable::start().await;
    let notifications = system.notifications.take().expect("notifications runs");
    notifications.stop().await;

    let mut placing = JoinSet::new();
    let system = Arc::new(system);
    for i in 0..100 {
        let system = system.clone();
        placing.spawn(async move { system.place(&format!("down-{i}"), "cus_down").await });
    }
    let orders: BTreeSet<String> = placing.join_all().await.into_iter().collect();
    assert_eq!(orders.len(), 100);

    let mut system = Arc::into_inner(system).expect("every task is done");
    system.start_notifications().await;
    system.assert_notified_once("cus_down", &orders).await;
}

#[tokio::test]
async fn orders_placed_while_the_broker_restarts_all_get_their_events() {
    let system = Arc::new(Durable::start().await);
    const ORDERS: usize = 60;
    let placed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());

    let mut placing = JoinSet::new();
    for worker in 0..4 {
        let (system, placed, progress) = (system.clone(), placed.clone(), progress.clone());
        placing.spawn(async move {
            let mut orders = Vec::new();
            for i in (worker..ORDERS).step_by(4) {
                orders.push(system.place(&format!("restart-{i}"), "cus_restart").await);
                placed.fetch_add(1, Ordering::SeqCst);
                progress.notify_waiters();
            }
            orders
        });
    }
    let wait_for = |count: usize| {
        let (placed, progress) = (placed.clone(), progress.clone());
        async move {
            while placed.load(Ordering::SeqCst) < count {
                let notified = progress.notified();
                if placed.load(Ordering::SeqCst) >= count {
                    break;
                }
                tokio::time::timeout(PATIENCE, notified)
                    .await
                    .expect("orders keep being placed");
            }
        }
    };
    // The broker goes away a third of the way in and comes back two thirds in: orders
    // placed meanwhile wait in the outbox.
    wait_for(ORDERS / 3).await;
    system.nats.lock().await.kill();
    wait_for(2 * ORDERS / 3).await;
    system.nats.lock().await.restart().await;

    let orders: BTreeSet<String> = placing.join_all().await.into_iter().flatten().collect();
    assert_eq!(orders.len(), ORDERS);
    system.assert_notified_once("cus_restart", &orders).await;
}

#[tokio::test]
async fn an_order_whose_saga_died_with_orders_is_finished_after_a_restart() {
    let mut system = Durable::start().await;
    // This orders waits as long as it takes for payments: its saga is still waiting
    // on the charge when it dies, never compensating on a timeout first.
    system.orders.take().expect("orders runs").stop().await;
    system
        .start_orders_with(&[
            ("GRPC_CLIENT_TIMEOUT", "5m"),
            ("GRPC_CLIENT_CONNECT_TIMEOUT", "5m"),
        ])
        .await;
    let (available, reserved, sold) = system.stock().await;
    assert_eq!(reserved, 0);

    // Payments hangs: the saga reserves the stock, then waits on the charge.
    system.payments.pause();
    let mut orders = system.orders();
    let placing = tokio::spawn(async move {
        orders
            .place_order(support::place_order("killed-1", "cus_killed", "SKU-001"))
            .await
    });
    eventually("the order's stock reserved", || async {
        system.stock().await.1 == 1
    })
    .await;
    // Orders dies mid-saga: the order is PENDING with its stock reserved, and the
    // charge may or may not be taken once payments goes on.
    system.orders.take().expect("orders runs").kill();
    assert!(
        placing.await.expect("the call ends").is_err(),
        "the caller sees orders die"
    );
    system.payments.resume();

    system
        .start_orders_with(&[
            ("SAGA_RESUME_AFTER", "200ms"),
            ("SAGA_RESUME_INTERVAL", "100ms"),
        ])
        .await;
    let listed = system
        .orders()
        .list_orders(ListOrdersRequest {
            customer_id: "cus_killed".into(),
            ..Default::default()
        })
        .await
        .expect("ListOrders")
        .into_inner()
        .orders;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0].order_id.clone();

    eventually("the resumed order confirmed", || async {
        let order = system
            .orders()
            .get_order(GetOrderRequest {
                order_id: id.clone(),
            })
            .await
            .expect("GetOrder")
            .into_inner()
            .order
            .expect("an order");
        assert!(
            matches!(
                order.status(),
                OrderStatus::Pending | OrderStatus::Confirmed
            ),
            "{order:?}"
        );
        order.status() == OrderStatus::Confirmed
    })
    .await;
    assert_eq!(
        system.stock().await,
        (available - 1, 0, sold + 1),
        "one unit sold, nothing left reserved"
    );
    let payments = system
        .payments()
        .list_payments(ListPaymentsRequest {
            order_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("ListPayments")
        .into_inner()
        .payments;
    assert_eq!(payments.len(), 1, "one charge: {payments:?}");
    assert_eq!(payments[0].status(), PaymentStatus::Captured);
    system
        .assert_notified_once("cus_killed", &BTreeSet::from([id.clone()]))
        .await;

    let resumed = system
        .orders
        .take()
        .expect("orders runs")
        .stop()
        .await
        .into_iter()
        .filter(|line| line.contains("resuming the saga of a stranded order"))
        .collect::<Vec<_>>();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert!(resumed[0].contains(&id), "{}", resumed[0]);
}
// remove-service: notifications }
