//! A message as proto3 JSON, written straight into bytes: what prost-reflect's serde
//! support writes (lowerCamelCase names, fields at their default left out, 64-bit
//! integers as strings, enums by name, bytes in base64, `Timestamp` and `Duration` in
//! their string forms), several times faster on the answers the gateway writes on
//! every request: prost-reflect turns each well-known-type value into its prost type
//! (an encode and a decode) and goes through serde's generic machinery for each
//! field. The other well-known types (`Struct`, `Any`, wrappers, …) are left to
//! prost-reflect. A unit test holds the two to the same output.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage as _, Value};

use super::hidden::Hidden;

/// `message` as proto3 JSON, without the fields `hidden` names.
pub(crate) fn to_vec(message: &DynamicMessage, hidden: &Hidden) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    let hidden = (!hidden.is_empty()).then_some(hidden);
    write_message(&mut out, message, hidden)?;
    Ok(out)
}

/// `hidden`: `None` when no message within `message` has a hidden field.
fn write_message(
    out: &mut Vec<u8>,
    message: &DynamicMessage,
    hidden: Option<&Hidden>,
) -> serde_json::Result<()> {
    let descriptor = message.descriptor();
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => {
            let (seconds, nanos) = seconds_nanos(message);
            let time = prost_types::Timestamp { seconds, nanos };
            // RFC 3339: nothing in it to escape.
            return write!(out, "\"{time}\"").map_err(serde_json::Error::io);
        }
        "google.protobuf.Duration" => {
            let (seconds, nanos) = seconds_nanos(message);
            let duration = prost_types::Duration { seconds, nanos };
            // `1.5s`: nothing in it to escape.
            return write!(out, "\"{duration}\"").map_err(serde_json::Error::io);
        }
        name if name.starts_with("google.protobuf.") => {
            return serde_json::to_writer(out, message);
        }
        _ => {}
    }
    // Its own hidden fields; and `None` below when nothing within hides.
    let (own, hidden) = match hidden.and_then(|h| Some((h.in_message(&descriptor)?, h))) {
        Some((own, hidden)) => (own, Some(hidden)),
        None => (&[][..], None),
    };
    out.push(b'{');
    let mut first = true;
    for (field, value) in message.fields() {
        if (!field.supports_presence() && is_default(value)) || own.contains(&field.number()) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, field.json_name())?;
        out.push(b':');
        write_field(out, &field, value, hidden)?;
    }
    out.push(b'}');
    Ok(())
}

fn seconds_nanos(message: &DynamicMessage) -> (i64, i32) {
    let seconds = message.get_field_by_number(1).and_then(|v| v.as_i64());
    let nanos = message.get_field_by_number(2).and_then(|v| v.as_i32());
    (seconds.unwrap_or(0), nanos.unwrap_or(0))
}

/// Whether `value` is its field's default, which the mapping leaves out: proto3's
/// zero values (its fields have no other defaults). Compared by hand: making the
/// field's default `Value` to compare with costs more than writing the field.
fn is_default(value: &Value) -> bool {
    match value {
        Value::Bool(b) => !b,
        Value::I32(n) => *n == 0,
        Value::I64(n) => *n == 0,
        Value::U32(n) => *n == 0,
        Value::U64(n) => *n == 0,
        Value::F32(n) => n.to_bits() == 0,
        Value::F64(n) => n.to_bits() == 0,
        Value::String(s) => s.is_empty(),
        Value::Bytes(b) => b.is_empty(),
        Value::EnumNumber(n) => *n == 0,
        Value::List(items) => items.is_empty(),
        Value::Map(entries) => entries.is_empty(),
        Value::Message(_) => false,
    }
}

fn write_field(
    out: &mut Vec<u8>,
    field: &FieldDescriptor,
    value: &Value,
    hidden: Option<&Hidden>,
) -> serde_json::Result<()> {
    match value {
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, field, item, hidden)?;
            }
            out.push(b']');
            Ok(())
        }
        Value::Map(entries) => {
            let value_field = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field(),
                _ => field.clone(),
            };
            out.push(b'{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let key = match key {
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                    MapKey::String(s) => s.clone(),
                };
                serde_json::to_writer(&mut *out, &key)?;
                out.push(b':');
                write_value(out, &value_field, value, hidden)?;
            }
            out.push(b'}');
            Ok(())
        }
        value => write_value(out, field, value, hidden),
    }
}

