//! Response message → HTTP answer: the `response_body` field of it (or all of it) in
//! the proto3 JSON mapping (lowerCamelCase names, 64-bit integers as strings, enums
//! by name, well-known types in their string forms, fields at their default left
//! out), without the fields the protos keep off HTTP (`google.api.field_visibility`);
//! and an upstream's error status in the gateway's error shape, its field paths named
//! as the client sent them.

use std::borrow::Cow;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::{CONTENT_TYPE, LOCATION};
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions, Value,
};
use tokio_stream::StreamExt as _;
use tonic::codec::Streaming;
use tonic::{Code, Status};

use super::hidden::Hidden;
use super::json;
use crate::error::ApiError;
use crate::routes::{Body, Route, Segment};

/// The answer of a unary call.
pub(crate) fn unary(route: &Route, message: DynamicMessage, hidden: &Hidden) -> Response {
    let location = route.location.as_ref().map(|template| {
        let mut path = String::new();
        for segment in &template.segments {
            path.push('/');
            match segment {
                Segment::Literal(literal) => path.push_str(literal),
                Segment::Variable(field) => {
                    let value = value_ref(&message, field.fields());
                    percent_encode(&value.map(text).unwrap_or_default(), &mut path);
                }
            }
        }
        path
    });
    let mut response = json_response(route, message, hidden);
    *response.status_mut() = route.status();
    if let Some(location) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// The answer of a server-streaming call: Server-Sent Events, one `data:` line of
/// JSON per message; an error ends the stream with an `event: error` whose data is
/// the JSON error. A comment every 15 s keeps idle connections open.
pub(crate) fn stream(
    route: Arc<Route>,
    messages: Streaming<DynamicMessage>,
    hidden: Arc<Hidden>,
) -> Response {
    let events = messages.map(move |item| {
        let event = match item {
            Ok(message) => match json_bytes(&route, message, &hidden) {
                Ok(json) => Event::default().data(String::from_utf8_lossy(&json)),
                Err(error) => error_event(&ApiError::internal(&error.to_string())),
            },
            Err(status) => error_event(&upstream_error(&route, status, None)),
        };
        Ok::<_, std::convert::Infallible>(event)
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn error_event(error: &ApiError) -> Event {
    Event::default()
        .event("error")
        .data(error.body_json().to_string())
}

/// A 200 with the JSON of the answer's body.
fn json_response(route: &Route, message: DynamicMessage, hidden: &Hidden) -> Response {
    match json_bytes(route, message, hidden) {
        Ok(json) => {
            let mut response = Response::new(axum::body::Body::from(json));
            let json_type = HeaderValue::from_static("application/json");
            response.headers_mut().insert(CONTENT_TYPE, json_type);
            response
        }
        Err(error) => {
            ApiError::internal(&format!("cannot write the answer as JSON: {error}")).into_response()
        }
    }
}

/// The JSON of the answer's body: the `response_body` field, or the whole message,
/// written straight from the message (no intermediate JSON value), without its
/// hidden fields.
fn json_bytes(
    route: &Route,
    mut message: DynamicMessage,
    hidden: &Hidden,
) -> serde_json::Result<Vec<u8>> {
    let Some(field) = &route.response_body else {
        return json::to_vec(&message, hidden);
    };
    let (last, parents) = field
        .fields()
        .split_last()
        .expect("a field path is never empty");
    if let Kind::Message(kind) = last.kind()
        && !last.is_list()
        && !last.is_map()
    {
        // Set or not, a message field's answer is that message (`{}` when unset); a
        // field on the way that the protos hide reads as unset.
        let shown = !field.fields().iter().any(|field| hidden.hides(field));
        return match value_ref(&message, field.fields()).filter(|_| shown) {
            Some(Value::Message(inner)) => json::to_vec(inner, hidden),
            _ => json::to_vec(&DynamicMessage::new(kind), hidden),
        };
    }
    // A list or a scalar: the mapping of the field's value, as in its message, as
    // prost-reflect writes it.
    hidden.strip(&mut message);
    let mut current = message;
    for parent in parents {
        current = match current.take_field(parent) {
            Some(Value::Message(inner)) => inner,
            _ => DynamicMessage::new(last.parent_message().clone()),
        };
    }
    let mut holder = DynamicMessage::new(last.parent_message().clone());
    if let Some(value) = current.take_field(last) {
        holder.set_field(last, value);
    }
    let options = SerializeOptions::new().skip_default_fields(false);
    let json = holder.serialize_with_options(serde_json::value::Serializer, &options)?;
    serde_json::to_vec(&json.get(last.json_name()))
}

/// The value at `path` in `message`; `None` when unset.
fn value_ref<'a>(message: &'a DynamicMessage, path: &[FieldDescriptor]) -> Option<&'a Value> {
    let (last, parents) = path.split_last().expect("a field path is never empty");
    let mut current = message;
    for field in parents {
        match current.get_field(field) {
            Cow::Borrowed(Value::Message(inner)) => current = inner,
            _ => return None,
        }
    }
    match current.get_field(last) {
        Cow::Borrowed(value) => Some(value),
        Cow::Owned(_) => None,
    }
}

/// A scalar as the text of a path segment.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        Value::EnumNumber(n) => n.to_string(),
        _ => String::new(),
    }
}

