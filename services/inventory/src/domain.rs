//! Products, stock and reservations, and the rules a request must follow. No tonic here.

use std::collections::HashSet;
use std::time::SystemTime;

use shared::{Money, ValidationError, Violations};

use crate::error::Error;

/// Most items in one reservation or one restock stream.
pub(crate) const MAX_ITEMS: usize = 100;

/// A catalog entry with its stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Product {
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) price: Money,
    pub(crate) stock: Stock,
    pub(crate) update_time: SystemTime,
}

/// Units in each bucket. Reserving moves units from `available` to `reserved`;
/// committing moves them to `sold`; releasing moves them back to `available`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stock {
    pub(crate) available: i64,
    pub(crate) reserved: i64,
    pub(crate) sold: i64,
}

/// A quantity of one sku.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Item {
    pub(crate) sku: String,
    pub(crate) quantity: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReservationState {
    Reserved,
    Committed,
    Released,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    pub(crate) id: String,
    /// Sorted by sku. Empty only for a release that arrived before its reservation.
    pub(crate) items: Vec<Item>,
    pub(crate) state: ReservationState,
    pub(crate) create_time: SystemTime,
    pub(crate) update_time: SystemTime,
}

/// A valid `ReserveStock` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewReservation {
    pub(crate) id: String,
    /// Sorted by sku, each sku once.
    pub(crate) items: Vec<Item>,
}

impl NewReservation {
    pub(crate) fn new(id: String, items: Vec<Item>) -> Result<Self, ValidationError> {
        let mut violations = Violations::new();
        violations.id("reservation_id", &id);
        let items = validate_items("items", items, &mut violations);
        violations.finish()?;
        Ok(Self { id, items })
    }
}

/// Validates a list of items; returns them sorted by sku.
pub(crate) fn validate_items(
    field: &str,
    mut items: Vec<Item>,
    violations: &mut Violations,
) -> Vec<Item> {
    // The list's length first: a list too long is one mistake, not one per item.
    if items.is_empty() {
        violations.add(field, "must have at least one item");
    } else if items.len() > MAX_ITEMS {
        violations.add(field, format!("must have at most {MAX_ITEMS} items"));
    } else {
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            violations.id(format!("{field}[{i}].sku"), &item.sku);
            violations.quantity(format!("{field}[{i}].quantity"), item.quantity);
            if !seen.insert(item.sku.as_str()) {
                violations.add(format!("{field}[{i}].sku"), "appears more than once");
            }
        }
    }
    items.sort();
    items
}

/// Validates one streamed restock item; `index` is its position in the stream.
pub(crate) fn validate_restock_item(index: usize, item: &Item) -> Result<(), ValidationError> {
    let mut violations = Violations::new();
    if index >= MAX_ITEMS * 100 {
        violations.add(
            "stream",
            format!("must have at most {} messages", MAX_ITEMS * 100),
        );
    }
    violations.id(format!("[{index}].sku"), &item.sku);
    violations.quantity(format!("[{index}].quantity"), item.quantity);
    violations.finish()
}

/// Validates a sku given on its own.
pub(crate) fn validate_sku(sku: &str) -> Result<(), ValidationError> {
    let mut violations = Violations::new();
    violations.id("sku", sku);
    violations.finish()
}

/// Validates a reservation id given on its own.
pub(crate) fn validate_reservation_id(id: &str) -> Result<(), ValidationError> {
    let mut violations = Violations::new();
    violations.id("reservation_id", id);
    violations.finish()
}

/// What a commit or a release does to a reservation, as the domain decides it; the
/// stores only apply it.
#[derive(Debug)]
pub(crate) enum Change {
    /// Already in the asked state: the retry answers it, nothing moves.
    Done(Reservation),
    /// Move the stock and set the new state.
    Apply(Reservation),
}

impl Reservation {
    /// Whether a repeated `ReserveStock` asks for what this reservation holds.
    fn matches(&self, request: &NewReservation) -> bool {
        self.items == request.items
    }

