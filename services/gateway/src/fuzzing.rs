//! Entry points for the fuzz targets of `fuzz/` (`cargo fuzz`), not an API: the JSON
//! mapping of the REST routes, run on arbitrary input exactly as the routes run it.
//! Each panics only where the mapping has a bug.

use axum::response::IntoResponse;
use contracts::inventory::v1 as inventory;
use contracts::orders::v1 as orders;
use tonic::Status;

use crate::dto::{NewOrder, Order, ProductPage};
use crate::error::ApiError;

/// `body` as the body of `POST /v1/orders`: decoded as the route decodes it, into the
/// `PlaceOrderRequest` sent to orders, or into the JSON error the client gets.
pub fn place_order_body(body: &[u8]) -> Result<orders::PlaceOrderRequest, http::StatusCode> {
    match crate::http::decode_json::<NewOrder>(body) {
        Ok(order) => Ok(order.into_request("fuzz-request-id".to_owned())),
        Err(error) => Err(error.into_response().status()),
    }
}

/// An order as orders answers it, in the JSON of `GET /v1/orders/{id}`.
pub fn order_json(order: orders::Order) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Order::from(order))
}

/// A page of products as inventory answers it, in the JSON of `GET /v1/products`.
pub fn product_page_json(page: inventory::ListProductsResponse) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&ProductPage::from(page))
}

/// An upstream's error status (details included), as the HTTP error the client gets.
pub fn error_response(status: Status) -> http::StatusCode {
    ApiError::from(status).into_response().status()
}
