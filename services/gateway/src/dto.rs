//! The JSON shapes of the REST API, written by hand so that they stay stable while the
//! protos evolve, and their conversions from and to the protos.
//!
//! Conventions, as in proto3's JSON mapping unless said otherwise:
//! - field names in lowerCamelCase (`customerId`);
//! - money as `{"currencyCode": "USD", "amountMinor": 2400}`;
//! - timestamps as RFC 3339 strings in UTC (`2025-01-31T09:30:00.123456789Z`);
//! - enums by name without their type prefix (`"CONFIRMED"`, not `ORDER_STATUS_…`);
//! - 64-bit integers as JSON numbers, not strings (every one here stays far below
//!   2^53, where JavaScript numbers lose precision);
//! - optional strings (`statusReason`, `paymentId`, `nextPageToken`) are omitted when
//!   empty;
//! - request bodies with a field the API does not know are rejected (a misspelt
//!   field would otherwise be silently ignored); missing fields take their zero
//!   value and are reported by the service that validates them.

use contracts::common::v1 as common;
use contracts::inventory::v1 as inventory;
use contracts::orders::v1 as orders;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Money {
    pub(crate) currency_code: String,
    pub(crate) amount_minor: i64,
}

impl From<common::Money> for Money {
    fn from(m: common::Money) -> Self {
        Self {
            currency_code: m.currency_code,
            amount_minor: m.amount_minor,
        }
    }
}

/// A catalog entry as customers see it: stock as `available` only.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Product {
    sku: String,
    name: String,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<Money>,
    available: i64,
}

impl From<inventory::Product> for Product {
    fn from(p: inventory::Product) -> Self {
        Self {
            sku: p.sku,
            name: p.name,
            description: p.description,
            price: p.price.map(Into::into),
            available: p.available,
        }
    }
}

/// `GET /v1/products`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProductPage {
    products: Vec<Product>,
    #[serde(skip_serializing_if = "String::is_empty")]
    next_page_token: String,
}

impl From<inventory::ListProductsResponse> for ProductPage {
    fn from(r: inventory::ListProductsResponse) -> Self {
        Self {
            products: r.products.into_iter().map(Into::into).collect(),
            next_page_token: r.next_page_token,
        }
    }
}

/// The body of `POST /v1/orders`. The idempotency key comes in a header.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct NewOrder {
    customer_id: String,
    items: Vec<NewOrderItem>,
    card_token: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub(crate) struct NewOrderItem {
    sku: String,
    quantity: i32,
}

impl NewOrder {
    pub(crate) fn into_request(self, request_id: String) -> orders::PlaceOrderRequest {
        orders::PlaceOrderRequest {
            request_id,
            customer_id: self.customer_id,
            items: self
                .items
                .into_iter()
                .map(|i| orders::OrderItem {
                    sku: i.sku,
                    quantity: i.quantity,
                    unit_price: None,
                })
                .collect(),
            card_token: self.card_token,
        }
    }
}

