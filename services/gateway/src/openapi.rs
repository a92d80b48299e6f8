//! The OpenAPI 3.1 document of the HTTP API, made from the same route model the
//! gateway serves ([`Routes`], read from `google.api.http` and `gateway.v1.route`):
//! a new annotated RPC is in it after a rebuild, like on HTTP.
//!
//! - **paths**: one operation per route; its path, query and header parameters are the
//!   request fields the path template, the query string and the idempotency header
//!   fill; its request body the fields `body` names;
//! - **schemas**: one per message, in the proto3 JSON mapping the gateway speaks
//!   (lowerCamelCase names, 64-bit integers as strings, enums by name, the well-known
//!   types in their string forms), with the proto comments as descriptions; fields
//!   kept off HTTP (`google.api.field_visibility`) are left out;
//! - **security**: the bearer scheme, with each route's scope;
//! - **errors**: the gateway's one JSON error shape (`error.rs`);
//! - **server streams**: `text/event-stream`, one JSON message per `data:` line.
//!
//! `GET /openapi.json` serves it; `docs/openapi.json` is a copy checked in for readers
//! and tools, which a test keeps in step.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind};
use serde_json::{Map, Value, json};

use crate::routes::{Body, Route, Routes, Segment, is_internal};
use schema::{SCHEMAS, Schemas, comment, describe, error_schema, is_well_known};

mod schema;

/// The name of the security scheme every route uses.
const BEARER: &str = "bearer";

/// The document of `routes`, as JSON.
pub fn document(routes: &Routes) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in routes {
        let operation = operation(route, &mut schemas);
        paths
            .entry(openapi_path(route))
            .or_default()
            .insert(route.verb.as_str().to_ascii_lowercase(), operation);
    }
    let tags: Vec<Value> = routes
        .services()
        .iter()
        .map(|service| {
            let mut tag = json!({"name": service.full_name()});
            if let Some(text) = comment(&service.parent_file(), service.path()) {
                tag["description"] = text.into();
            }
            tag
        })
        .collect();
    let mut components = schemas.done();
    components.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "gateway",
            // The contract's version (its protos' packages are all `v1`), not the
            // crates': a release bump leaves the document as it is.
            "version": "v1",
            "description": "The HTTP/JSON API of the gateway, generated from the protos' \
                `google.api.http` and `gateway.v1.route` options. Every route takes a bearer \
                JWT granting its scope (when authentication is on) and answers errors in one \
                JSON shape (`Error`).",
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT whose `scope` claim grants the route's scope \
                        (listed per operation).",
                },
            },
        },
    })
}

/// The route's template with its variables named by their proto field paths, as
/// OpenAPI writes them: `/v1/orders/{order_id}`.
fn openapi_path(route: &Route) -> String {
    let mut path = String::new();
    for segment in &route.path.segments {
        path.push('/');
        match segment {
            Segment::Literal(literal) => path.push_str(literal),
            Segment::Variable(field) => path.push_str(&format!("{{{field}}}")),
        }
    }
    path
}

fn operation(route: &Route, schemas: &mut Schemas) -> Value {
    let method = &route.method;
    let mut parameters = Vec::new();
    for field in route.path.variables() {
        let mut parameter = json!({
            "name": field.to_string(),
            "in": "path",
            "required": true,
            "schema": schemas.field(field.last()),
        });
        if let Some(text) = describe(field.last()) {
            parameter["description"] = text.into();
        }
        parameters.push(parameter);
    }
    for field in route.query_fields() {
        if !is_internal(&field) {
            query_parameters(&field, String::new(), schemas, &mut parameters, 0);
        }
    }
    if let Some(key) = &route.idempotency_key {
        parameters.push(json!({
            "name": key.header.as_str(),
            "in": "header",
            "required": true,
            "description": format!(
                "The caller's idempotency key (AIP-155), sent as `{}`: the same key and \
                 request answer the same result; the same key with another request is 409.",
                key.field
            ),
            "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$"},
        }));
    }

    let mut op = json!({
        "operationId": method.full_name(),
        "tags": [method.parent_service().full_name()],
        "summary": method.name(),
        "security": [{BEARER: [route.scope.as_str()]}],
        "responses": responses(route, schemas),
    });
    let mut description = comment(&method.parent_file(), method.path()).unwrap_or_default();
    description.push_str(&format!(
        "\n\nScope: `{}`. gRPC: `{}`.",
        route.scope,
        route.grpc_path()
    ));
    op["description"] = description.trim_start().into();
    if !parameters.is_empty() {
        op["parameters"] = parameters.into();
    }
    let body = match &route.body {
        Body::None => None,
        Body::Whole => Some(schemas.body(route)),
        Body::Field(field) => Some(schemas.field(field.last())),
    };
    if let Some(schema) = body {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema}},
        });
    }
    op
}

