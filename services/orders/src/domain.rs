//! Orders, the states they go through, and the rules a request must follow. No tonic here.

use std::collections::HashSet;
use std::time::SystemTime;

use shared::identity::Caller;
use shared::money::MAX_MINOR;
use shared::pagination::PageRequest;
use shared::{Money, ValidationError, Violations};

use crate::error::Error;

/// Most items in one order.
pub(crate) const MAX_ITEMS: usize = 100;

/// The scope that lets a caller act for any customer: place their orders and read
/// them. Without it, a caller acts only for the customer its subject is.
pub(crate) const ACT_FOR_ANY_CUSTOMER: &str = "orders:admin";

/// Whether `caller` may act for customer `customer_id`. A call that names no caller
/// comes from inside the trust boundary (`shared::identity`) and may.
pub(crate) fn may_act_for(caller: Option<&Caller>, customer_id: &str) -> bool {
    caller.is_none_or(|caller| caller.may_act_for(customer_id, ACT_FOR_ANY_CUSTOMER))
}

/// A quantity of one sku, as the caller asked for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Item {
    pub(crate) sku: String,
    pub(crate) quantity: i32,
}

/// A valid `PlaceOrder` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewOrder {
    pub(crate) request_id: String,
    pub(crate) customer_id: String,
    /// In the caller's order (so that violations name the caller's indices), each sku once.
    pub(crate) items: Vec<Item>,
    pub(crate) card_token: String,
    /// Who places it: the caller's subject, empty when the call names no caller.
    /// Request ids are scoped by it: two callers never share one.
    pub(crate) placed_by: String,
}

impl NewOrder {
    pub(crate) fn new(
        request_id: String,
        customer_id: String,
        items: Vec<Item>,
        card_token: String,
    ) -> Result<Self, ValidationError> {
        let mut violations = Violations::new();
        violations.id("request_id", &request_id);
        violations.id("customer_id", &customer_id);
        // The list's length first: a list too long is one mistake, not one per item.
        if items.is_empty() {
            violations.add("items", "must have at least one item");
        } else if items.len() > MAX_ITEMS {
            violations.add("items", format!("must have at most {MAX_ITEMS} items"));
        } else {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                violations.id(format!("items[{i}].sku"), &item.sku);
                violations.quantity(format!("items[{i}].quantity"), item.quantity);
                if !seen.insert(item.sku.as_str()) {
                    violations.add(format!("items[{i}].sku"), "appears more than once");
                }
            }
        }
        violations.id("card_token", &card_token);
        violations.finish()?;
        Ok(Self {
            request_id,
            customer_id,
            items,
            card_token,
            placed_by: String::new(),
        })
    }

    /// The request as `caller` makes it: placed by its subject. A caller may place
    /// orders only for a customer it may act for ([`may_act_for`]).
    pub(crate) fn by(mut self, caller: Option<&Caller>) -> Result<Self, Error> {
        if !may_act_for(caller, &self.customer_id) {
            return Err(Error::NotTheCustomer {
                customer_id: self.customer_id,
            });
        }
        self.placed_by = caller.map(|c| c.subject().to_owned()).unwrap_or_default();
        Ok(self)
    }
}

/// Where an order is in its saga. Every order ends in one of the three final states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// The saga is running.
    Pending,
    /// The stock is sold and the payment captured.
    Confirmed,
    /// Refused before the card could have been charged: a declined card, too little
    /// stock, a product gone, inventory out of reach. Nothing is held.
    Rejected { reason: String },
    /// A step failed once the card may have been charged: the payment was refunded and
    /// the stock released.
    Failed { reason: String },
}

impl Status {
    /// The states in which an order's saga still runs: the only ones in which an
    /// order changes, and its saga can be claimed. The stores read this list rather
    /// than each deciding which states are open.
    pub(crate) const OPEN: [Status; 1] = [Status::Pending];

    /// Whether the order has ended: it changes no more, and no saga runs for it.
    pub(crate) fn is_final(&self) -> bool {
        !Self::OPEN.contains(self)
    }

