//! Entry points for the fuzz targets of `fuzz/` (`cargo fuzz`), not an API: the JSON
//! mapping of the REST routes, run on arbitrary input exactly as the routes run it.
//! Each panics only where the mapping has a bug.

use std::sync::LazyLock;

use axum::response::IntoResponse;
use contracts::inventory::v1 as inventory;
use contracts::orders::v1 as orders;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::Status;

use crate::error::ApiError;

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(contracts::FILE_DESCRIPTOR_SET).expect("the contracts' descriptor set")
});

fn descriptor(name: &str) -> prost_reflect::MessageDescriptor {
    POOL.get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the contracts"))
}

/// `body` as the body of `POST /v1/orders`: decoded as the route decodes it, into the
/// `PlaceOrderRequest` sent to orders, or into the JSON error the client gets.
pub fn place_order_body(body: &[u8]) -> Result<orders::PlaceOrderRequest, http::StatusCode> {
    match crate::transcode::decode_json(&descriptor("orders.v1.PlaceOrderRequest"), body) {
        Ok(message) => Ok(message
            .transcode_to()
            .expect("a decoded message is a valid PlaceOrderRequest")),
        Err(error) => Err(error.into_response().status()),
    }
}

/// A message as the gateway answers it in JSON (its own proto3 JSON writer).
fn json(name: &str, message: &impl prost::Message) -> serde_json::Result<Vec<u8>> {
    let message = DynamicMessage::decode(descriptor(name), message.encode_to_vec().as_slice())
        .expect("a message decodes as its own type");
    crate::transcode::write_json(&message, &crate::transcode::Hidden::default())
}

/// An order as orders answers it, in the JSON of `GET /v1/orders/{order_id}`.
pub fn order_json(order: orders::Order) -> serde_json::Result<Vec<u8>> {
    json("orders.v1.Order", &order)
}

/// A page of products as inventory answers it, in the JSON of `GET /v1/products`.
pub fn product_page_json(page: inventory::ListProductsResponse) -> serde_json::Result<Vec<u8>> {
    json("inventory.v1.ListProductsResponse", &page)
}

/// An upstream's error status (details included), as the HTTP error the client gets.
pub fn error_response(status: Status) -> http::StatusCode {
    ApiError::from(status).into_response().status()
}
