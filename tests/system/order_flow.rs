//! The order flow across every service, as its clients see it: orders placed over HTTP
//! through the gateway, outcomes checked through each service's own gRPC API. What
//! consumers of the order events make of them is tested in a file named after each.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use contracts::orders::v1::{Order, OrderStatus, WatchOrderRequest};
use contracts::payments::v1::PaymentStatus;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Backend, InventoryProxy, Stock, System, on_both_backends};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The body of `POST /v1/orders`.
fn order(customer: &str, items: &[(&str, i32)], card_token: &str) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity}))
        .collect();
    json!({"customerId": customer, "items": items, "cardToken": card_token})
}

/// The next message of a server stream, waiting at most 10 s (a bound, not a pause).
async fn next<T>(stream: &mut tonic::Streaming<T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a stream message within 10 s")
        .expect("a healthy stream")
}

async fn a_confirmed_order_sells_the_stock_and_charges_once(backend: Backend) {
    let system = System::start(backend).await;
    let before = system.stock("SKU-002").await;

    let body = order("cus_happy", &[("SKU-002", 3)], "tok_visa");
    let placed = system.place("flow-happy", &body).await;
    assert_eq!(placed["status"], "ORDER_STATUS_CONFIRMED", "{placed}");
    let id = placed["orderId"].as_str().unwrap();

    let after = Stock {
        available: before.available - 3,
        reserved: 0,
        sold: before.sold + 3,
    };
    assert_eq!(system.stock("SKU-002").await, after);
    let payments = system.payments_of(id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].status(), PaymentStatus::Captured);
    assert_eq!(placed["paymentId"], payments[0].payment_id.as_str());
    assert_eq!(payments[0].amount.as_ref().unwrap().amount_minor, 3 * 4500);
}

async fn a_declined_card_rejects_the_order_and_leaves_stock_and_money_alone(backend: Backend) {
    let system = System::start(backend).await;
    let before = system.stock("SKU-004").await;

    let body = order("cus_declined", &[("SKU-004", 2)], "tok_declined");
    let placed = system.place("flow-declined", &body).await;
    assert_eq!(placed["status"], "ORDER_STATUS_REJECTED", "{placed}");
    assert!(
        placed["statusReason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{placed}"
    );

    assert_eq!(system.stock("SKU-004").await, before);
    let payments = system
        .payments_of(placed["orderId"].as_str().unwrap())
        .await;
    let captured = payments
        .iter()
        .filter(|p| p.status() == PaymentStatus::Captured);
    assert_eq!(captured.count(), 0, "{payments:?}");
}

async fn a_failure_after_the_charge_refunds_and_restores_the_stock(backend: Backend) {
    let proxy = InventoryProxy::start().await;
    let system = System::start_behind(backend, &proxy).await;
    proxy.fail_commits();
    let before = system.stock("SKU-006").await;

    let body = order("cus_failed", &[("SKU-006", 2)], "tok_visa");
    let placed = system.place("flow-failed", &body).await;
    assert_eq!(placed["status"], "ORDER_STATUS_FAILED", "{placed}");
    assert!(
        placed["statusReason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{placed}"
    );
    let id = placed["orderId"].as_str().unwrap();

    let payments = system.payments_of(id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].status(), PaymentStatus::Refunded);
    assert_eq!(system.stock("SKU-006").await, before);
}

async fn concurrent_retries_with_one_key_make_one_order_and_one_charge(backend: Backend) {
    let system = System::start(backend).await;
    let before = system.stock("SKU-007").await;
    let body = order("cus_retry", &[("SKU-007", 2)], "tok_visa");

    let mut requests = JoinSet::new();
    for _ in 0..20 {
        let (http, body) = (system.http.clone(), body.clone());
        requests.spawn(async move {
            http.post_json("/v1/orders", &[("Idempotency-Key", "flow-retry")], &body)
                .await
        });
    }
    let responses = requests.join_all().await;
    for response in &responses {
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        assert_eq!(
            response.body, responses[0].body,
            "every retry gets the same answer"
        );
    }

    let orders = system.orders_of("cus_retry").await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].status(), OrderStatus::Confirmed);
    let payments = system.payments_of(&orders[0].order_id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].status(), PaymentStatus::Captured);
    assert_eq!(system.stock("SKU-007").await.sold, before.sold + 2);
}

