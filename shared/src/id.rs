//! Server-assigned identifiers.

/// A new unique id with a type prefix, e.g. `ord_9f1c…` (a random UUID in hex):
/// unguessable, and the prefix tells a reader what it names.
pub fn new(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