/// One value of `field` (an item, for a list; the value, for a map).
fn write_value(
    out: &mut Vec<u8>,
    field: &FieldDescriptor,
    value: &Value,
    hidden: Option<&Hidden>,
) -> serde_json::Result<()> {
    match value {
        Value::Bool(b) => serde_json::to_writer(out, b),
        Value::I32(n) => serde_json::to_writer(out, n),
        Value::U32(n) => serde_json::to_writer(out, n),
        Value::I64(n) => quoted(out, n),
        Value::U64(n) => quoted(out, n),
        Value::F32(n) if n.is_finite() => serde_json::to_writer(out, n),
        Value::F64(n) if n.is_finite() => serde_json::to_writer(out, n),
        Value::F32(n) => serde_json::to_writer(out, non_finite(f64::from(*n))),
        Value::F64(n) => serde_json::to_writer(out, non_finite(*n)),
        Value::String(s) => serde_json::to_writer(out, s),
        Value::Bytes(b) => serde_json::to_writer(out, &BASE64.encode(b)),
        Value::EnumNumber(number) => match &field.kind() {
            Kind::Enum(descriptor) if descriptor.full_name() == "google.protobuf.NullValue" => {
                out.extend_from_slice(b"null");
                Ok(())
            }
            Kind::Enum(descriptor) => match descriptor.get_value(*number) {
                Some(value) => serde_json::to_writer(out, value.name()),
                None => serde_json::to_writer(out, number),
            },
            _ => serde_json::to_writer(out, number),
        },
        Value::Message(message) => write_message(out, message, hidden),
        // A list or map is only ever a field's whole value (write_field).
        Value::List(_) | Value::Map(_) => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// A 64-bit integer as a JSON string, as the mapping writes them.
fn quoted<N: serde::Serialize>(out: &mut Vec<u8>, n: &N) -> serde_json::Result<()> {
    out.push(b'"');
    serde_json::to_writer(&mut *out, n)?;
    out.push(b'"');
    Ok(())
}

fn non_finite(n: f64) -> &'static str {
    if n.is_nan() {
        "NaN"
    } else if n > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    fn dynamic(name: &str, message: &impl prost::Message) -> DynamicMessage {
        let pool = DescriptorPool::decode(contracts::FILE_DESCRIPTOR_SET).unwrap();
        let descriptor = pool.get_message_by_name(name).unwrap();
        DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).unwrap()
    }

    /// The fields the protos keep off HTTP are left out as the message is written,
    /// in a message within a list too; the others are all there.
    #[test]
    fn leaves_the_hidden_fields_out() {
        use contracts::inventory::v1 as inventory;
        let product = inventory::Product {
            sku: "SKU-1".into(),
            available: 5,
            reserved: 2,
            sold: 3,
            update_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let list = dynamic(
            "inventory.v1.ListProductsResponse",
            &inventory::ListProductsResponse {
                products: vec![product.clone(), product],
                next_page_token: "p".into(),
            },
        );
        let hidden = Hidden::of(&list.descriptor());
        let json: serde_json::Value =
            serde_json::from_slice(&to_vec(&list, &hidden).unwrap()).unwrap();
        let shown = serde_json::json!({"sku": "SKU-1", "available": "5"});
        assert_eq!(
            json,
            serde_json::json!({"products": [shown, shown], "nextPageToken": "p"})
        );
        // Without them named, they are written.
        let all = String::from_utf8(to_vec(&list, &Hidden::default()).unwrap()).unwrap();
        assert!(all.contains(r#""reserved":"2""#), "{all}");
    }

    /// The same JSON as prost-reflect's serde support, on messages with every kind of
    /// field the contracts have, and on an empty one.
    #[test]
    fn writes_what_prost_reflect_writes() {
        use contracts::common::v1::Money;
        use contracts::inventory::v1 as inventory;
        use contracts::orders::v1 as orders;
        let money = |n| {
            Some(Money {
                currency_code: "USD\"\u{e9}\n".into(),
                amount_minor: n,
            })
        };
        let time = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
        let order = orders::Order {
            order_id: "ord_1".into(),
            request_id: "key".into(),
            customer_id: "cus_1".into(),
            items: vec![
                orders::OrderItem {
                    sku: "SKU-001".into(),
                    quantity: 2,
                    unit_price: money(-2400),
                },
                orders::OrderItem::default(),
            ],
            total: money(i64::MAX),
            status: 3,
            status_reason: String::new(),
            payment_id: "pay_1".into(),
            create_time: time(1_700_000_000, 0),
            update_time: time(1_700_000_001, 120_000_000),
        };
        let messages = [
            dynamic("orders.v1.Order", &order),
            dynamic(
                "orders.v1.Order",
                &orders::Order {
                    status: 99,
                    ..Default::default()
                },
            ),
            dynamic("orders.v1.Order", &orders::Order::default()),
            dynamic(
                "inventory.v1.ListProductsResponse",
                &inventory::ListProductsResponse {
                    products: vec![inventory::Product {
                        sku: "SKU-1".into(),
                        available: 5,
                        update_time: time(-1, 5),
                        ..Default::default()
                    }],
                    next_page_token: "p".into(),
                },
            ),
        ];
        for message in messages {
            let ours: serde_json::Value =
                serde_json::from_slice(&to_vec(&message, &Hidden::default()).unwrap()).unwrap();
            let theirs = serde_json::to_value(&message).unwrap();
            assert_eq!(ours, theirs);
        }
    }
}
