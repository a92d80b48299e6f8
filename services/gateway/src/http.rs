//! The REST routes: JSON in, one gRPC call, JSON out. The only file that sees axum's
//! routing and extractors.
//!
//! | route | scope | upstream call |
//! |---|---|---|
//! | `GET /v1/products?page_size=&page_token=` | `inventory:read` | `inventory.v1.InventoryService/ListProducts` |
//! | `GET /v1/products/{sku}` | `inventory:read` | `inventory.v1.InventoryService/GetProduct` |
//! | `POST /v1/orders` (`Idempotency-Key` header) | `orders:write` | `orders.v1.OrderService/PlaceOrder` |
//! | `GET /v1/orders/{id}` | `orders:read` | `orders.v1.OrderService/GetOrder` |
//! | `GET /healthz` | — | — (liveness: the process serves) |
//! | `GET /readyz` | — | none: the upstreams' health as last asked (`grpc.health.v1.Health/Check`, every second) |
//!
//! Every route but the two probes is bounded (`limits.rs`: requests in flight, 503;
//! time, 504), then goes through admission (`auth.rs`): a bearer token
//! when authentication is on (401), the client's rate (429), then the route's scope
//! (403). The probes are answered whatever the load and without a token: the kubelet
//! and load balancers have none.
//!
//! With authentication on, the token's subject is the customer: every upstream call
//! names the caller in its metadata (`shared::identity`), and the services hold it
//! to its own customer: an order for another `customerId` is 403, another customer's
//! order or notifications 404, unless the token holds `orders:admin`
//! (`notifications:admin`).
//!
//! Routes that only one upstream backs live in a module named after it, merged here by
//! one line, so that `make remove-service` takes them away with the service.
//!
//! Every error, the gateway's own included (bad JSON, a body too large, an unknown
//! route), is answered in the JSON shape of [`ApiError`].

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use contracts::inventory::v1::{GetProductRequest, ListProductsRequest};
use contracts::orders::v1::GetOrderRequest;
use http::header::{CONTENT_TYPE, LOCATION};
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::Violations;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::Instrument as _;

use crate::auth::{self, Admission, INVENTORY_READ, ORDERS_READ, ORDERS_WRITE, OnBehalf, scoped};
use crate::dto::{self, NewOrder, Order, PageQuery, Product, ProductPage};
use crate::error::ApiError;
use crate::limits::Limits;
use crate::upstream::{Readiness, Upstreams};

/// The header whose value becomes the order's `request_id` (AIP-155).
pub(crate) const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// What every handler can reach.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) upstreams: Upstreams,
    readiness: Readiness,
    /// Cancelled when shutdown begins: `/readyz` turns 503 so that no new traffic comes.
    draining: CancellationToken,
    max_body_bytes: usize,
}

/// The routes and the layers around them.
pub(crate) fn router(
    upstreams: Upstreams,
    readiness: Readiness,
    draining: CancellationToken,
    max_body_bytes: usize,
    limits: Limits,
    admission: Admission,
) -> Router {
    let state = AppState {
        upstreams,
        readiness,
        draining,
        max_body_bytes,
    };
    let api = Router::new()
        .route("/v1/products", scoped(INVENTORY_READ, get(list_products)))
        .route(
            "/v1/products/{sku}",
            scoped(INVENTORY_READ, get(get_product)),
        )
        .route("/v1/orders", scoped(ORDERS_WRITE, post(place_order)))
        .route("/v1/orders/{id}", scoped(ORDERS_READ, get(get_order)))
        .merge(crate::notifications::routes()) // remove-service: notifications
        // Unknown paths and methods get the JSON error shape too (axum keeps the
        // `Allow` header on 405); behind admission, so that no route can be probed
        // for without a token.
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed);
    // The limits, then authentication, rate and scope on every route above; none on
    // the probes.
    let api = limits.layer(auth::Admission::layer(admission, api));
    api.route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The API's description and its explorer, public like the probes: they say
        // what a token may do, not what is behind it.
        .merge(crate::openapi::router())
        .merge(crate::explorer::router())
        // Bodies are read up to this many bytes, never more: beyond it, 413.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // One span per request; every line logged while handling it carries its fields.
        .layer(middleware::from_fn(http_span))
        .with_state(state)
}

