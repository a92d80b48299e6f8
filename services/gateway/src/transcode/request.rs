//! HTTP request → request message, by the rules of `google.api.http`: the path's
//! variables, then the body (`*` or one field), then the query string for the
//! fields neither binds, then the idempotency key header. Every value that does not
//! fit its field is a 400 naming it; nothing here can fail otherwise.

use http::HeaderMap;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage as _, Value,
};
use shared::Violations;

use crate::error::ApiError;
use crate::routes::{Body, FieldPath, Route};

/// How request bodies are read: the proto3 JSON mapping, which takes both the JSON
/// (`customerId`) and the proto (`customer_id`) name of a field, and refuses a field
/// the message does not have (a misspelt field would otherwise be silently ignored).
fn json_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(true)
}

/// Sets each path variable of `route` (`values`, in the template's order, already
/// percent-decoded) in `message`.
pub(crate) fn path(
    route: &Route,
    message: &mut DynamicMessage,
    values: &[&str],
) -> Result<(), ApiError> {
    for (field, value) in route.path.variables().zip(values) {
        let parsed = scalar(field.last(), value)
            .map_err(|problem| ApiError::invalid_field(field.to_string(), problem))?;
        set(message, field.fields(), parsed);
    }
    Ok(())
}

/// The request body, as the route binds it. `bytes` is a JSON object.
pub(crate) fn body(
    route: &Route,
    message: &mut DynamicMessage,
    bytes: &[u8],
) -> Result<(), ApiError> {
    match &route.body {
        Body::None => Ok(()),
        Body::Whole => {
            let body = decode_json(&route.input(), bytes)?;
            // A field the path or a header fills is not the body's to set.
            let bound = route
                .path
                .variables()
                .chain(route.idempotency_key.iter().map(|key| &key.field));
            for field in bound {
                if body.has_field(field.first()) {
                    return Err(ApiError::invalid_field(
                        field.first().json_name(),
                        "is not a field of the request body",
                    ));
                }
            }
            merge(message, body);
            Ok(())
        }
        Body::Field(field) => {
            let parent = parent_message(field);
            let last = field.last();
            // The body is the field's value: read it as the field of its message.
            let mut wrapped = Vec::with_capacity(bytes.len() + last.json_name().len() + 8);
            wrapped.extend_from_slice(b"{\"");
            wrapped.extend_from_slice(last.json_name().as_bytes());
            wrapped.extend_from_slice(b"\":");
            wrapped.extend_from_slice(bytes);
            wrapped.push(b'}');
            let mut value = decode_json(&parent, &wrapped)?;
            let value = value
                .take_field(last)
                .unwrap_or_else(|| Value::default_value_for_field(last));
            set(message, field.fields(), value);
            Ok(())
        }
    }
}

/// The query string's pairs, for the fields the path and body do not bind: named by
/// their proto (`page_size`) or JSON (`pageSize`) name, nested fields by their path
/// (`a.b`), repeated fields by repeating the parameter. Parameters that name no such
/// field are ignored, as browsers and proxies add their own.
pub(crate) fn query(
    route: &Route,
    message: &mut DynamicMessage,
    pairs: &[(String, String)],
) -> Result<(), ApiError> {
    if route.body == Body::Whole || pairs.is_empty() {
        return Ok(());
    }
    let open = route.query_fields();
    for (name, value) in pairs {
        let Some(path) = query_field(&route.input(), name) else {
            continue;
        };
        if !open.contains(path.first()) {
            continue;
        }
        let last = path.last();
        if last.is_map() {
            continue;
        }
        let parsed =
            scalar(last, value).map_err(|problem| ApiError::invalid_field(name, problem))?;
        if last.is_list() {
            let list = field_mut(message, path.fields());
            if let Value::List(list) = list {
                list.push(parsed);
            }
        } else {
            set(message, path.fields(), parsed);
        }
    }
    Ok(())
}

/// The field a query parameter names, by proto or JSON names, through singular
/// message fields.
fn query_field(message: &MessageDescriptor, name: &str) -> Option<FieldPath> {
    let mut fields = Vec::new();
    let mut current = Some(message.clone());
    for part in name.split('.') {
        let message = current.take()?;
        let field = message
            .get_field_by_name(part)
            .or_else(|| message.get_field_by_json_name(part))?;
        if !field.is_list() && !field.is_map() {
            current = field.kind().as_message().cloned();
        }
        fields.push(field.name().to_owned());
    }
    FieldPath::parse(&fields.join("."), message).ok()
}