    /// The state's name, as in the proto's `OrderStatus`, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected { .. } => "REJECTED",
            Self::Failed { .. } => "FAILED",
        }
    }
}

/// A line of an order: an item at the unit price it was ordered at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) sku: String,
    pub(crate) quantity: i32,
    pub(crate) unit_price: Money,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Order {
    pub(crate) id: String,
    pub(crate) request_id: String,
    pub(crate) customer_id: String,
    /// Who placed it (see [`NewOrder::placed_by`]).
    pub(crate) placed_by: String,
    /// Kept to tell a retried request from a different one with the same request_id,
    /// and to resume the saga of an order a dead process left pending. A token, never
    /// a card number.
    pub(crate) card_token: String,
    /// In the caller's order.
    pub(crate) lines: Vec<Line>,
    pub(crate) total: Money,
    pub(crate) status: Status,
    /// The payment, once the card was charged.
    pub(crate) payment_id: Option<String>,
    pub(crate) create_time: SystemTime,
    pub(crate) update_time: SystemTime,
}

impl Order {
    /// A pending order for `request`. `unit_prices` has one price per item, in the same
    /// order; `None` for a sku that is not in the catalog.
    pub(crate) fn new(
        id: String,
        request: NewOrder,
        unit_prices: Vec<Option<Money>>,
        now: SystemTime,
    ) -> Result<Self, ValidationError> {
        let mut violations = Violations::new();
        let mut lines = Vec::with_capacity(request.items.len());
        for (i, (item, price)) in request.items.into_iter().zip(unit_prices).enumerate() {
            match price {
                Some(unit_price) => lines.push(Line {
                    sku: item.sku,
                    quantity: item.quantity,
                    unit_price,
                }),
                None => violations.add(format!("items[{i}].sku"), "is not in the catalog"),
            }
        }
        violations.finish()?;
        let total = total(&lines)?;
        Ok(Self {
            id,
            request_id: request.request_id,
            customer_id: request.customer_id,
            placed_by: request.placed_by,
            card_token: request.card_token,
            lines,
            total,
            status: Status::Pending,
            payment_id: None,
            create_time: now,
            update_time: now,
        })
    }

    /// Whether `request` asks for this very order: a retry, not a different request
    /// that reuses its request_id. Item order does not matter.
    pub(crate) fn is_retried_by(&self, request: &NewOrder) -> bool {
        let mut asked = request.items.clone();
        asked.sort();
        self.customer_id == request.customer_id
            && self.card_token == request.card_token
            && self.items() == asked
    }

    /// The order's items, sorted by sku.
    pub(crate) fn items(&self) -> Vec<Item> {
        let mut items: Vec<Item> = self
            .lines
            .iter()
            .map(|line| Item {
                sku: line.sku.clone(),
                quantity: line.quantity,
            })
            .collect();
        items.sort();
        items
    }

    /// Whether this state of an order is further along its saga than `other`, a state
    /// of the same order read at another moment: paid before unpaid, final before
    /// pending. A watcher fed by reads that race with updates keeps the further one.
    pub(crate) fn is_further_along_than(&self, other: &Order) -> bool {
        let progress = |o: &Order| (o.status.is_final(), o.payment_id.is_some());
        progress(self) > progress(other)
    }

    /// Records the payment of a pending order.
    pub(crate) fn charged(&mut self, payment_id: String, now: SystemTime) -> Result<(), Error> {
        self.check_pending(&Status::Pending)?;
        self.payment_id = Some(payment_id);
        self.update_time = now;
        Ok(())
    }

    /// Pending → `status`, which must be final. A final order never changes again.
    pub(crate) fn finish(&mut self, status: Status, now: SystemTime) -> Result<(), Error> {
        self.check_pending(&status)?;
        if !status.is_final() {
            return Err(self.transition_error(&status));
        }
        self.status = status;
        self.update_time = now;
        Ok(())
    }

