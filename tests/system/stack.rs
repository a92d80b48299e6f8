//! The stack launcher wires every service to the others.

use http::StatusCode;
use shared::Env;
use stack::testing::TestStack;
use stack::{Ports, Stack, Wiring};

const SERVICES: &[&str] = &[
    "inventory",
    "payments",
    "notifications", // remove-service: notifications
    "orders",
    "gateway",
];

#[tokio::test]
async fn the_stack_binds_every_service_on_free_ports() {
    let stack = Stack::bind(&Env::default(), &Ports::Ephemeral)
        .await
        .unwrap();
    for name in SERVICES {
        let addr = stack
            .addr(name)
            .unwrap_or_else(|| panic!("{name} is part of the stack"));
        assert_ne!(addr.port(), 0);
    }
    assert_eq!(Some(stack.http_addr()), stack.addr("gateway"));
}

#[tokio::test]
async fn the_banner_names_every_endpoint_and_its_demo_order_works() {
    let stack = TestStack::start(&Env::default(), &Wiring::default()).await;
    let banner = Stack::bind(&Env::default(), &Ports::Ephemeral)
        .await
        .unwrap()
        .banner();
    for name in SERVICES {
        assert!(
            banner.contains(&format!("  {name} ")),
            "{name} missing from:\n{banner}"
        );
    }
    assert!(
        banner.contains("orders.v1.OrderService/WatchOrder"),
        "{banner}"
    );
    // The API explorer it points at is served.
    let docs = banner
        .lines()
        .map(str::trim)
        .find(|line| line.ends_with("/docs"))
        .expect("the banner names the API explorer");
    assert!(docs.starts_with("http://"), "{banner}");
    assert_eq!(stack.http().get("/docs").await.status, StatusCode::OK);

    // The curl command's body, sent as the banner sends it, places an order.
    let body = banner
        .split("-d '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(body).expect("the demo body is JSON");
    let response = stack
        .http()
        .post_json("/v1/orders", &[("Idempotency-Key", "demo-order-1")], &body)
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    assert_eq!(response.json()["status"], "ORDER_STATUS_CONFIRMED");
}

#[tokio::test]
async fn the_stack_stops_gracefully() {
    let stack = TestStack::start(&Env::default(), &Wiring::default()).await;
    assert_eq!(stack.http().get("/healthz").await.status, StatusCode::OK);
    stack.stop().await.expect("every service drains and stops");
}
