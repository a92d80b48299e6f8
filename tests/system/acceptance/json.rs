//! Comparing the tools' JSON output with expectations.
//!
//! An expectation is the exact JSON the tool should print (protobuf JSON: camelCase
//! names, int64 as strings, default values left out), except for these string
//! placeholders, for values that differ from run to run:
//!
//! - `"<timestamp>"`: an RFC 3339 UTC time, as protobuf JSON writes a `Timestamp`;
//! - `"<id:pay_>"`: a server-assigned id, the prefix then 32 hex digits (`shared::id`);
//! - `"<nonempty>"`: any non-empty string (an opaque page token, a text we do not own);
//! - `"${name}"` inside any string: the value captured earlier under `name`.
//!
//! Objects must have exactly the expected keys and arrays exactly the expected
//! elements: an extra field is a failure too.

use std::collections::BTreeMap;

use serde_json::Value;

/// Values captured from earlier responses, by name.
pub(crate) type Vars = BTreeMap<String, String>;

/// Replaces every `${name}` in the strings of `value`.
pub(crate) fn substitute(value: &Value, vars: &Vars) -> Value {
    match value {
        Value::String(s) => Value::String(substitute_str(s, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub(crate) fn substitute_str(s: &str, vars: &Vars) -> String {
    let mut out = s.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    assert!(
        !out.contains("${"),
        "no value captured for a variable in {s:?} (captured: {vars:?})"
    );
    out
}

/// Checks `actual` against the expectation `expected`; the error names the first
/// difference by its JSON path.
pub(crate) fn check(actual: &Value, expected: &Value) -> Result<(), String> {
    check_at("$", actual, expected)
}

fn check_at(path: &str, actual: &Value, expected: &Value) -> Result<(), String> {
    let mismatch = || Err(format!("at {path}: expected {expected}, got {actual}"));
    match (expected, actual) {
        (Value::String(pattern), Value::String(value))
            if pattern.starts_with('<') && pattern.ends_with('>') =>
        {
            if placeholder_matches(pattern, value) {
                Ok(())
            } else {
                mismatch()
            }
        }
        (Value::Object(expected_map), Value::Object(actual_map)) => {
            for key in actual_map.keys() {
                if !expected_map.contains_key(key) {
                    return Err(format!("at {path}: unexpected field {key:?} in {actual}"));
                }
            }
            for (key, expected_value) in expected_map {
                let Some(actual_value) = actual_map.get(key) else {
                    return Err(format!("at {path}: missing field {key:?} in {actual}"));
                };
                check_at(&format!("{path}.{key}"), actual_value, expected_value)?;
            }
            Ok(())
        }
        (Value::Array(expected_items), Value::Array(actual_items)) => {
            if expected_items.len() != actual_items.len() {
                return Err(format!(
                    "at {path}: expected {} elements, got {}: {actual}",
                    expected_items.len(),
                    actual_items.len()
                ));
            }
            for (i, (a, e)) in actual_items.iter().zip(expected_items).enumerate() {
                check_at(&format!("{path}[{i}]"), a, e)?;
            }
            Ok(())
        }
        _ if actual == expected => Ok(()),
        _ => mismatch(),
    }
}

fn placeholder_matches(pattern: &str, value: &str) -> bool {
    let inner = &pattern[1..pattern.len() - 1];
    if inner == "timestamp" {
        is_timestamp(value)
    } else if inner == "nonempty" {
        !value.is_empty()
    } else if let Some(prefix) = inner.strip_prefix("id:") {
        value
            .strip_prefix(prefix)
            .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    } else {
        // Not a placeholder after all: compare literally.
        pattern == value
    }
}

/// `2026-01-02T03:04:05Z`, optionally with a fraction of a second.
fn is_timestamp(value: &str) -> bool {
    let bytes = value.as_bytes();
    let shape = "dddd-dd-ddTdd:dd:dd";
    if bytes.len() < shape.len() + 1 || !value.ends_with('Z') {
        return false;
    }
    let head_ok = shape.bytes().zip(bytes).all(|(s, b)| match s {
        b'd' => b.is_ascii_digit(),
        _ => s == *b,
    });
    let fraction = &value[shape.len()..value.len() - 1];
    let fraction_ok = fraction.is_empty()
        || fraction
            .strip_prefix('.')
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    head_ok && fraction_ok
}

/// The JSON values of a tool's output, one after another (a stream prints several).
pub(crate) fn parse_values(text: &str) -> Result<Vec<Value>, String> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("output is not a sequence of JSON values ({e})"))
}

/// The string at JSON pointer `pointer` (e.g. `/payment/paymentId`).
pub(crate) fn string_at(value: &Value, pointer: &str) -> Result<String, String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no string at {pointer} in {value}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn placeholders_match_volatile_values_only() {
        let expected = json!({"id": "<id:pay_>", "t": "<timestamp>", "n": 1});
        let good = json!({"id": "pay_0123456789abcdef0123456789abcdef", "t": "2026-11-26T11:39:46.626149693Z", "n": 1});
        assert_eq!(check(&good, &expected), Ok(()));
        let bad_id = json!({"id": "ord_0123456789abcdef0123456789abcdef", "t": "2026-11-26T11:39:46Z", "n": 1});
        assert!(check(&bad_id, &expected).unwrap_err().contains("$.id"));
        let bad_time =
            json!({"id": "pay_0123456789abcdef0123456789abcdef", "t": "yesterday", "n": 1});
        assert!(check(&bad_time, &expected).unwrap_err().contains("$.t"));
    }

    #[test]
    fn extra_missing_and_different_fields_fail() {
        let expected = json!({"a": [1, {"b": "x"}]});
        assert!(
            check(&json!({"a": [1, {"b": "x"}], "c": 0}), &expected)
                .unwrap_err()
                .contains("unexpected")
        );
        assert!(
            check(&json!({"a": [1, {}]}), &expected)
                .unwrap_err()
                .contains("missing")
        );
        assert!(
            check(&json!({"a": [1, {"b": "y"}]}), &expected)
                .unwrap_err()
                .contains("$.a[1].b")
        );
        assert!(
            check(&json!({"a": [1]}), &expected)
                .unwrap_err()
                .contains("elements")
        );
    }

    #[test]
    fn variables_are_substituted_and_must_be_known() {
        let vars = Vars::from([("id".to_owned(), "pay_1".to_owned())]);
        assert_eq!(
            substitute(&json!({"x": ["${id}"]}), &vars),
            json!({"x": ["pay_1"]})
        );
        assert!(std::panic::catch_unwind(|| substitute_str("${nope}", &vars)).is_err());
    }

    #[test]
    fn streams_parse_as_several_values() {
        assert_eq!(
            parse_values("{\"a\": 1}\n{\"a\": 2}\n").unwrap(),
            [json!({"a": 1}), json!({"a": 2})]
        );
        assert!(parse_values("{\"a\": 1} oops").is_err());
    }
}