    fn check_pending(&self, to: &Status) -> Result<(), Error> {
        if self.status.is_final() {
            return Err(self.transition_error(to));
        }
        Ok(())
    }

    fn transition_error(&self, to: &Status) -> Error {
        Error::InvalidTransition {
            order_id: self.id.clone(),
            from: self.status.name(),
            to: to.name(),
        }
    }
}

/// The sum of the lines, in their one currency, at most what a payment may be.
fn total(lines: &[Line]) -> Result<Money, ValidationError> {
    let mut violations = Violations::new();
    let currency = lines
        .first()
        .map(|line| line.unit_price.currency.as_str())
        .unwrap_or_default();
    let total = if lines
        .iter()
        .all(|line| line.unit_price.currency == currency)
    {
        let sum = lines.iter().try_fold(Money::new(currency, 0), |sum, line| {
            sum.plus(&line.unit_price.times(i64::from(line.quantity))?)
        });
        let total = sum.filter(|total| total.minor <= MAX_MINOR);
        let most = Money::new(currency, MAX_MINOR);
        violations.check(
            total.is_some(),
            "items",
            format!("must total at most {most}"),
        );
        total
    } else {
        violations.add("items", "must all be priced in the same currency");
        None
    };
    violations.finish()?;
    Ok(total.expect("no violation, so there is a total"))
}

/// Validates an order id given on its own.
pub(crate) fn validate_order_id(id: &str) -> Result<(), ValidationError> {
    let mut violations = Violations::new();
    violations.id("order_id", id);
    violations.finish()
}

