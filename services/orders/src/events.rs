//! What orders publishes: an `orders.v1.OrderEvent` on [`ORDER_EVENTS`] for each state
//! an order reaches: placed, then confirmed, rejected or failed. Its subject and stream
//! are declared here, by their publisher; consumers name them from here.

use std::time::Duration;

use contracts::orders::v1::{self as pb, order_event::Kind};
use prost::Message;
use shared::events::{Event, StreamSpec};

use crate::domain::{Order, Status};

/// The subject of `orders.v1.OrderEvent`s: one per order state change. It carries the
/// proto package, so an incompatible payload would get a new subject.
pub const ORDER_EVENTS: &str = "orders.v1.events";

/// The JetStream stream of [`ORDER_EVENTS`], created by whichever of its publisher and
/// its consumers connects first: kept 7 days or up to 1 GiB, acknowledged or not, so a
/// consumer down for less than that misses nothing.
pub const ORDER_EVENTS_STREAM: StreamSpec = StreamSpec {
    name: "ORDER_EVENTS",
    subjects: &[ORDER_EVENTS],
    max_age: Duration::from_secs(7 * 24 * 3600),
    max_bytes: 1 << 30,
};

/// The event of the state `order` is in.
pub(crate) fn order_event(order: &Order) -> Event {
    let (kind, name) = match &order.status {
        Status::Pending => (Kind::Placed(pb::OrderPlaced {}), "placed"),
        Status::Confirmed => (Kind::Confirmed(pb::OrderConfirmed {}), "confirmed"),
        Status::Rejected { reason } => (
            Kind::Rejected(pb::OrderRejected {
                reason: reason.clone(),
            }),
            "rejected",
        ),
        Status::Failed { reason } => (
            Kind::Failed(pb::OrderFailed {
                reason: reason.clone(),
            }),
            "failed",
        ),
    };
    // An order reaches each state once, so the order and the state name the event:
    // publishing the same change again (a retry, a resumed saga) gives the same id, which
    // the broker and the consumers de-duplicate.
    let id = format!("{}.{name}", order.id);
    let message = pb::OrderEvent {
        event_id: id.clone(),
        occur_time: Some(order.update_time.into()),
        order: Some(order.clone().into()),
        kind: Some(kind),
    };
    Event::new(ORDER_EVENTS, id, message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use shared::Money;

    use super::*;
    use crate::domain::{Item, NewOrder};

    #[test]
    fn each_state_makes_its_own_event_with_the_order_inside() {
        let items = vec![Item {
            sku: "SKU-001".into(),
            quantity: 3,
        }];
        let request =
            NewOrder::new("req-1".into(), "cus-1".into(), items, "tok_visa".into()).unwrap();
        let price = Some(Money::new("USD", 100));
        let mut order =
            Order::new("ord_1".into(), request, vec![price], SystemTime::now()).unwrap();

        let placed = order_event(&order);
        assert_eq!(
            (placed.id.as_str(), placed.subject.as_str()),
            ("ord_1.placed", ORDER_EVENTS)
        );
        assert_eq!(
            order_event(&order),
            placed,
            "the same state gives the same event"
        );

        let reason = "card declined".to_owned();
        order
            .finish(
                Status::Rejected {
                    reason: reason.clone(),
                },
                SystemTime::now(),
            )
            .unwrap();
        let rejected = order_event(&order);
        assert_eq!(rejected.id, "ord_1.rejected");
        let message = pb::OrderEvent::decode(rejected.payload).unwrap();
        assert_eq!(message.event_id, "ord_1.rejected");
        assert_eq!(
            message.kind,
            Some(Kind::Rejected(pb::OrderRejected { reason }))
        );
        let sent = message.order.unwrap();
        assert_eq!(
            (sent.customer_id.as_str(), sent.status),
            ("cus-1", pb::OrderStatus::Rejected as i32)
        );
        assert_eq!(sent.total.unwrap().amount_minor, 300);
    }
}
