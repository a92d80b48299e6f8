//! The gateway's JSON mapping, both ways: the bytes as a `POST /v1/orders` body (into
//! the `PlaceOrderRequest`, or the client's error), and as the protobuf answers of
//! orders and inventory and an upstream error status (into the JSON sent back).
#![no_main]

use bytes::Bytes;
use contracts::inventory::v1::ListProductsResponse;
use contracts::orders::v1::Order;
use gateway::fuzzing;
use prost::Message;
use tonic::{Code, Status};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A body decodes into the request, or is the client's error; never a panic or a 5xx.
    // (Its request_id comes from the Idempotency-Key header at the route, not from here.)
    if let Err(http) = fuzzing::place_order_body(data) {
        assert!(http.is_client_error(), "{http} for a bad body");
    }
    if let Ok(order) = Order::decode(data) {
        fuzzing::order_json(order).expect("every order has a JSON form");
    }
    if let Ok(page) = ListProductsResponse::decode(data) {
        fuzzing::product_page_json(page).expect("every product page has a JSON form");
    }
    let code = Code::from(i32::from(data.first().copied().unwrap_or(0) % 17));
    let message = String::from_utf8_lossy(data).into_owned();
    let status = Status::with_details(code, message, Bytes::copy_from_slice(data));
    let http = fuzzing::error_response(status);
    assert!(
        http.is_client_error() || http.is_server_error(),
        "{http} for {code:?}"
    );
});