/// A server span per request, after the OpenTelemetry HTTP conventions, continuing
/// the caller's trace (W3C `traceparent` header); the gRPC calls the handler makes
/// become its children.
async fn http_span(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = request.method().clone();
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "http",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        // shared::rpc::APP_SERVICE: which service made the span, in a one-process stack.
        app.service = crate::NAME,
        http.request.method = %method,
        http.route = route.as_deref(),
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        // The token's subject, when the request carries a valid one (auth.rs).
        enduser.id = tracing::field::Empty,
    );
    shared::rpc::continue_trace(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

#[tracing::instrument(skip_all)]
async fn list_products(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<ProductPage>, ApiError> {
    let (page_size, page_token) = query.parse()?;
    let request = ListProductsRequest {
        page_size,
        page_token,
    };
    let response = state.upstreams.inventory().list_products(request).await?;
    Ok(Json(response.into_inner().into()))
}

#[tracing::instrument(skip_all, fields(sku = %sku))]
async fn get_product(
    State(state): State<AppState>,
    PathParam(sku): PathParam<String>,
) -> Result<Json<Product>, ApiError> {
    let response = state
        .upstreams
        .inventory()
        .get_product(GetProductRequest { sku })
        .await?;
    let product = response
        .into_inner()
        .product
        .ok_or_else(|| ApiError::internal("GetProduct answered no product"))?;
    Ok(Json(product.into()))
}

/// Places an order and answers once its saga is over: 201 with the order, whatever
/// its status. A declined card or missing stock is a REJECTED order, not an error,
/// as in `orders.v1.OrderService/PlaceOrder`: the order exists and can be read back.
/// A retry with the same `Idempotency-Key` and body gets the same order (and the same
/// 201); the same key with another body is 409. A saga that outlasts the call's
/// deadline (`GRPC_CLIENT_TIMEOUT`) is 504 but goes on: a retry with the same key
/// answers its outcome.
#[tracing::instrument(skip_all, fields(idempotency_key = %key))]
async fn place_order(
    State(state): State<AppState>,
    caller: OnBehalf,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(order): JsonBody<NewOrder>,
) -> Result<impl IntoResponse, ApiError> {
    let response = state
        .upstreams
        .orders()
        .place_order(caller.request(order.into_request(key.clone())))
        .await
        .map_err(|status| match status.code() {
            // Orders' only ALREADY_EXISTS: the request_id, our key, was used before
            // by the same caller (keys are scoped per token subject).
            Code::AlreadyExists => ApiError::key_reused(IDEMPOTENCY_KEY, &key),
            _ => ApiError::from(status).rename_fields(dto::new_order_field),
        })?;
    let order = response
        .into_inner()
        .order
        .ok_or_else(|| ApiError::internal("PlaceOrder answered no order"))?;
    let order = Order::from(order);
    Ok((StatusCode::CREATED, [(LOCATION, order.path())], Json(order)))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn get_order(
    State(state): State<AppState>,
    caller: OnBehalf,
    PathParam(order_id): PathParam<String>,
) -> Result<Json<Order>, ApiError> {
    let response = state
        .upstreams
        .orders()
        .get_order(caller.request(GetOrderRequest { order_id }))
        .await?;
    let order = response
        .into_inner()
        .order
        .ok_or_else(|| ApiError::internal("GetOrder answered no order"))?;
    Ok(Json(order.into()))
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize)]
struct Probe {
    /// `SERVING` or `NOT_SERVING`, as in gRPC health.
    status: &'static str,
    /// Why not, when `upstreams` does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// Each upstream's health, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    upstreams: BTreeMap<&'static str, &'static str>,
}

/// Liveness: the process serves requests, also while it drains (restarting a
/// draining gateway would cut its in-flight requests). Asks no upstream: a restart
/// cannot fix an upstream.
async fn healthz() -> Json<Probe> {
    Json(Probe {
        status: "SERVING",
        reason: None,
        upstreams: BTreeMap::new(),
    })
}

/// Readiness: 200 when every upstream answered its last health check (asked every
/// second in the background, `upstream::Readiness`) with SERVING, else 503 naming
/// each upstream's state; 503 as soon as shutdown begins.
///
/// Depending on upstreams means that an outage of one takes every gateway replica
/// out of its load balancer: clients then get a connection error instead of a JSON
/// 503. That is the trade chosen here; drop the checks if you prefer the JSON 503s.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    if state.draining.is_cancelled() {
        let probe = Probe {
            status: "NOT_SERVING",
            reason: Some("shutting down"),
            upstreams: BTreeMap::new(),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(probe));
    }
    let upstreams = state.readiness.health();
    let ready = upstreams.values().all(|status| *status == "SERVING");
    let (code, status) = if ready {
        (StatusCode::OK, "SERVING")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING")
    };
    let probe = Probe {
        status,
        reason: None,
        upstreams,
    };
    (code, Json(probe))
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::no_route(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(&method, uri.path())
}

/// The `Idempotency-Key` header: required, given once, and a valid id (printable
/// ASCII without spaces, at most 128 characters), e.g. a UUID.
///
/// Required rather than generated when missing: a client that retries a POST without
/// a key after a timeout could be charged twice, and the gateway cannot tell a retry
/// from a new order. With authentication on, keys are scoped per token subject (the
/// orders service keys them by who placed the order): two callers cannot collide, and
/// one cannot learn or replay another's key.
#[derive(Debug)]
pub(crate) struct IdempotencyKey(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let (first, second) = (values.next(), values.next());
        // A value that is not visible ASCII reads as " ", which the id rules reject.
        let key = first.map_or("", |v| v.to_str().unwrap_or(" ")).to_owned();
        let mut violations = Violations::new();
        if first.is_none() {
            violations.add(IDEMPOTENCY_KEY, MISSING_KEY);
        } else if second.is_some() {
            violations.add(IDEMPOTENCY_KEY, "must be given once");
        } else {
            violations.id(IDEMPOTENCY_KEY, &key);
        }
        violations.finish()?;
        Ok(Self(key))
    }
}

