//! The event consumer: order events in, notifications out.

use std::sync::Arc;
use std::time::SystemTime;

use shared::events::{Event, Subscription};
use shared::status::ErrorChain;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::domain;
use crate::store::{Added, Store};

/// Consumes `events`, one at a time in their order, until `draining` is cancelled or
/// the bus is gone.
pub(crate) async fn run(
    mut events: Subscription,
    store: Arc<dyn Store>,
    draining: CancellationToken,
) {
    tracing::info!(subject = events.subject(), "consuming events");
    loop {
        let event = tokio::select! {
            biased;
            () = draining.cancelled() => break,
            event = events.next() => match event {
                Some(event) => event,
                None => break,
            },
        };
        // A span per event, continuing the publisher's trace (the event's headers).
        let span = shared::events::consumer_span(crate::NAME, &event);
        consume(store.as_ref(), event).instrument(span).await;
    }
    tracing::info!(subject = events.subject(), "stopped consuming events");
}

/// Makes the notification of one event. Nothing is returned: an event that cannot make
/// one is logged and skipped, since delivering it again would not change it.
async fn consume(store: &dyn Store, event: Event) {
    let notification = match domain::notification(&event.payload, SystemTime::now()) {
        Ok(Some(notification)) => notification,
        Ok(None) => {
            tracing::debug!(event_id = %event.id, "nothing to notify for this kind of event");
            return;
        }
        Err(error) => {
            tracing::warn!(event_id = %event.id, %error, "skipping an invalid event");
            return;
        }
    };
    let (event_id, customer_id) = (
        notification.event_id.clone(),
        notification.customer_id.clone(),
    );
    match store.add(notification).await {
        Ok(Added::New) => tracing::debug!(%event_id, %customer_id, "notification made"),
        Ok(Added::Duplicate) => {
            tracing::debug!(%event_id, "event seen before: no second notification")
        }
        Err(error) => tracing::error!(%event_id, error = %ErrorChain(&error), "notification lost"),
    }
}

#[cfg(test)]
mod tests {
    use contracts::orders::v1::{self as pb, order_event::Kind};
    use prost::Message;
    use shared::PageRequest;
    use shared::events::{EventPublisher, InProcessBus, ORDER_EVENTS};

    use super::*;
    use crate::store::MemoryStore;

    fn confirmed(order_id: &str) -> Event {
        let event = pb::OrderEvent {
            event_id: format!("{order_id}.confirmed"),
            occur_time: None,
            order: Some(pb::Order {
                order_id: order_id.into(),
                customer_id: "cus-1".into(),
                ..Default::default()
            }),
            kind: Some(Kind::Confirmed(pb::OrderConfirmed {})),
        };
        Event::new(ORDER_EVENTS, event.event_id.clone(), event.encode_to_vec())
    }

    #[tokio::test]
    async fn every_event_is_consumed_in_order_and_the_loop_ends_with_the_bus() {
        let bus = InProcessBus::new();
        let store = Arc::new(MemoryStore::default());
        let consumer = tokio::spawn(run(
            bus.subscribe(ORDER_EVENTS),
            store.clone(),
            CancellationToken::new(),
        ));
        for event in [
            confirmed("ord_1"),
            Event::new(ORDER_EVENTS, "junk", vec![0xff]),
            confirmed("ord_1"),
            confirmed("ord_2"),
        ] {
            bus.publish(event).await.unwrap();
        }
        drop(bus);
        consumer.await.unwrap();
        let page = store
            .notifications("cus-1", &PageRequest::new(0, "").unwrap())
            .await
            .unwrap();
        let orders: Vec<_> = page.iter().map(|(_, n)| n.order_id.as_str()).collect();
        assert_eq!(orders, ["ord_2", "ord_1"]);
    }

    #[tokio::test]
    async fn the_loop_stops_when_the_server_drains() {
        let bus = InProcessBus::new();
        let draining = CancellationToken::new();
        let consumer = tokio::spawn(run(
            bus.subscribe(ORDER_EVENTS),
            Arc::new(MemoryStore::default()),
            draining.clone(),
        ));
        draining.cancel();
        consumer.await.unwrap();
    }
}