/// The idempotency key in `header`: required, given once, and a valid id (printable
/// ASCII without spaces, at most 128 characters), e.g. a UUID.
///
/// Required rather than generated when missing: a client that retries a POST without
/// a key after a timeout could be charged twice, and the gateway cannot tell a retry
/// from a new request. With authentication on, keys are scoped per token subject (the
/// service keys them by who called): two callers cannot collide, and one cannot
/// learn or replay another's key.
pub(crate) fn idempotency_key(headers: &HeaderMap, header: &str) -> Result<String, ApiError> {
    let mut values = headers.get_all(header).iter();
    let (first, second) = (values.next(), values.next());
    // A value that is not visible ASCII reads as " ", which the id rules reject.
    let key = first.map_or("", |v| v.to_str().unwrap_or(" ")).to_owned();
    let mut violations = Violations::new();
    if first.is_none() {
        violations.add(header, MISSING_KEY);
    } else if second.is_some() {
        violations.add(header, "must be given once");
    } else {
        violations.id(header, &key);
    }
    violations.finish()?;
    Ok(key)
}

const MISSING_KEY: &str = "is required: a new unique value (e.g. a UUID) per request, sent again only to retry that request";

/// `bytes` as one JSON object of message `descriptor`. A value of the wrong type or an
/// unknown field is named by its path (`items[0].quantity`).
pub(crate) fn decode_json(
    descriptor: &MessageDescriptor,
    bytes: &[u8],
) -> Result<DynamicMessage, ApiError> {
    // The mapping would also take `null` for a message.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::invalid(
            "the request body must be a JSON object",
            vec![],
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(&mut deserializer, &mut track);
    let message =
        DynamicMessage::deserialize_with_options(descriptor.clone(), tracked, &json_options())
            .map_err(|error| {
                let mut path = track.path().to_string();
                let description = data_error(&error);
                // An unknown field is reported by the object that has it: name it.
                if let Some(name) = description
                    .strip_prefix("unrecognized field name '")
                    .and_then(|rest| rest.strip_suffix('\''))
                {
                    path = if path == "." {
                        name.to_owned()
                    } else {
                        format!("{path}.{name}")
                    };
                    return ApiError::invalid_field(path, "is not a field of the request");
                }
                match error.classify() {
                    serde_json::error::Category::Data if path != "." => {
                        ApiError::invalid_field(path, description)
                    }
                    _ => ApiError::malformed_json(&error),
                }
            })?;
    // Only whitespace may follow the value.
    deserializer
        .end()
        .map_err(|error| ApiError::malformed_json(&error))?;
    Ok(message)
}

/// A data error's text without serde_json's position (`at line 1 column 9`), which
/// the field's path replaces.
fn data_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// `text` as a value of the scalar (or well-known message) `field`, by the proto3
/// JSON mapping's rules for strings: integers in range, enums by name or number,
/// `Timestamp` in RFC 3339, `Duration` as `1.5s`, `FieldMask` as `a,b.c`.
pub(crate) fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    fn int<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
        text.parse()
            .map_err(|_| format!("must be {what}, not {text:?}"))
    }
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("must be true or false, not {text:?}")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(int(text, "an integer from -2147483648 to 2147483647")?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(int(
            text,
            "an integer from -9223372036854775808 to 9223372036854775807",
        )?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(int(text, "an integer from 0 to 4294967295")?),
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(int(text, "an integer from 0 to 18446744073709551615")?)
        }
        Kind::Float => Value::F32(int(text, "a number")?),
        Kind::Double => Value::F64(int(text, "a number")?),
        Kind::Enum(descriptor) => match descriptor.get_value_by_name(text) {
            Some(value) => Value::EnumNumber(value.number()),
            None => {
                let names: Vec<String> = descriptor.values().map(|v| v.name().to_owned()).collect();
                return Err(format!("must be one of {}", names.join(", ")));
            }
        },
        Kind::Bytes | Kind::Message(_) => {
            // What the mapping says for a JSON string: base64 for bytes; for the
            // well-known types, their string form.
            let json = serde_json::Value::String(text.to_owned());
            let mut holder = DynamicMessage::new(field.parent_message().clone());
            let object = serde_json::json!({ field.json_name(): json });
            holder = DynamicMessage::deserialize_with_options(
                holder.descriptor(),
                object,
                &json_options(),
            )
            .map_err(|e| format!("cannot be {text:?}: {}", data_error(&e)))?;
            holder
                .take_field(field)
                .unwrap_or_else(|| Value::default_value_for_field(field))
        }
    })
}

/// The message the last field of `path` belongs to.
fn parent_message(path: &FieldPath) -> MessageDescriptor {
    path.last().parent_message().clone()
}

/// Sets the field at `path` to `value`, making the messages on the way.
fn set(message: &mut DynamicMessage, path: &[FieldDescriptor], value: Value) {
    *field_mut(message, path) = value;
}