async fn watch_order_sees_pending_then_confirmed_and_ends(backend: Backend) {
    let proxy = InventoryProxy::start().await;
    let system = System::start_behind(backend, &proxy).await;
    // The order stays PENDING while its reservation is held at the proxy.
    proxy.hold_reservations();
    let http = system.http.clone();
    let body = order("cus_watch", &[("SKU-003", 1)], "tok_visa");
    let placing = tokio::spawn(async move {
        http.post_json("/v1/orders", &[("Idempotency-Key", "flow-watch")], &body)
            .await
    });
    proxy.reservations_held(1).await;

    let pending = system.orders_of("cus_watch").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status(), OrderStatus::Pending);
    let request = WatchOrderRequest {
        order_id: pending[0].order_id.clone(),
    };
    let mut watch = system
        .orders
        .clone()
        .watch_order(request)
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut watch).await.unwrap().order.unwrap();
    assert_eq!(first.status(), OrderStatus::Pending);

    proxy.open_reservations();
    // Changes within PENDING (the payment recorded) may show; then CONFIRMED, then the end.
    let mut statuses = vec![first.status()];
    while let Some(change) = next(&mut watch).await {
        statuses.push(change.order.unwrap().status());
    }
    statuses.dedup();
    assert_eq!(statuses, [OrderStatus::Pending, OrderStatus::Confirmed]);

    let response = placing.await.unwrap();
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.json()["orderId"], pending[0].order_id.as_str());
}