    /// A release that arrived before any reservation (see `ReleaseReservation`).
    fn is_tombstone(&self) -> bool {
        self.items.is_empty()
    }

    /// The answer to `request`, a `ReserveStock` with the id of this existing
    /// reservation: this one, when it is a retry (or the id was released before it
    /// came: the tombstone holds nothing), else the id was reused for other items.
    pub(crate) fn answer(self, request: &NewReservation) -> Result<Reservation, Error> {
        if self.matches(request) || self.is_tombstone() {
            Ok(self)
        } else {
            Err(Error::ReservationConflict { id: self.id })
        }
    }

    /// A commit: idempotent; a released reservation cannot be committed.
    pub(crate) fn commit(self) -> Result<Change, Error> {
        match self.state {
            ReservationState::Reserved => Ok(Change::Apply(self)),
            ReservationState::Committed => Ok(Change::Done(self)),
            ReservationState::Released => Err(Error::ReservationReleased { id: self.id }),
        }
    }

    /// A release: idempotent; a committed reservation cannot be released.
    pub(crate) fn release(self) -> Result<Change, Error> {
        match self.state {
            ReservationState::Reserved => Ok(Change::Apply(self)),
            ReservationState::Released => Ok(Change::Done(self)),
            ReservationState::Committed => Err(Error::ReservationCommitted { id: self.id }),
        }
    }
}

/// Units of `quantity` as the stock counters' type.
pub(crate) fn units(quantity: i32) -> i64 {
    i64::from(quantity)
}

/// The catalog the service starts with when no database is configured.
pub(crate) fn demo_catalog() -> Vec<Product> {
    let now = SystemTime::now();
    let product = |sku: &str, name: &str, description: &str, cents: i64, available: i64| Product {
        sku: sku.into(),
        name: name.into(),
        description: description.into(),
        price: Money::new("USD", cents),
        stock: Stock {
            available,
            ..Stock::default()
        },
        update_time: now,
    };
    vec![
        product(
            "SKU-001",
            "Espresso beans, 1 kg",
            "Dark roast, whole beans.",
            2400,
            100,
        ),
        product(
            "SKU-002",
            "Pour-over kettle",
            "Gooseneck, 1 litre.",
            4500,
            25,
        ),
        product(
            "SKU-003",
            "Ceramic mug",
            "350 ml, dishwasher safe.",
            1250,
            200,
        ),
        product(
            "SKU-004",
            "Burr grinder",
            "Conical burrs, 40 settings.",
            12900,
            10,
        ),
        product("SKU-005", "Paper filters", "Pack of 100.", 699, 500),
        product(
            "SKU-006",
            "Milk frother",
            "Handheld, battery powered.",
            3990,
            15,
        ),
        product("SKU-007", "Travel tumbler", "Insulated, 450 ml.", 2200, 40),
        product(
            "SKU-008",
            "Limited edition dripper",
            "Numbered series.",
            8900,
            3,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: i32) -> Item {
        Item {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn a_reservation_needs_an_id_and_valid_distinct_items() {
        let err = NewReservation::new(String::new(), vec![item("A", 0), item("A", 1), item("", 2)])
            .unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "reservation_id",
                "items[0].quantity",
                "items[1].sku",
                "items[2].sku"
            ]
        );
        let err = NewReservation::new("r".into(), vec![]).unwrap_err();
        assert_eq!(err.violations[0].field, "items");
    }

    #[test]
    fn too_many_items_is_one_violation_not_one_per_item() {
        let err = NewReservation::new("r".into(), vec![item("", 0); MAX_ITEMS + 10]).unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["items"]);
        assert_eq!(err.more, 0);
    }

    #[test]
    fn items_are_kept_sorted_so_retries_compare_equal() {
        let a = NewReservation::new("r".into(), vec![item("B", 1), item("A", 2)]).unwrap();
        let b = NewReservation::new("r".into(), vec![item("A", 2), item("B", 1)]).unwrap();
        assert_eq!(a, b);
    }
}
