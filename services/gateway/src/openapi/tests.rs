use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;

fn doc() -> Value {
    document(&Routes::contracts().expect("the contracts' routes are valid"))
}

fn op<'a>(doc: &'a Value, path: &str, verb: &str) -> &'a Value {
    let op = &doc["paths"][path][verb];
    assert!(op.is_object(), "no {verb} {path} in {:#}", doc["paths"]);
    op
}

fn parameter<'a>(op: &'a Value, name: &str) -> &'a Value {
    op["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no parameter {name} in {op:#}"))
}

/// `docs/openapi.json` is what `GET /openapi.json` serves; `UPDATE_OPENAPI=1` rewrites it.
#[test]
fn the_checked_in_document_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let current = pretty(&doc());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).expect("docs/openapi.json written");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "docs/openapi.json is not the document the protos make: regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p gateway --lib openapi` and commit it"
    );
}

#[test]
fn every_route_is_an_operation_with_its_scope() {
    let routes = Routes::contracts().unwrap();
    let doc = doc();
    assert!(!routes.is_empty());
    for route in &routes {
        let verb = route.verb.as_str().to_ascii_lowercase();
        let op = op(&doc, &openapi_path(route), &verb);
        assert_eq!(op["operationId"], route.method.full_name());
        assert_eq!(op["security"], json!([{"bearer": [route.scope]}]));
        let success = &op["responses"][route.status().as_str()];
        assert!(success.is_object(), "{op:#}");
        assert_eq!(
            op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn parameters_come_from_the_path_the_query_and_headers() {
    let doc = doc();
    let get = op(&doc, "/v1/products/{sku}", "get");
    let sku = parameter(get, "sku");
    assert_eq!(sku["in"], "path");
    assert_eq!(sku["required"], true);
    assert_eq!(sku["schema"]["type"], "string");

    let list = op(&doc, "/v1/products", "get");
    let size = parameter(list, "page_size");
    assert_eq!(
        (&size["in"], &size["schema"]["type"]),
        (&json!("query"), &json!("integer"))
    );
    assert!(list.get("requestBody").is_none());

    let place = op(&doc, "/v1/orders", "post");
    let key = parameter(place, "idempotency-key");
    assert_eq!(
        (&key["in"], &key["required"]),
        (&json!("header"), &json!(true))
    );
    // The header fills request_id: the body does not carry it.
    let body = &place["requestBody"]["content"]["application/json"]["schema"];
    assert!(body["properties"]["items"].is_object(), "{body:#}");
    assert!(body["properties"].get("requestId").is_none(), "{body:#}");
    let created = &place["responses"]["201"];
    assert!(created["headers"]["Location"].is_object(), "{created:#}");
    assert_eq!(
        created["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/orders.v1.Order"
    );
}

#[test]
fn schemas_follow_the_proto3_json_mapping_with_the_proto_comments() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let money = &schemas["common.v1.Money"]["properties"];
    // 64-bit integers are strings; names are lowerCamelCase.
    assert_eq!(money["amountMinor"]["type"], "string", "{money:#}");
    assert_eq!(money["amountMinor"]["format"], "int64");
    let order = &schemas["orders.v1.Order"];
    assert_eq!(order["properties"]["createTime"]["type"], "string");
    assert_eq!(order["properties"]["createTime"]["format"], "date-time");
    // Enums by name, described by their comments.
    let status = &order["properties"]["status"];
    assert!(
        status["enum"]
            .as_array()
            .is_some_and(|names| names.contains(&json!("ORDER_STATUS_CONFIRMED"))),
        "{status:#}"
    );
    // Comments: the message's, and each field's.
    let product = &schemas["inventory.v1.Product"];
    assert!(
        product["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{product:#}"
    );
    assert!(
        product["properties"]["available"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("reserved now")),
        "{product:#}"
    );
    let get = op(&doc, "/v1/products/{sku}", "get");
    assert!(
        get["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Returns one product.")),
        "{get:#}"
    );
}

#[test]
fn server_streams_are_server_sent_events() {
    let doc = doc();
    let watch = op(&doc, "/v1/orders/{order_id}/watch", "get");
    let content = &watch["responses"]["200"]["content"];
    assert!(content["text/event-stream"].is_object(), "{watch:#}");
    assert!(content.get("application/json").is_none(), "{watch:#}");
}
