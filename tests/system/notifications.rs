//! What notifications make of the order flow, as its clients see it: orders placed over
//! HTTP through the gateway, the notifications read through notifications' own gRPC API
//! (the REST route: `services/gateway/tests/it/notifications.rs`).

use crate::support;

use std::time::Duration;

use contracts::notifications::v1::notification_service_client::NotificationServiceClient;
use contracts::notifications::v1::{
    ListNotificationsRequest, Notification, StreamNotificationsRequest,
};
use serde_json::{Value, json};
use shared::Env;
use shared::client::Channel;
use shared::testing::eventually;
use stack::{Ports, Stack};
use support::{Backend, InventoryProxy, System, on_both_backends};

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

fn notifications(system: &System) -> NotificationServiceClient<Channel> {
    NotificationServiceClient::new(system.stack.channel("notifications"))
}

/// A customer's notifications, newest first (the first 100: plenty here).
async fn notifications_of(system: &System, customer_id: &str) -> Vec<Notification> {
    let request = ListNotificationsRequest {
        customer_id: customer_id.into(),
        page_size: 100,
        page_token: String::new(),
    };
    let page = notifications(system)
        .list_notifications(request)
        .await
        .unwrap();
    page.into_inner().notifications
}

async fn a_confirmed_order_notifies_the_customer(backend: Backend) {
    let system = System::start(backend).await;
    let body = order("cus_happy", &[("SKU-002", 3)], "tok_visa");
    let placed = system.place("flow-happy", &body).await;
    assert_eq!(placed["status"], "ORDER_STATUS_CONFIRMED", "{placed}");
    let id = placed["orderId"].as_str().unwrap();
    eventually("the customer's confirmation", || async {
        let notifications = notifications_of(&system, "cus_happy").await;
        notifications
            .iter()
            .any(|n| n.order_id == id && n.message.contains("confirmed"))
    })
    .await;
}

async fn a_failure_after_the_charge_notifies_the_customer(backend: Backend) {
    let proxy = InventoryProxy::start().await;
    let system = System::start_behind(backend, &proxy).await;
    proxy.fail_commits();
    let body = order("cus_failed", &[("SKU-006", 2)], "tok_visa");
    let placed = system.place("flow-failed", &body).await;
    assert_eq!(placed["status"], "ORDER_STATUS_FAILED", "{placed}");
    let id = placed["orderId"].as_str().unwrap();
    eventually("the customer's failure notice", || async {
        let notifications = notifications_of(&system, "cus_failed").await;
        notifications
            .iter()
            .any(|n| n.order_id == id && n.message.contains("failed"))
    })
    .await;
}

async fn stream_notifications_delivers_each_new_notification(backend: Backend) {
    let system = System::start(backend).await;
    let request = StreamNotificationsRequest {
        customer_id: "cus_stream".into(),
    };
    // Subscribed once the call is answered: nothing made after this is missed.
    let mut stream = notifications(&system)
        .stream_notifications(request)
        .await
        .unwrap()
        .into_inner();

    let body = order("cus_stream", &[("SKU-005", 4)], "tok_visa");
    let placed = system.place("flow-stream", &body).await;
    let id = placed["orderId"].as_str().unwrap();
    let mut messages = Vec::new();
    for _ in 0..2 {
        let notification = next(&mut stream).await.unwrap().notification.unwrap();
        assert_eq!(
            (
                notification.customer_id.as_str(),
                notification.order_id.as_str()
            ),
            ("cus_stream", id)
        );
        messages.push(notification.message);
    }
    assert!(
        messages[0].contains("placed") && messages[1].contains("confirmed"),
        "{messages:?}"
    );
}

#[tokio::test]
async fn the_banner_shows_how_to_read_the_notifications() {
    let banner = Stack::bind(&Env::default(), &Ports::Ephemeral)
        .await
        .unwrap()
        .banner();
    assert!(
        banner.contains("/v1/customers/cus_demo/notifications"),
        "{banner}"
    );
}

on_both_backends! {
    #[tokio::test] a_confirmed_order_notifies_the_customer,
    #[tokio::test] a_failure_after_the_charge_notifies_the_customer,
    #[tokio::test] stream_notifications_delivers_each_new_notification,
}