/// `text` as one path segment: unreserved characters (RFC 3986) as they are, every
/// other byte percent-encoded.
fn percent_encode(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// An upstream's error status as the client gets it: the idempotency key reused is
/// a 409 naming the header; field violations are named as the client sent the
/// fields (the body's by their JSON path, `items[0].unitPrice`; the path's and
/// query's by their proto names, as in the template and the query string; the
/// header's by the header).
pub(crate) fn upstream_error(route: &Route, status: Status, key: Option<&str>) -> ApiError {
    if let (Some(binding), Some(key), Code::AlreadyExists) =
        (&route.idempotency_key, key, status.code())
    {
        return ApiError::key_reused(&canonical_header(binding.header.as_str()), key);
    }
    let input = route.input();
    ApiError::from(status).rename_fields(|path| {
        if let Some(binding) = &route.idempotency_key
            && path == binding.field.to_string()
        {
            return canonical_header(binding.header.as_str());
        }
        let first = path.split(['.', '[']).next().unwrap_or_default();
        let in_body = match &route.body {
            Body::Whole => true,
            Body::Field(field) => field.first().name() == first,
            Body::None => false,
        };
        if in_body {
            json_path(&input, path)
        } else {
            path.to_owned()
        }
    })
}

/// `Idempotency-Key` for `idempotency-key`: how the header is written in the docs
/// and by clients (HTTP names are case-insensitive; `http` keeps them lower-case).
pub(crate) fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

/// A proto field path (`items[0].unit_price`) in JSON names (`items[0].unitPrice`);
/// the parts that name no field of `message` stay as they are.
pub(crate) fn json_path(message: &MessageDescriptor, path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut current = Some(message.clone());
    for (i, part) in path.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        let (name, index) = part.split_at(part.find('[').unwrap_or(part.len()));
        let field = current.as_ref().and_then(|m| m.get_field_by_name(name));
        match field {
            Some(field) => {
                out.push_str(field.json_name());
                current = field.kind().as_message().cloned();
            }
            None => {
                out.push_str(name);
                current = None;
            }
        }
        out.push_str(index);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::tests::route;

    #[test]
    fn proto_field_paths_become_json_paths() {
        let route = route("orders.v1.OrderService.PlaceOrder");
        let input = route.input();
        assert_eq!(json_path(&input, "customer_id"), "customerId");
        assert_eq!(json_path(&input, "items[2].quantity"), "items[2].quantity");
        assert_eq!(
            json_path(&input, "items[0].unit_price.amount_minor"),
            "items[0].unitPrice.amountMinor"
        );
        assert_eq!(json_path(&input, "no_such.field_x"), "no_such.field_x");
        assert_eq!(json_path(&input, ""), "");
    }

    #[test]
    fn header_names_read_as_written() {
        assert_eq!(canonical_header("idempotency-key"), "Idempotency-Key");
        assert_eq!(canonical_header("x-request-id"), "X-Request-Id");
    }
}