async fn invariants_hold_after_a_burst_of_mixed_orders(backend: Backend) {
    // Generous client deadlines: the burst queues calls on a busy machine.
    let env: shared::Env = [("GRPC_CLIENT_TIMEOUT", "60s")].into_iter().collect();
    let system = System::start_with(backend, &env, &stack::Wiring::default()).await;
    let skus: Vec<String> = (1..=8).map(|i| format!("SKU-00{i}")).collect();
    let mut initial = BTreeMap::new();
    for sku in &skus {
        initial.insert(sku.clone(), system.stock(sku).await);
    }

    // Every 4th card is declined; every 5th order wants 2 of SKU-008's 3 units.
    let burst: Vec<Value> = (0..200)
        .map(|i| {
            let customer = format!("cus_burst_{}", i % 10);
            let card = if i % 4 == 0 {
                "tok_declined"
            } else {
                "tok_visa"
            };
            let item = if i % 5 == 0 {
                ("SKU-008".to_owned(), 2)
            } else {
                (format!("SKU-00{}", 1 + i % 7), 1 + i % 3)
            };
            order(&customer, &[(&item.0, item.1)], card)
        })
        .collect();
    let in_flight = Arc::new(Semaphore::new(20));
    let mut requests = JoinSet::new();
    for (i, body) in burst.into_iter().enumerate() {
        let (http, in_flight) = (system.http.clone(), in_flight.clone());
        requests.spawn(async move {
            let _permit = in_flight.acquire_owned().await.unwrap();
            http.post_json(
                "/v1/orders",
                &[("Idempotency-Key", &format!("burst-{i}"))],
                &body,
            )
            .await
        });
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for response in requests.join_all().await {
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        *outcomes
            .entry(response.json()["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(outcomes.values().sum::<usize>(), 200);
    // 50 declined cards, and 29 of the 30 others that want SKU-008 find too little left.
    assert!(
        outcomes["ORDER_STATUS_CONFIRMED"] > 0 && outcomes["ORDER_STATUS_REJECTED"] >= 79,
        "{outcomes:?}"
    );

    // No order is left PENDING, and what was sold is what confirmed orders hold.
    let mut orders = Vec::new();
    for c in 0..10 {
        orders.extend(system.orders_of(&format!("cus_burst_{c}")).await);
    }
    assert_eq!(orders.len(), 200);
    let mut sold_to_confirmed: BTreeMap<String, i64> = BTreeMap::new();
    for order in &orders {
        assert!(
            matches!(
                order.status(),
                OrderStatus::Confirmed | OrderStatus::Rejected
            ),
            "{order:?}"
        );
        if order.status() == OrderStatus::Confirmed {
            for item in &order.items {
                *sold_to_confirmed.entry(item.sku.clone()).or_default() += i64::from(item.quantity);
            }
        }
    }
    for sku in &skus {
        let (before, now) = (initial[sku], system.stock(sku).await);
        assert_eq!(now.reserved, 0, "{sku}: {now:?}");
        assert_eq!(
            before.available + before.sold,
            now.available + now.sold,
            "{sku}: {before:?} → {now:?}"
        );
        let sold = sold_to_confirmed.get(sku).copied().unwrap_or_default();
        assert_eq!(
            now.sold - before.sold,
            sold,
            "{sku}: sold vs confirmed orders"
        );
    }
    // One order got 2 of the 3 units; the one left is too few for any other.
    assert_eq!(system.stock("SKU-008").await.sold, 2);

    // Every captured payment is the one payment of a confirmed order.
    let confirmed: HashMap<&str, &Order> = orders
        .iter()
        .filter(|o| o.status() == OrderStatus::Confirmed)
        .map(|o| (o.order_id.as_str(), o))
        .collect();
    let captured: Vec<_> = system
        .payments_of("")
        .await
        .into_iter()
        .filter(|p| p.status() == PaymentStatus::Captured)
        .collect();
    for payment in &captured {
        let order = confirmed
            .get(payment.order_id.as_str())
            .unwrap_or_else(|| panic!("{payment:?}"));
        assert_eq!(order.payment_id, payment.payment_id);
    }
    assert_eq!(captured.len(), confirmed.len());
}

async fn bad_input_at_the_gateway_is_a_4xx_and_the_system_stays_up(backend: Backend) {
    let system = System::start(backend).await;
    let before = system.stock("SKU-001").await;
    let json = ("content-type", "application/json");
    let key = ("Idempotency-Key", "flow-bad");
    let huge = order(&"c".repeat(80 << 10), &[("SKU-001", 1)], "tok_visa");
    let cases = [
        (
            "malformed JSON",
            r#"{"customerId": "cus_bad", "items": ["#.to_owned(),
        ),
        ("missing fields", "{}".to_owned()),
        (
            "a negative quantity",
            order("cus_bad", &[("SKU-001", -1)], "tok_visa").to_string(),
        ),
        (
            "an unknown sku",
            order("cus_bad", &[("SKU-404", 1)], "tok_visa").to_string(),
        ),
        ("a huge body", huge.to_string()),
    ];
    for (what, body) in cases {
        let response = system
            .http
            .send(Method::POST, "/v1/orders", &[json, key], body)
            .await;
        assert!(response.status.is_client_error(), "{what}: {response:?}");
        let error = &response.json()["error"];
        assert_eq!(error["code"], response.status.as_u16(), "{what}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {error}"
        );
    }

    let body = order("cus_bad", &[("SKU-001", 1)], "tok_visa");
    let placed = system.place("flow-bad-then-good", &body).await;
    assert_eq!(placed["status"], "ORDER_STATUS_CONFIRMED");
    assert_eq!(
        system.stock("SKU-001").await.available,
        before.available - 1
    );
}

on_both_backends! {
    #[tokio::test] a_confirmed_order_sells_the_stock_and_charges_once,
    #[tokio::test] a_declined_card_rejects_the_order_and_leaves_stock_and_money_alone,
    #[tokio::test] a_failure_after_the_charge_refunds_and_restores_the_stock,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] concurrent_retries_with_one_key_make_one_order_and_one_charge,
    #[tokio::test] watch_order_sees_pending_then_confirmed_and_ends,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] invariants_hold_after_a_burst_of_mixed_orders,
    #[tokio::test] bad_input_at_the_gateway_is_a_4xx_and_the_system_stays_up,
}