const MISSING_KEY: &str =
    "is required: a new unique value (e.g. a UUID) per order, sent again only to retry that order";

/// A JSON request body, of at most the configured size, rejected in the gateway's
/// JSON error shape: 415 unless `Content-Type: application/json`, 413 when too large,
/// 400 for invalid JSON or a value of the wrong type (naming the field by its path,
/// e.g. `items[0].quantity`) or an unknown field.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::not_json());
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::body_too_large(state.max_body_bytes)
                    } else {
                        ApiError::invalid(
                            format!("cannot read the request body: {}", rejection.body_text()),
                            vec![],
                        )
                    }
                })?;
        decode_json(&bytes).map(Self)
    }
}

/// `bytes` as one JSON object of type `T`. A value of the wrong type or an unknown
/// field is named by its path (`items[0].quantity`).
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would also take a JSON array for a struct, its fields in order.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::invalid(
            "the request body must be a JSON object",
            vec![],
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        match error.classify() {
            serde_json::error::Category::Data if path != "." => {
                ApiError::invalid_field(path, error.to_string())
            }
            _ => ApiError::malformed_json(&error),
        }
    })?;
    // Only whitespace may follow the value.
    deserializer
        .end()
        .map_err(|error| ApiError::malformed_json(&error))?;
    Ok(value)
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = content_type
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    essence.is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"))
}

/// A path parameter, rejected in the gateway's JSON error shape.
#[derive(Debug)]
pub(crate) struct PathParam<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text(), vec![])),
        }
    }
}

/// The query string, rejected in the gateway's JSON error shape. Unknown parameters
/// are ignored, as browsers and proxies add their own.
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text(), vec![])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<NewOrder, String> {
        decode_json::<NewOrder>(json.as_bytes()).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn json_errors_name_the_field() {
        for (json, expected) in [
            (
                r#"{"items": [{"sku": "A", "quantity": "two"}]}"#,
                r#"field: "items[0].quantity""#,
            ),
            (
                r#"{"items": [{"sku": "A", "quantity": 1.5}]}"#,
                r#"field: "items[0].quantity""#,
            ),
            (
                r#"{"items": [{"sku": "A", "quantity": 3000000000}]}"#,
                r#"field: "items[0].quantity""#,
            ),
            (
                r#"{"customerId": "c", "coupon": "FREE"}"#,
                "unknown field `coupon`",
            ),
            (
                r#"{"items": [{"sku": "A", "qty": 1}]}"#,
                "unknown field `qty`",
            ),
        ] {
            let error = decode(json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn malformed_json_is_reported_as_such() {
        for json in [
            "{",
            r#"{"customerId": "c"} trailing"#,
            r#"{"customerId": c}"#,
        ] {
            let error = decode(json).unwrap_err();
            assert!(error.contains("not valid JSON"), "{json}: {error}");
        }
        for json in ["", " ", "[]", "null", r#""{}""#] {
            let error = decode(json).unwrap_err();
            assert!(error.contains("must be a JSON object"), "{json}: {error}");
        }
    }

    #[test]
    fn missing_fields_are_left_to_the_service() {
        decode("{}").unwrap();
        decode(r#"{"items": [{}]}"#).unwrap();
    }

    #[test]
    fn only_json_content_types_are_json() {
        let json = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(json("application/json"));
        assert!(json("Application/JSON; charset=utf-8"));
        assert!(!json("text/plain"));
        assert!(!json("application/jsonl"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
