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

use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{Body, Route, Routes, Segment, is_internal};

/// The name of the security scheme every route uses.
const BEARER: &str = "bearer";
/// Where the schemas of messages are: `#/components/schemas/<full name>`.
const SCHEMAS: &str = "#/components/schemas/";

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

/// The schemas of the messages the routes refer to, by full name.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
}

impl Schemas {
    fn done(self) -> Map<String, Value> {
        self.done.into_iter().collect()
    }

    /// A reference to the schema of `message` (added on first use), or the inline
    /// schema of a well-known type.
    fn message(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(message) {
            return schema;
        }
        let name = message.full_name().to_owned();
        if !self.done.contains_key(&name) {
            // Taken first, so that a recursive message refers to itself.
            self.done.insert(name.clone(), Value::Null);
            let schema = self.object(message, |_| false);
            self.done.insert(name.clone(), schema);
        }
        json!({"$ref": format!("{SCHEMAS}{name}")})
    }

    /// The schema of the request body of a `body: "*"` route: the request message
    /// without the fields the path and the idempotency header fill.
    fn body(&mut self, route: &Route) -> Value {
        let bound: Vec<FieldDescriptor> = route
            .path
            .variables()
            .chain(route.idempotency_key.iter().map(|key| &key.field))
            .filter(|path| path.fields().len() == 1)
            .map(|path| path.first().clone())
            .collect();
        self.object(&route.input(), |field| bound.contains(field))
    }

    fn object(
        &mut self,
        message: &MessageDescriptor,
        skip: impl Fn(&FieldDescriptor) -> bool,
    ) -> Value {
        let mut properties = Map::new();
        for field in message.fields() {
            if is_internal(&field) || skip(&field) {
                continue;
            }
            let mut schema = self.field(&field);
            if let Some(text) = describe(&field) {
                schema = with_description(schema, text);
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if let Some(text) = comment(&message.parent_file(), message.path()) {
            schema["description"] = text.into();
        }
        schema
    }

    /// The schema of a field's JSON value: repeated as an array, a map as an object.
    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("a map field's kind is its entry message")
            };
            let value = self.single(&entry.map_entry_value_field());
            return json!({"type": "object", "additionalProperties": value});
        }
        let single = self.single(field);
        if field.is_list() {
            json!({"type": "array", "items": single})
        } else {
            single
        }
    }

    /// The schema of one value of `field` (proto3 JSON mapping).
    fn single(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Double | Kind::Float => json!({"type": "number"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "uint32", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(descriptor) => enum_schema(&descriptor),
            Kind::Message(message) => self.message(&message),
        }
    }
}

/// An enum by its value names (as the gateway writes them).
fn enum_schema(descriptor: &EnumDescriptor) -> Value {
    let names: Vec<String> = descriptor.values().map(|v| v.name().to_owned()).collect();
    let mut schema = json!({"type": "string", "enum": names});
    let described: Vec<String> = descriptor
        .values()
        .filter_map(|value| {
            comment(&value.parent_file(), value.path())
                .map(|c| format!("- `{}`: {c}", value.name()))
        })
        .collect();
    let mut text = comment(&descriptor.parent_file(), descriptor.path()).unwrap_or_default();
    if !described.is_empty() {
        text = format!("{text}\n\n{}", described.join("\n"));
    }
    if !text.trim().is_empty() {
        schema["description"] = text.trim().into();
    }
    schema
}

/// The well-known types the proto3 JSON mapping writes in their own forms.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    let wrapper = |kind: &str| match kind {
        "Int64Value" => json!({"type": "string", "format": "int64"}),
        "UInt64Value" => json!({"type": "string", "format": "uint64"}),
        "Int32Value" | "UInt32Value" => json!({"type": "integer"}),
        "DoubleValue" | "FloatValue" => json!({"type": "number"}),
        "BoolValue" => json!({"type": "boolean"}),
        "BytesValue" => json!({"type": "string", "contentEncoding": "base64"}),
        _ => json!({"type": "string"}),
    };
    let schema = match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "description": "A duration in seconds, e.g. `1.5s`."})
        }
        "google.protobuf.FieldMask" => {
            json!({"type": "string", "description": "Field paths in lowerCamelCase, comma-separated."})
        }
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Any" => {
            json!({"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"]})
        }
        name => match name.strip_prefix("google.protobuf.") {
            Some(kind) if kind.ends_with("Value") => wrapper(kind),
            _ => return None,
        },
    };
    Some(schema)
}

fn is_well_known(message: &MessageDescriptor) -> bool {
    well_known(message).is_some()
}

/// The leading comment of the element at `path` of `file` (`source_code_info`), as
/// one paragraph per blank-line-separated block.
fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let text = lines.join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn describe(field: &FieldDescriptor) -> Option<String> {
    comment(&field.parent_file(), field.path())
}

/// `schema` with a description; a `$ref` is wrapped, as siblings of `$ref` describe
/// the reference in OpenAPI 3.1 but some tools ignore them.
fn with_description(schema: Value, text: String) -> Value {
    if schema.get("$ref").is_some() {
        json!({"allOf": [schema], "description": text})
    } else {
        let mut schema = schema;
        schema["description"] = text.into();
        schema
    }
}

/// The gateway's one error shape (`error.rs`).
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Every error answer of the gateway, modeled on Google's JSON error model.",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status."},
                "status": {
                    "type": "string",
                    "description": "The gRPC code's name: stable, for programs.",
                    "enum": [
                        "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                        "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                        "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
                    ],
                },
                "message": {"type": "string", "description": "For people."},
                "details": {
                    "type": "array",
                    "description": "A field violation per invalid input, or a precondition \
                        violation per rule the current state breaks.",
                    "items": {"oneOf": [
                        {
                            "type": "object",
                            "title": "FieldViolation",
                            "required": ["field", "description"],
                            "properties": {
                                "field": {"type": "string", "description": "The input's path in the JSON body (`items[0].quantity`), or the query parameter's or header's name."},
                                "description": {"type": "string"},
                            },
                            "additionalProperties": false,
                        },
                        {
                            "type": "object",
                            "title": "PreconditionViolation",
                            "required": ["type", "subject", "description"],
                            "properties": {
                                "type": {"type": "string", "description": "Which kind of rule, e.g. `STOCK`."},
                                "subject": {"type": "string", "description": "What it is about, e.g. a sku."},
                                "description": {"type": "string"},
                            },
                            "additionalProperties": false,
                        },
                    ]},
                },
            },
        }},
    })
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