/// The query parameters of `field`: itself if scalar (or repeated scalar), else its
/// fields as `parent.child`, a few levels deep.
fn query_parameters(
    field: &FieldDescriptor,
    prefix: String,
    schemas: &mut Schemas,
    out: &mut Vec<Value>,
    depth: usize,
) {
    let name = format!("{prefix}{}", field.name());
    match field.kind() {
        Kind::Message(message) if !is_well_known(&message) => {
            if field.is_list() || field.is_map() || depth >= 3 {
                return;
            }
            for inner in message.fields().filter(|f| !is_internal(f)) {
                query_parameters(&inner, format!("{name}."), schemas, out, depth + 1);
            }
        }
        _ if field.is_map() => {}
        _ => {
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": false,
                "schema": schemas.field(field),
            });
            if let Some(text) = describe(field) {
                parameter["description"] = text.into();
            }
            if field.is_list() {
                parameter["explode"] = true.into();
            }
            out.push(parameter);
        }
    }
}

fn responses(route: &Route, schemas: &mut Schemas) -> Value {
    let output = route.output();
    let success = match &route.response_body {
        Some(field) => schemas.field(field.last()),
        None => schemas.message(&output),
    };
    let mut ok = if route.server_streaming() {
        json!({
            "description": format!(
                "A stream of Server-Sent Events: one `data:` line per message, each the JSON \
                 of `{}`; a failure mid-stream ends it with an `error` event whose data is an \
                 `Error`.",
                success.get("$ref").and_then(Value::as_str).map_or_else(
                    || output.full_name().to_owned(),
                    |r| r.trim_start_matches(SCHEMAS).to_owned()
                )
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        })
    } else {
        json!({
            "description": "Success.",
            "content": {"application/json": {"schema": success}},
        })
    };
    if let Some(location) = &route.location {
        ok["headers"] = json!({"Location": {
            "description": format!("The new resource: `{}`.", location.template),
            "schema": {"type": "string"},
        }});
    }
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": format!("{SCHEMAS}Error")}}},
        })
    };
    let mut responses = json!({
        route.status().as_str(): ok,
        "400": error("Invalid request (INVALID_ARGUMENT, OUT_OF_RANGE): `details` names each invalid field."),
        "401": error("No valid bearer token (UNAUTHENTICATED)."),
        "403": error("The token does not grant the route's scope, or the resource is another caller's (PERMISSION_DENIED)."),
        "404": error("Not found (NOT_FOUND), or no such route."),
        "429": error("Rate limited or overloaded (RESOURCE_EXHAUSTED); see `Retry-After`."),
        "503": error("An upstream is unavailable (UNAVAILABLE); see `Retry-After`."),
        "504": error("The upstream call's deadline passed (DEADLINE_EXCEEDED)."),
        "default": error("Any other error, in the same shape."),
    });
    if route.body != Body::None || route.idempotency_key.is_some() {
        responses["409"] = error(
            "The current state stands in the way (FAILED_PRECONDITION: `details` says which rule), \
             or the idempotency key was used for another request (ALREADY_EXISTS).",
        );
        responses["413"] = error("The request body is too large.");
    }
    responses
}

/// `GET /openapi.json`: the document of the contracts' routes, made once.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let routes = Routes::contracts().expect("the contracts' routes are valid (routes.rs tests)");
    let body = bytes::Bytes::from(pretty(&document(&routes)));
    let serve = move || {
        let body = body.clone();
        async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
    };
    axum::Router::new().route("/openapi.json", axum::routing::get(serve))
}

/// The document as served and checked in: indented, with a final newline.
fn pretty(document: &Value) -> String {
    let mut text = serde_json::to_string_pretty(document).expect("JSON values serialize");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests;