/// The value of the field at `path`, made (empty) with the messages on the way.
fn field_mut<'a>(message: &'a mut DynamicMessage, path: &[FieldDescriptor]) -> &'a mut Value {
    let (last, parents) = path.split_last().expect("a field path is never empty");
    let mut current = message;
    for field in parents {
        current = match current.get_field_mut(field) {
            Value::Message(inner) => inner,
            // FieldPath::parse only goes through singular message fields.
            _ => unreachable!("a field path goes through message fields"),
        };
    }
    current.get_field_mut(last)
}

/// The fields set in `from`, set in `into` (fields set in both: `from`'s).
fn merge(into: &mut DynamicMessage, from: DynamicMessage) {
    for (field, value) in from.fields() {
        into.set_field(&field, value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Routes;
    use crate::routes::tests::route;

    fn place_order(json: &str) -> Result<DynamicMessage, String> {
        let route = route("orders.v1.OrderService.PlaceOrder");
        let mut message = DynamicMessage::new(route.input());
        body(&route, &mut message, json.as_bytes())
            .map(|()| message)
            .map_err(|e| format!("{e:?}"))
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
                r#"field: "coupon""#,
            ),
            (
                r#"{"items": [{"sku": "A", "qty": 1}]}"#,
                r#"field: "items[0].qty""#,
            ),
            (r#"{"requestId": "k"}"#, r#"field: "requestId""#),
        ] {
            let error = place_order(json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
            assert!(!error.contains("line 1"), "{json}: {error}");
        }
    }

    #[test]
    fn both_names_are_taken_in() {
        let message = place_order(r#"{"customer_id": "a", "cardToken": "t"}"#).unwrap();
        assert_eq!(
            message.get_field_by_name("customer_id").unwrap().as_str(),
            Some("a")
        );
        assert_eq!(
            message.get_field_by_name("card_token").unwrap().as_str(),
            Some("t")
        );
    }

    #[test]
    fn malformed_json_is_reported_as_such() {
        for json in [
            "{",
            r#"{"customerId": "c"} trailing"#,
            r#"{"customerId": c}"#,
        ] {
            let error = place_order(json).unwrap_err();
            assert!(error.contains("not valid JSON"), "{json}: {error}");
        }
        for json in ["", " ", "[]", "null", r#""{}""#] {
            let error = place_order(json).unwrap_err();
            assert!(error.contains("must be a JSON object"), "{json}: {error}");
        }
    }

    #[test]
    fn path_and_query_values_fit_their_fields() {
        let route = route("orders.v1.OrderService.ListOrders");
        let mut message = DynamicMessage::new(route.input());
        path(&route, &mut message, &["cus 1"]).unwrap();
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        query(
            &route,
            &mut message,
            &pairs(&[("pageSize", "7"), ("page_token", "p"), ("utm_source", "x")]),
        )
        .unwrap();
        assert_eq!(
            message.get_field_by_name("customer_id").unwrap().as_str(),
            Some("cus 1")
        );
        assert_eq!(
            message.get_field_by_name("page_size").unwrap().as_i32(),
            Some(7)
        );
        // A path-bound field is not the query's to set.
        query(&route, &mut message, &pairs(&[("customer_id", "other")])).unwrap();
        assert_eq!(
            message.get_field_by_name("customer_id").unwrap().as_str(),
            Some("cus 1")
        );
        for bad in ["ten", "99999999999", "1.5", ""] {
            let error = query(&route, &mut message, &pairs(&[("page_size", bad)])).unwrap_err();
            assert_eq!(error.http_status(), http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                format!("{error:?}").contains("page_size"),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn scalars_follow_the_json_mapping_of_strings() {
        let order = Routes::contracts()
            .unwrap()
            .pool()
            .get_message_by_name("orders.v1.Order")
            .unwrap();
        let field = |name: &str| order.get_field_by_name(name).unwrap();
        assert_eq!(
            scalar(&field("status"), "ORDER_STATUS_CONFIRMED").unwrap(),
            Value::EnumNumber(2)
        );
        assert!(
            scalar(&field("status"), "CONFIRMED")
                .unwrap_err()
                .contains("ORDER_STATUS_PENDING")
        );
        let time = scalar(&field("create_time"), "2025-01-31T09:30:00Z").unwrap();
        let time = time.as_message().unwrap();
        assert_eq!(
            time.get_field_by_name("seconds").unwrap().as_i64(),
            Some(1_738_315_800)
        );
        assert!(scalar(&field("create_time"), "yesterday").is_err());
        let money = order.get_field_by_name("total").unwrap();
        let amount = money
            .kind()
            .as_message()
            .unwrap()
            .get_field_by_name("amount_minor")
            .unwrap();
        assert_eq!(
            scalar(&amount, "9223372036854775807").unwrap(),
            Value::I64(i64::MAX)
        );
        assert!(scalar(&amount, "9223372036854775808").is_err());
    }
}
