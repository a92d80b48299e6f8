//! The notifications service through its generated client, on a real server in-process,
//! fed order events through the in-process bus as orders would publish them.

use shared::testing::violated_fields;
use std::time::Duration;

use contracts::notifications::v1::notification_service_client::NotificationServiceClient;
use contracts::notifications::v1::{
    ListNotificationsRequest, Notification, StreamNotificationsRequest,
};
use contracts::orders::v1::order_event::Kind;
use contracts::orders::v1::{self as orders_pb, OrderEvent};
use orders::events::ORDER_EVENTS;
use prost::Message;
use shared::events::{Event, EventPublisher, InProcessBus};
use shared::testing::{TestServer, env, eventually};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = NotificationServiceClient<Channel>;

/// The service, subscribed to `bus`.
async fn spawn_with(pairs: &[(&str, &str)]) -> (TestServer, Client, InProcessBus) {
    let config = notifications::Config::from_env(&env(pairs.iter().copied())).unwrap();
    let bus = InProcessBus::new();
    let server = notifications::build(config, &bus).await.unwrap();
    let server = TestServer::start(server);
    let client = NotificationServiceClient::new(server.channel.clone());
    (server, client, bus)
}

async fn spawn() -> (TestServer, Client, InProcessBus) {
    spawn_with(&[]).await
}

/// The event orders publishes when `order_id` of `customer_id` reaches `kind`.
fn event(order_id: &str, customer_id: &str, kind: Kind) -> Event {
    let name = match &kind {
        Kind::Placed(_) => "placed",
        Kind::Confirmed(_) => "confirmed",
        Kind::Rejected(_) => "rejected",
        Kind::Failed(_) => "failed",
    };
    let message = OrderEvent {
        event_id: format!("{order_id}.{name}"),
        occur_time: None,
        order: Some(orders_pb::Order {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            ..Default::default()
        }),
        kind: Some(kind),
    };
    Event::new(
        ORDER_EVENTS,
        message.event_id.clone(),
        message.encode_to_vec(),
    )
}

fn confirmed(order_id: &str, customer_id: &str) -> Event {
    event(
        order_id,
        customer_id,
        Kind::Confirmed(orders_pb::OrderConfirmed {}),
    )
}

async fn list(
    client: &Client,
    customer_id: &str,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<Notification>, String), Status> {
    let request = ListNotificationsRequest {
        customer_id: customer_id.into(),
        page_size,
        page_token: page_token.into(),
    };
    let page = client
        .clone()
        .list_notifications(request)
        .await?
        .into_inner();
    Ok((page.notifications, page.next_page_token))
}

async fn messages(client: &Client, customer_id: &str) -> Vec<String> {
    let (notifications, _) = list(client, customer_id, 0, "").await.unwrap();
    notifications.into_iter().map(|n| n.message).collect()
}

/// Waits until `customer_id` has `count` notifications.
async fn wait_for(client: &Client, customer_id: &str, count: usize) {
    eventually(&format!("{count} notifications"), || async {
        messages(client, customer_id).await.len() >= count
    })
    .await;
}

#[tokio::test]
async fn each_order_event_makes_a_notification_for_its_customer() {
    let (_server, client, bus) = spawn().await;
    let rejected = orders_pb::OrderRejected {
        reason: "card declined".into(),
    };
    bus.publish(event(
        "ord_1",
        "cus-1",
        Kind::Placed(orders_pb::OrderPlaced {}),
    ))
    .await
    .unwrap();
    bus.publish(event("ord_1", "cus-1", Kind::Rejected(rejected)))
        .await
        .unwrap();
    bus.publish(confirmed("ord_2", "cus-2")).await.unwrap();

    wait_for(&client, "cus-1", 2).await;
    assert_eq!(
        messages(&client, "cus-1").await,
        ["Order ord_1 rejected: card declined", "Order ord_1 placed"]
    );
    wait_for(&client, "cus-2", 1).await;
    let (notifications, _) = list(&client, "cus-2", 0, "").await.unwrap();
    let n = &notifications[0];
    assert_eq!(
        (n.order_id.as_str(), n.event_id.as_str()),
        ("ord_2", "ord_2.confirmed")
    );
    assert!(n.notification_id.starts_with("ntf_"));
    assert!(n.create_time.is_some());
}

