//! What the tests of the REST API share: the stack whose gateway is under test, an
//! order body, and checks of the JSON error shape.

use gateway::testing::{HttpClient, HttpResponse};
use http::StatusCode;
use serde_json::{Value, json};
use stack::Wiring;
use stack::testing::TestStack;

pub(crate) async fn start() -> TestStack {
    TestStack::start(&shared::Env::default(), &Wiring::default()).await
}

pub(crate) fn order(customer: &str, sku: &str, quantity: i32) -> Value {
    json!({"customerId": customer, "items": [{"sku": sku, "quantity": quantity}], "cardToken": "tok_visa"})
}

pub(crate) async fn place(http: &HttpClient, key: &str, body: &Value) -> HttpResponse {
    http.post_json("/v1/orders", &[("Idempotency-Key", key)], body)
        .await
}

/// Asserts a response in the error shape; returns its `error` object.
pub(crate) fn error(response: &HttpResponse, http: StatusCode, status: &str) -> Value {
    assert_eq!(response.status, http, "{:?}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    let error = &body["error"];
    assert_eq!(error["code"], http.as_u16(), "{body}");
    assert_eq!(error["status"], status, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    error.clone()
}

/// The `field`s of an error's details.
pub(crate) fn fields(error: &Value) -> Vec<String> {
    let details = error["details"].as_array().cloned().unwrap_or_default();
    details
        .iter()
        .filter_map(|d| d["field"].as_str().map(str::to_owned))
        .collect()
}