/// Validates a `ListOrders` request, every field at once.
pub(crate) fn list_request(
    customer_id: &str,
    page_size: i32,
    page_token: &str,
) -> Result<PageRequest, ValidationError> {
    let mut violations = Violations::new();
    violations.id("customer_id", customer_id);
    let page = PageRequest::parse(page_size, page_token, &mut violations);
    violations.finish()?;
    Ok(page.expect("no violations means a page"))
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

    fn request(items: Vec<Item>) -> NewOrder {
        NewOrder::new("req-1".into(), "cus-1".into(), items, "tok_visa".into()).unwrap()
    }

    fn usd(minor: i64) -> Option<Money> {
        Some(Money::new("USD", minor))
    }

    fn fields(error: &ValidationError) -> Vec<&str> {
        error.violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn pending_order() -> Order {
        let items = vec![item("B", 2), item("A", 1)];
        Order::new(
            "ord_1".into(),
            request(items),
            vec![usd(250), usd(1000)],
            SystemTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_later_state_of_an_order_is_further_along() {
        let placed = pending_order();
        let mut charged = placed.clone();
        charged.charged("pay_1".into(), SystemTime::now()).unwrap();
        let mut confirmed = charged.clone();
        confirmed
            .finish(Status::Confirmed, SystemTime::now())
            .unwrap();
        let mut rejected = placed.clone();
        rejected
            .finish(
                Status::Rejected {
                    reason: "declined".into(),
                },
                SystemTime::now(),
            )
            .unwrap();
        for (later, earlier) in [
            (&charged, &placed),
            (&confirmed, &charged),
            (&confirmed, &placed),
            (&rejected, &placed),
        ] {
            assert!(later.is_further_along_than(earlier), "{later:?}");
            assert!(!earlier.is_further_along_than(later), "{earlier:?}");
        }
        assert!(!charged.is_further_along_than(&charged.clone()));
    }

    #[test]
    fn a_request_needs_ids_a_card_and_distinct_valid_items() {
        let items = vec![item("A", 0), item("A", 1), item("", 10_001)];
        let err =
            NewOrder::new(String::new(), "has space".into(), items, String::new()).unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "request_id",
                "customer_id",
                "items[0].quantity",
                "items[1].sku",
                "items[2].sku",
                "items[2].quantity",
                "card_token"
            ]
        );
        let err = NewOrder::new("r".into(), "c".into(), vec![], "t".into()).unwrap_err();
        assert_eq!(fields(&err), ["items"]);
        let many = (0..=MAX_ITEMS)
            .map(|i| item(&format!("SKU-{i}"), 1))
            .collect();
        let err = NewOrder::new("r".into(), "c".into(), many, "t".into()).unwrap_err();
        assert_eq!(fields(&err), ["items"]);
    }

    #[test]
    fn too_many_items_is_one_violation_not_one_per_item() {
        let empty = vec![item("", 0); MAX_ITEMS + 10];
        let err = NewOrder::new("r".into(), "c".into(), empty, "t".into()).unwrap_err();
        assert_eq!(fields(&err), ["items"]);
        assert_eq!(err.more, 0);
    }

    #[test]
    fn an_order_is_priced_line_by_line_in_the_callers_order() {
        let order = pending_order();
        let skus: Vec<_> = order.lines.iter().map(|l| l.sku.as_str()).collect();
        assert_eq!(skus, ["B", "A"]);
        assert_eq!(order.total, Money::new("USD", 2 * 250 + 1000));
        assert_eq!(order.status, Status::Pending);
        assert_eq!(order.items(), [item("A", 1), item("B", 2)]);
    }

    #[test]
    fn unknown_skus_mixed_currencies_and_huge_totals_are_invalid() {
        let items = vec![item("A", 1), item("NOPE", 1), item("GONE", 1)];
        let err = Order::new(
            "o".into(),
            request(items),
            vec![usd(1), None, None],
            SystemTime::now(),
        )
        .unwrap_err();
        assert_eq!(fields(&err), ["items[1].sku", "items[2].sku"]);

        let prices = vec![usd(1), Some(Money::new("EUR", 1))];
        let items = vec![item("A", 1), item("B", 1)];
        let err = Order::new("o".into(), request(items), prices, SystemTime::now()).unwrap_err();
        assert_eq!(fields(&err), ["items"]);

        let err = Order::new(
            "o".into(),
            request(vec![item("A", 2)]),
            vec![usd(MAX_MINOR)],
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(err.violations[0].description.contains("at most"), "{err}");
    }

    #[test]
    fn a_retry_is_the_same_items_in_any_order_for_the_same_customer_and_card() {
        let order = pending_order();
        assert!(order.is_retried_by(&request(vec![item("A", 1), item("B", 2)])));
        assert!(!order.is_retried_by(&request(vec![item("A", 1), item("B", 3)])));
        assert!(!order.is_retried_by(&request(vec![item("A", 1)])));
        let mut other_card = request(vec![item("A", 1), item("B", 2)]);
        other_card.card_token = "tok_other".into();
        assert!(!order.is_retried_by(&other_card));
        let mut other_customer = request(vec![item("A", 1), item("B", 2)]);
        other_customer.customer_id = "cus-2".into();
        assert!(!order.is_retried_by(&other_customer));
    }

    #[test]
    fn a_pending_order_ends_once_and_never_changes_again() {
        let mut order = pending_order();
        order.charged("pay_1".into(), SystemTime::now()).unwrap();
        assert!(order.finish(Status::Pending, SystemTime::now()).is_err());
        order.finish(Status::Confirmed, SystemTime::now()).unwrap();
        assert_eq!(order.payment_id.as_deref(), Some("pay_1"));

        let failed = Status::Failed { reason: "x".into() };
        let err = order.finish(failed, SystemTime::now()).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidTransition {
                from: "CONFIRMED",
                to: "FAILED",
                ..
            }
        ));
        assert!(order.charged("pay_2".into(), SystemTime::now()).is_err());
        assert_eq!(order.status, Status::Confirmed);
    }

    #[test]
    fn a_list_request_reports_every_bad_field() {
        let err = list_request("", -1, "garbage").unwrap_err();
        assert_eq!(fields(&err), ["customer_id", "page_size", "page_token"]);
        assert_eq!(list_request("cus-1", 5, "").unwrap().size, 5);
    }
}
