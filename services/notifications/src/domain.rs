//! Notifications, what each order event says to the customer, and the rules a request
//! must follow. No tonic here.

use std::time::SystemTime;

use contracts::orders::v1::{self as orders_pb, order_event::Kind};
use prost::Message;
use shared::identity::Caller;
use shared::{Money, PageRequest, ValidationError, Violations};

use crate::error::Error;

/// The scope that lets a caller read any customer's notifications. Without it, a
/// caller reads only those of the customer its subject is.
pub(crate) const READ_ANY_CUSTOMER: &str = "notifications:admin";

/// Whether `caller` may read the notifications of `customer_id`: NOT_FOUND otherwise.
/// A call that names no caller comes from inside the trust boundary
/// (`shared::identity`) and may.
pub(crate) fn may_read(caller: Option<&Caller>, customer_id: &str) -> Result<(), Error> {
    if caller.is_none_or(|caller| caller.may_act_for(customer_id, READ_ANY_CUSTOMER)) {
        Ok(())
    } else {
        Err(Error::CustomerNotFound {
            id: customer_id.to_owned(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notification {
    pub(crate) id: String,
    pub(crate) customer_id: String,
    pub(crate) order_id: String,
    /// The event it was made from: at most one notification per event.
    pub(crate) event_id: String,
    pub(crate) message: String,
    pub(crate) create_time: SystemTime,
}

/// An event that makes no sense, so no notification.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvalidEvent {
    #[error("not an orders.v1.OrderEvent")]
    Decode(#[from] prost::DecodeError),
    #[error("the event has no {0}")]
    Missing(&'static str),
}

/// The notification an encoded `orders.v1.OrderEvent` makes. `None` for a kind of
/// event this version does not know (from a newer publisher): nothing to say about it.
pub(crate) fn notification(
    payload: &[u8],
    now: SystemTime,
) -> Result<Option<Notification>, InvalidEvent> {
    let event = orders_pb::OrderEvent::decode(payload)?;
    let order = event.order.ok_or(InvalidEvent::Missing("order"))?;
    let required = [
        ("event_id", &event.event_id),
        ("order.order_id", &order.order_id),
        ("order.customer_id", &order.customer_id),
    ];
    if let Some((field, _)) = required.iter().find(|(_, value)| value.is_empty()) {
        return Err(InvalidEvent::Missing(field));
    }
    let id = &order.order_id;
    let message = match event.kind {
        None => return Ok(None),
        Some(Kind::Placed(_)) => match order.total {
            Some(total) => format!(
                "Order {id} placed: {}",
                Money::new(total.currency_code, total.amount_minor)
            ),
            None => format!("Order {id} placed"),
        },
        Some(Kind::Confirmed(_)) => format!("Order {id} confirmed"),
        Some(Kind::Rejected(r)) => because(format!("Order {id} rejected"), &r.reason),
        Some(Kind::Failed(f)) => because(format!("Order {id} failed"), &f.reason),
    };
    Ok(Some(Notification {
        id: shared::id::new("ntf"),
        customer_id: order.customer_id,
        order_id: order.order_id,
        event_id: event.event_id,
        message,
        create_time: now,
    }))
}

fn because(what: String, reason: &str) -> String {
    if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    }
}

/// Validates a `ListNotifications` request, every field at once.
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

/// Validates a customer id given on its own.
pub(crate) fn validate_customer_id(customer_id: &str) -> Result<(), ValidationError> {
    let mut violations = Violations::new();
    violations.id("customer_id", customer_id);
    violations.finish()
}

#[cfg(test)]
mod tests {
    use contracts::common::v1 as common_pb;

    use super::*;

    fn event(kind: Option<Kind>) -> orders_pb::OrderEvent {
        orders_pb::OrderEvent {
            event_id: "ord_1.x".into(),
            occur_time: None,
            order: Some(orders_pb::Order {
                order_id: "ord_1".into(),
                customer_id: "cus-1".into(),
                total: Some(common_pb::Money {
                    currency_code: "USD".into(),
                    amount_minor: 2450,
                }),
                ..Default::default()
            }),
            kind,
        }
    }

    fn message(kind: Kind) -> String {
        let payload = event(Some(kind)).encode_to_vec();
        notification(&payload, SystemTime::now())
            .unwrap()
            .unwrap()
            .message
    }

    #[test]
    fn each_kind_of_event_says_what_happened_to_the_order() {
        assert_eq!(
            message(Kind::Placed(orders_pb::OrderPlaced {})),
            "Order ord_1 placed: USD 24.50"
        );
        assert_eq!(
            message(Kind::Confirmed(orders_pb::OrderConfirmed {})),
            "Order ord_1 confirmed"
        );
        let rejected = orders_pb::OrderRejected {
            reason: "card declined".into(),
        };
        assert_eq!(
            message(Kind::Rejected(rejected)),
            "Order ord_1 rejected: card declined"
        );
        let failed = orders_pb::OrderFailed {
            reason: String::new(),
        };
        assert_eq!(message(Kind::Failed(failed)), "Order ord_1 failed");
    }

    #[test]
    fn the_notification_names_the_customer_the_order_and_the_event() {
        let payload = event(Some(Kind::Confirmed(orders_pb::OrderConfirmed {}))).encode_to_vec();
        let n = notification(&payload, SystemTime::now()).unwrap().unwrap();
        assert_eq!(
            (n.customer_id.as_str(), n.order_id.as_str()),
            ("cus-1", "ord_1")
        );
        assert_eq!(n.event_id, "ord_1.x");
        assert!(n.id.starts_with("ntf_"));
    }

    #[test]
    fn unknown_kinds_say_nothing_and_broken_events_are_errors() {
        assert_eq!(
            notification(&event(None).encode_to_vec(), SystemTime::now()).unwrap(),
            None
        );

        let err = notification(b"\xff\xff", SystemTime::now()).unwrap_err();
        assert!(matches!(err, InvalidEvent::Decode(_)), "{err:?}");

        let mut no_customer = event(Some(Kind::Confirmed(orders_pb::OrderConfirmed {})));
        no_customer.order.as_mut().unwrap().customer_id.clear();
        let err = notification(&no_customer.encode_to_vec(), SystemTime::now()).unwrap_err();
        assert!(
            matches!(err, InvalidEvent::Missing("order.customer_id")),
            "{err:?}"
        );

        let mut no_order = event(Some(Kind::Confirmed(orders_pb::OrderConfirmed {})));
        no_order.order = None;
        let err = notification(&no_order.encode_to_vec(), SystemTime::now()).unwrap_err();
        assert!(matches!(err, InvalidEvent::Missing("order")), "{err:?}");
    }

    #[test]
    fn a_list_request_reports_every_bad_field() {
        let err = list_request("", -1, "x").unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["customer_id", "page_size", "page_token"]);
        assert!(validate_customer_id("cus-1").is_ok());
    }
}
