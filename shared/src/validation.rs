//! Request validation that collects every problem before answering, so a caller fixes
//! all of them at once. Domain code uses it without seeing tonic; [`crate::status`]
//! turns the result into INVALID_ARGUMENT with a `BadRequest` detail per field.
//!
//! Every problem, up to a bound: an answer lists at most [`MAX_VIOLATIONS`] of them,
//! then one more saying how many were left out. The answer to a bad request travels in
//! headers (`grpc-message`, `grpc-status-details-bin`), and a list that grew with the
//! request (a violation per item of a long list) would outgrow the header list a
//! client accepts: the client would see a broken answer instead of its mistake.

use std::fmt;

/// One invalid field, named by its path in the request (`items[2].quantity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    /// The last violation of a list that leaves `count` out: of the whole request
    /// (field `""`), saying how many more there are.
    pub fn more(count: usize) -> Self {
        Self {
            field: String::new(),
            description: format!("{count} more violations not listed"),
        }
    }
}

/// A request that broke one or more rules: at most [`MAX_VIOLATIONS`] violations
/// listed, and how many `more` were left out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub violations: Vec<FieldViolation>,
    pub more: usize,
}

/// Longest `grpc-message` sent, in bytes (before percent-encoding); a longer message is
/// cut, on a character boundary, and ends in `…` ([`crate::status`]).
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Lists the violations while they fit in a `grpc-message` ([`MAX_MESSAGE_BYTES`]),
/// then says how many more there are.
impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PREFIX: &str = "invalid request: ";
        // Room for "; and 1234567 more".
        let budget = MAX_MESSAGE_BYTES - 24;
        f.write_str(PREFIX)?;
        let mut written = PREFIX.len();
        let mut listed = 0;
        for v in &self.violations {
            let len = v.field.len() + v.description.len() + 4;
            if listed > 0 && written + len > budget {
                break;
            }
            if listed > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
            written += len;
            listed += 1;
        }
        let more = self.violations.len() - listed + self.more;
        if more > 0 {
            write!(f, "; and {more} more")?;
        }
        Ok(())
    }
}

/// Collects violations; [`Violations::finish`] reports them (the first
/// [`MAX_VIOLATIONS`], and how many more).
#[derive(Debug, Default)]
pub struct Violations {
    kept: Vec<FieldViolation>,
    /// Violations beyond [`MAX_VIOLATIONS`], counted only.
    more: usize,
}

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.kept.len() < MAX_VIOLATIONS {
            self.kept.push(FieldViolation {
                field: field.into(),
                description: description.into(),
            });
        } else {
            self.more += 1;
        }
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
        if self.kept.is_empty() {
            return Ok(());
        }
        Err(ValidationError {
            violations: self.kept,
            more: self.more,
        })
    }
}

/// Most violations one answer lists; more are counted in one last violation.
pub const MAX_VIOLATIONS: usize = 20;

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
    fn lists_at_most_twenty_violations_then_how_many_more() {
        let mut v = Violations::new();
        for i in 0..110 {
            v.id(format!("items[{i}].sku"), "");
            v.quantity(format!("items[{i}].quantity"), 0);
        }
        let err = v.finish().unwrap_err();
        assert_eq!(err.violations.len(), MAX_VIOLATIONS);
        assert_eq!(err.violations[19].field, "items[9].quantity");
        assert_eq!(err.more, 200);
        // The message lists what fits in a grpc-message, and counts the rest.
        let message = err.to_string();
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{message}");
        let listed = message.matches("; ").count();
        let more = format!("; and {} more", 220 - listed);
        assert!(message.ends_with(&more), "{message}");
    }

    #[test]
    fn nothing_collected_is_ok() {
        assert!(Violations::new().finish().is_ok());
    }
}
