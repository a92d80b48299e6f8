//! Request validation that collects every problem before answering, so a caller fixes
//! all of them at once. Domain code uses it without seeing tonic; [`crate::status`]
//! turns the result into INVALID_ARGUMENT with a `BadRequest` detail per field.

use std::fmt;

/// One invalid field, named by its path in the request (`items[2].quantity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// A request that broke one or more rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub violations: Vec<FieldViolation>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid request: ")?;
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

/// Collects violations; [`Violations::finish`] reports them all.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records a violation unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, description: impl Into<String>) {
        if !ok {
            self.add(field, description);
        }
    }

    /// An identifier or key: not empty, at most `MAX_ID_LEN` bytes, printable ASCII
    /// without spaces (it ends up in URLs, logs and message headers).
    pub fn id(&mut self, field: impl Into<String>, value: &str) {
        let field = field.into();
        if value.is_empty() {
            self.add(field, "is required");
        } else if value.len() > MAX_ID_LEN {
            self.add(field, format!("must be at most {MAX_ID_LEN} characters"));
        } else if !value.bytes().all(|b| b.is_ascii_graphic()) {
            self.add(field, "must be printable ASCII without spaces");
        }
    }

    /// A quantity of units: from 1 to `MAX_QUANTITY`.
    pub fn quantity(&mut self, field: impl Into<String>, value: i32) {
        self.check(
            (1..=MAX_QUANTITY).contains(&value),
            field,
            format!("must be from 1 to {MAX_QUANTITY}"),
        );
    }

    /// Everything collected so far, as an error if there is anything.
    pub fn finish(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { violations: self.0 })
        }
    }
}

/// Longest accepted identifier (ids, idempotency keys, skus).
pub const MAX_ID_LEN: usize = 128;

/// Largest quantity of one item in one request.
pub const MAX_QUANTITY: i32 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_violation() {
        let mut v = Violations::new();
        v.id("sku", "");
        v.id("request_id", "has space");
        v.id("order_id", &"x".repeat(MAX_ID_LEN + 1));
        v.id("ok", "SKU-001");
        v.quantity("items[0].quantity", 0);
        v.quantity("items[1].quantity", MAX_QUANTITY + 1);
        v.quantity("items[2].quantity", 3);
        let err = v.finish().unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "sku",
                "request_id",
                "order_id",
                "items[0].quantity",
                "items[1].quantity"
            ]
        );
        assert!(
            err.to_string()
                .starts_with("invalid request: sku: is required; ")
        );
    }

    #[test]
    fn nothing_collected_is_ok() {
        assert!(Violations::new().finish().is_ok());
    }
}
