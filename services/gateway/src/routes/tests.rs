use super::*;

fn routes() -> Routes {
    Routes::contracts().unwrap()
}

/// The route of `method` (e.g. `"orders.v1.OrderService/PlaceOrder"`'s full name),
/// for the tests of the modules that use routes.
pub(crate) fn route(method: &str) -> Route {
    routes()
        .iter()
        .find(|r| r.method.full_name() == method)
        .unwrap_or_else(|| panic!("no route for {method}"))
        .clone()
}

fn message(name: &str) -> MessageDescriptor {
    routes().pool().get_message_by_name(name).unwrap()
}

#[test]
fn the_annotated_methods_are_the_routes() {
    let routes: Vec<String> = routes()
        .iter()
        .map(|r| format!("{} {} {}", r.verb, r.path.template, r.scope))
        .collect();
    for expected in [
        "GET /v1/products inventory:read",
        "GET /v1/products/{sku} inventory:read",
        "POST /v1/orders orders:write",
        "GET /v1/orders/{order_id} orders:read",
        "GET /v1/orders/{order_id}/watch orders:read",
        "GET /v1/customers/{customer_id}/orders orders:read",
        "GET /v1/customers/{customer_id}/notifications notifications:read", // remove-service: notifications
    ] {
        assert!(
            routes.contains(&expected.to_owned()),
            "{expected}: {routes:?}"
        );
    }
    // Internal RPCs stay off HTTP.
    assert!(
        !routes
            .iter()
            .any(|r| r.contains("Reserve") || r.contains("payments"))
    );
}

#[test]
fn place_order_binds_body_header_and_location() {
    let route = route("orders.v1.OrderService.PlaceOrder");
    assert_eq!(route.verb, Method::POST);
    assert_eq!(route.body, Body::Whole);
    assert_eq!(route.response_body.as_ref().unwrap().to_string(), "order");
    let key = route.idempotency_key.as_ref().unwrap();
    assert_eq!(key.header, "idempotency-key");
    assert_eq!(key.field.to_string(), "request_id");
    assert_eq!(route.status(), StatusCode::CREATED);
    let location = route.location.as_ref().unwrap();
    assert_eq!(location.template, "/v1/orders/{order.order_id}");
    assert_eq!(
        location.variables().next().unwrap().json_name(),
        "order.orderId"
    );
    assert_eq!(route.grpc_path(), "/orders.v1.OrderService/PlaceOrder");
    assert!(!route.server_streaming());
    assert!(route.query_fields().is_empty());
}

#[test]
fn get_routes_take_the_rest_from_the_query() {
    let route = route("orders.v1.OrderService.ListOrders");
    assert_eq!(route.body, Body::None);
    assert_eq!(route.status(), StatusCode::OK);
    let variables: Vec<String> = route.path.variables().map(ToString::to_string).collect();
    assert_eq!(variables, ["customer_id"]);
    let query: Vec<String> = route
        .query_fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(query, ["page_size", "page_token"]);
    assert_eq!(route.input().full_name(), "orders.v1.ListOrdersRequest");
}

#[test]
fn streams_are_marked() {
    let route = route("orders.v1.OrderService.WatchOrder");
    assert!(route.server_streaming());
    assert_eq!(route.output().full_name(), "orders.v1.WatchOrderResponse");
}

#[test]
fn templates_resolve_nested_fields() {
    let template = PathTemplate::parse(
        "/v1/orders/{order.order_id}/items/{order.total.currency_code=*}",
        &message("orders.v1.PlaceOrderResponse"),
    )
    .unwrap();
    let variables: Vec<String> = template.variables().map(FieldPath::json_name).collect();
    assert_eq!(variables, ["order.orderId", "order.total.currencyCode"]);
    assert_eq!(template.shape(), "/v1/orders/{0}/items/{1}");
}

#[test]
fn unservable_templates_are_refused() {
    let order = message("orders.v1.Order");
    for (template, expected) in [
        ("v1/orders", "does not start with /"),
        ("/v1/orders/{nope}", "has no field \"nope\""),
        ("/v1/orders/{order_id=**}", "only one-segment variables"),
        ("/v1/orders/{order_id=x/*}", "only one-segment variables"),
        (
            "/v1/orders/{order_id}:cancel",
            "a variable is a whole segment",
        ),
        ("/v1/orders:list", "neither a literal nor a variable"),
        ("/v1//orders", "neither a literal nor a variable"),
        ("/v1/o{order_id}", "neither a literal nor a variable"),
        ("/v1/{order_id.x}", "a field of a non-message field"),
    ] {
        let error = PathTemplate::parse(template, &order).unwrap_err();
        assert!(error.contains(expected), "{template}: {error}");
    }
}

#[test]
fn restricted_fields_are_internal() {
    let product = message("inventory.v1.Product");
    let internal: Vec<String> = product
        .fields()
        .filter(is_internal)
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(internal, ["reserved", "sold", "update_time"]);
}

#[test]
fn field_paths_name_both_ways() {
    let path = FieldPath::parse("total.amount_minor", &message("orders.v1.Order")).unwrap();
    assert_eq!(path.to_string(), "total.amount_minor");
    assert_eq!(path.json_name(), "total.amountMinor");
    assert_eq!(path.last().kind(), Kind::Int64);
    assert!(FieldPath::parse("items.sku", &message("orders.v1.Order")).is_err());
}