#[tokio::test]
async fn a_redelivered_event_makes_no_second_notification() {
    let (_server, client, bus) = spawn().await;
    bus.publish(confirmed("ord_1", "cus-1")).await.unwrap();
    bus.publish(confirmed("ord_1", "cus-1")).await.unwrap();
    // Events are consumed in order: once this one shows, the duplicate was handled.
    bus.publish(confirmed("ord_2", "cus-1")).await.unwrap();

    wait_for(&client, "cus-1", 2).await;
    assert_eq!(
        messages(&client, "cus-1").await,
        ["Order ord_2 confirmed", "Order ord_1 confirmed"]
    );
}

#[tokio::test]
async fn an_invalid_event_is_skipped() {
    let (_server, client, bus) = spawn().await;
    bus.publish(Event::new(ORDER_EVENTS, "junk", b"\xff\xff".to_vec()))
        .await
        .unwrap();
    bus.publish(confirmed("ord_1", "cus-1")).await.unwrap();

    wait_for(&client, "cus-1", 1).await;
    assert_eq!(messages(&client, "cus-1").await, ["Order ord_1 confirmed"]);
}

#[tokio::test]
async fn list_notifications_pages_newest_first() {
    let (_server, client, bus) = spawn().await;
    for i in 0..3 {
        bus.publish(confirmed(&format!("ord_{i}"), "cus-1"))
            .await
            .unwrap();
    }
    wait_for(&client, "cus-1", 3).await;

    let (first, token) = list(&client, "cus-1", 2, "").await.unwrap();
    let orders: Vec<_> = first.iter().map(|n| n.order_id.as_str()).collect();
    assert_eq!(orders, ["ord_2", "ord_1"]);
    let (rest, token) = list(&client, "cus-1", 2, &token).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].order_id, "ord_0");
    assert_eq!(token, "");
    assert!(list(&client, "nobody", 0, "").await.unwrap().0.is_empty());
}

#[tokio::test]
async fn invalid_requests_name_every_bad_field() {
    let (_server, client, _bus) = spawn().await;
    let err = list(&client, "", -1, "garbage").await.unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["customer_id", "page_size", "page_token"]
    );
    let request = StreamNotificationsRequest {
        customer_id: "has space".into(),
    };
    let err = client
        .clone()
        .stream_notifications(request)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["customer_id"]);
}

#[tokio::test]
async fn stream_notifications_pushes_each_new_one_of_that_customer() {
    let (_server, client, bus) = spawn().await;
    let request = StreamNotificationsRequest {
        customer_id: "cus-1".into(),
    };
    let mut stream = client
        .clone()
        .stream_notifications(request)
        .await
        .unwrap()
        .into_inner();

    bus.publish(confirmed("ord_other", "cus-2")).await.unwrap();
    bus.publish(confirmed("ord_1", "cus-1")).await.unwrap();
    bus.publish(confirmed("ord_1", "cus-1")).await.unwrap();
    bus.publish(confirmed("ord_2", "cus-1")).await.unwrap();

    let mut next = async || {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        message
            .expect("a notification within 10 s")
            .unwrap()
            .unwrap()
            .notification
            .unwrap()
    };
    assert_eq!(next().await.message, "Order ord_1 confirmed");
    assert_eq!(
        next().await.message,
        "Order ord_2 confirmed",
        "the duplicate is not pushed"
    );
}

#[tokio::test]
async fn streams_end_with_unavailable_when_the_server_shuts_down() {
    // A drain held by the stream would last a minute; the test allows it 5 seconds.
    let (server, client, _bus) = spawn_with(&[("SHUTDOWN_GRACE_PERIOD", "60s")]).await;
    let request = StreamNotificationsRequest {
        customer_id: "cus-1".into(),
    };
    let mut stream = client
        .clone()
        .stream_notifications(request)
        .await
        .unwrap()
        .into_inner();

    server.begin_shutdown();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.join()).await;
    stopped
        .expect("the drain is not held by the stream")
        .unwrap();
}
