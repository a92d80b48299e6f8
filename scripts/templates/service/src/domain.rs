//! Items, and the rules a request must follow. No tonic here.

use std::time::SystemTime;

use shared::{ValidationError, Violations};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) create_time: SystemTime,
}

/// Validates an item id given on its own: required, printable ASCII, bounded.
pub(crate) fn validate_item_id(id: &str) -> Result<(), ValidationError> {
    let mut violations = Violations::new();
    violations.id("item_id", id);
    violations.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_id_is_required_and_printable() {
        assert!(validate_item_id("item-1").is_ok());
        for bad in ["", "has space"] {
            let err = validate_item_id(bad).unwrap_err();
            assert_eq!(err.violations[0].field, "item_id", "{bad:?}");
        }
    }
}
