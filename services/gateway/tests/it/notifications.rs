//! The notifications route of the REST API, in front of the stack (see `api.rs`).

use crate::support;

use http::StatusCode;
use shared::testing::eventually;
use support::{error, fields, order, place, start};

#[tokio::test]
async fn notifications_are_listed_per_customer() {
    let stack = start().await;
    let http = stack.http();
    let created = place(&http, "gw-notify-1", &order("cus_gw_6", "SKU-005", 1)).await;
    let order_id = created.json()["orderId"].as_str().unwrap().to_owned();

    let path = "/v1/customers/cus_gw_6/notifications?page_size=1";
    let newest = || async { http.get(path).await.json() };
    eventually("the confirmation notification", || async {
        newest().await["notifications"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("confirmed"))
    })
    .await;
    let page = newest().await;
    let notification = &page["notifications"][0];
    assert_eq!(notification["orderId"], order_id.as_str());
    assert_eq!(notification["customerId"], "cus_gw_6");
    assert!(
        notification["notificationId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert!(notification["createTime"].as_str().is_some());
    // One per page: the "placed" notification is on the next one.
    let token = page["nextPageToken"].as_str().expect("a second page");
    let next = http.get(&format!("{path}&page_token={token}")).await.json();
    assert!(
        next["notifications"][0]["message"]
            .as_str()
            .unwrap()
            .contains("placed"),
        "{next}"
    );

    let response = http.get("/v1/customers/has%20space/notifications").await;
    let error = error(&response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert_eq!(fields(&error), ["customer_id"]);
}

#[tokio::test]
async fn readyz_asks_notifications() {
    let stack = start().await;
    let http = stack.http();
    eventually("readiness", || async {
        http.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    let readiness = http.get("/readyz").await.json();
    assert_eq!(
        readiness["upstreams"]["notifications"], "SERVING",
        "{readiness}"
    );
}

/// `StreamNotifications` on HTTP: Server-Sent Events, one notification each, as they
/// are made; a bad customer id is a 400 before any stream starts.
#[tokio::test]
async fn new_notifications_stream_as_server_sent_events() {
    let stack = start().await;
    let http = stack.http();
    let mut stream = http
        .events("/v1/customers/cus_gw_sse/notifications/stream", &[])
        .await;
    assert_eq!(stream.status, StatusCode::OK);
    assert_eq!(
        stream.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    let created = place(&http, "gw-sse-1", &order("cus_gw_sse", "SKU-005", 1)).await;
    let order_id = created.json()["orderId"].as_str().unwrap().to_owned();
    let event = stream.next().await.expect("a notification");
    assert_eq!(event.event, "message");
    let notification = event.json();
    assert_eq!(notification["customerId"], "cus_gw_sse", "{notification}");
    assert_eq!(notification["orderId"], order_id.as_str(), "{notification}");

    let response = http
        .get("/v1/customers/has%20space/notifications/stream")
        .await;
    let error = error(&response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    assert_eq!(fields(&error), ["customer_id"]);
}