/// The JSON name of a `PlaceOrderRequest` field path that orders reported, e.g.
/// `customer_id` → `customerId`, `items[0].quantity` unchanged; `request_id` is the
/// `Idempotency-Key` header.
pub(crate) fn new_order_field(proto_path: &str) -> String {
    if proto_path == "request_id" {
        return crate::http::IDEMPOTENCY_KEY.to_owned();
    }
    let mut json = String::with_capacity(proto_path.len());
    let mut upper = false;
    for c in proto_path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                json.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => json.push(c),
        }
    }
    json
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Order {
    order_id: String,
    customer_id: String,
    items: Vec<OrderItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<Money>,
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    status_reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    payment_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_time: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderItem {
    sku: String,
    quantity: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price: Option<Money>,
}

impl Order {
    /// Where the order can be read back: the `Location` of a created order.
    pub(crate) fn path(&self) -> String {
        format!("/v1/orders/{}", self.order_id)
    }
}

impl From<orders::Order> for Order {
    fn from(o: orders::Order) -> Self {
        let status = match o.status() {
            orders::OrderStatus::Pending => "PENDING",
            orders::OrderStatus::Confirmed => "CONFIRMED",
            orders::OrderStatus::Rejected => "REJECTED",
            orders::OrderStatus::Failed => "FAILED",
            orders::OrderStatus::Unspecified => "STATUS_UNSPECIFIED",
        };
        Self {
            order_id: o.order_id,
            customer_id: o.customer_id,
            items: o
                .items
                .into_iter()
                .map(|i| OrderItem {
                    sku: i.sku,
                    quantity: i.quantity,
                    unit_price: i.unit_price.map(Into::into),
                })
                .collect(),
            total: o.total.map(Into::into),
            status,
            status_reason: o.status_reason,
            payment_id: o.payment_id,
            create_time: o.create_time.map(|t| t.to_string()),
            update_time: o.update_time.map(|t| t.to_string()),
        }
    }
}

/// The query of the list routes (`?page_size=10&page_token=…`). Values are kept as
/// text so that a bad one is reported by name rather than as an unparsable query.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageQuery {
    page_size: Option<String>,
    page_token: Option<String>,
}

impl PageQuery {
    /// `(page_size, page_token)` for a list request. Range checks are the service's;
    /// a size beyond `i32` is capped, as the service caps large sizes anyway.
    pub(crate) fn parse(self) -> Result<(i32, String), ApiError> {
        let page_size = match self.page_size.as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(n) => {
                let n: i64 = n
                    .parse()
                    .map_err(|_| ApiError::invalid_field("page_size", "must be an integer"))?;
                i32::try_from(n.clamp(i32::MIN.into(), i32::MAX.into())).unwrap_or(i32::MAX)
            }
        };
        Ok((page_size, self.page_token.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_field_paths_become_json_paths() {
        assert_eq!(new_order_field("customer_id"), "customerId");
        assert_eq!(new_order_field("items[2].quantity"), "items[2].quantity");
        assert_eq!(
            new_order_field("items[0].unit_price.amount_minor"),
            "items[0].unitPrice.amountMinor"
        );
        assert_eq!(new_order_field("request_id"), "Idempotency-Key");
    }

    #[test]
    fn an_order_reads_like_proto3_json() {
        let order = orders::Order {
            order_id: "ord_1".into(),
            request_id: "key".into(),
            customer_id: "cus_1".into(),
            items: vec![orders::OrderItem {
                sku: "SKU-001".into(),
                quantity: 2,
                unit_price: Some(common::Money {
                    currency_code: "USD".into(),
                    amount_minor: 2400,
                }),
            }],
            total: Some(common::Money {
                currency_code: "USD".into(),
                amount_minor: 4800,
            }),
            status: orders::OrderStatus::Confirmed.into(),
            status_reason: String::new(),
            payment_id: "pay_1".into(),
            create_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            update_time: None,
        };
        let json = serde_json::to_value(Order::from(order)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "orderId": "ord_1",
                "customerId": "cus_1",
                "items": [{"sku": "SKU-001", "quantity": 2, "unitPrice": {"currencyCode": "USD", "amountMinor": 2400}}],
                "total": {"currencyCode": "USD", "amountMinor": 4800},
                "status": "CONFIRMED",
                "paymentId": "pay_1",
                "createTime": "2023-11-14T22:13:20Z",
            })
        );
    }

    #[test]
    fn page_queries_name_the_bad_parameter() {
        let query = |size: Option<&str>| {
            PageQuery {
                page_size: size.map(Into::into),
                page_token: Some("p1.61".into()),
            }
            .parse()
            .map(|(size, _)| size)
        };
        assert_eq!(query(None).unwrap(), 0);
        assert_eq!(query(Some(" 7 ")).unwrap(), 7);
        assert_eq!(query(Some("-1")).unwrap(), -1);
        assert_eq!(query(Some("99999999999")).unwrap(), i32::MAX);
        assert_eq!(
            query(Some("ten")).unwrap_err().http_status(),
            http::StatusCode::BAD_REQUEST
        );
    }
}
