//! The JSON schemas of the document: one per message in the proto3 JSON mapping,
//! enums by name, the well-known types in their string forms, the proto comments as
//! descriptions, and the gateway's one error shape.

use std::collections::BTreeMap;

use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::routes::{Route, is_internal};

/// Where the schemas of messages are: `#/components/schemas/<full name>`.
pub(super) const SCHEMAS: &str = "#/components/schemas/";

/// The schemas of the messages the routes refer to, by full name.
#[derive(Default)]
pub(super) struct Schemas {
    done: BTreeMap<String, Value>,
}

impl Schemas {
    pub(super) fn done(self) -> Map<String, Value> {
        self.done.into_iter().collect()
    }

    /// A reference to the schema of `message` (added on first use), or the inline
    /// schema of a well-known type.
    pub(super) fn message(&mut self, message: &MessageDescriptor) -> Value {
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
    pub(super) fn body(&mut self, route: &Route) -> Value {
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
    pub(super) fn field(&mut self, field: &FieldDescriptor) -> Value {
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

pub(super) fn is_well_known(message: &MessageDescriptor) -> bool {
    well_known(message).is_some()
}

/// The leading comment of the element at `path` of `file` (`source_code_info`), as
/// one paragraph per blank-line-separated block.
pub(super) fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?;
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let text = lines.join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

pub(super) fn describe(field: &FieldDescriptor) -> Option<String> {
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
pub(super) fn error_schema() -> Value {
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
