//! The event handler: order events in, notifications out. The shared consume loop
//! (`shared::events::consume`) delivers the events and acknowledges, retries or
//! dead-letters each one by what [`OrderEvents`] answers.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use shared::events::{Event, HandleError, Handler};

use crate::domain;
use crate::store::{Added, Store};

/// Makes one notification per order event, idempotently by event id.
pub(crate) struct OrderEvents {
    pub(crate) store: Arc<dyn Store>,
}

#[async_trait]
impl Handler for OrderEvents {
    /// `Ok` once the store has the notification (new, or made before from the same
    /// event): only then is the event acknowledged. A payload that is not an order event
    /// is rejected (dead-lettered: delivering it again would not change it); a store
    /// error is retried.
    async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        let notification = match domain::notification(&event.payload, SystemTime::now()) {
            Ok(Some(notification)) => notification,
            Ok(None) => {
                tracing::debug!(event_id = %event.id, "nothing to notify for this kind of event");
                return Ok(());
            }
            Err(error) => return Err(HandleError::reject(error)),
        };
        let (event_id, customer_id) = (
            notification.event_id.clone(),
            notification.customer_id.clone(),
        );
        match self.store.add(notification).await {
            Ok(Added::New) => tracing::debug!(%event_id, %customer_id, "notification made"),
            Ok(Added::Duplicate) => {
                tracing::debug!(%event_id, "event seen before: no second notification")
            }
            Err(error) => return Err(HandleError::retry(error)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use contracts::orders::v1::{self as pb, order_event::Kind};
    use orders::events::ORDER_EVENTS;
    use prost::Message;
    use shared::PageRequest;
    use shared::events::{Bus, EventsConfig, InProcessBus, dead_letter_subject};
    use tokio_util::sync::CancellationToken;

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

    async fn orders_notified(store: &MemoryStore) -> Vec<String> {
        let page = store
            .notifications("cus-1", &PageRequest::new(0, "").unwrap())
            .await
            .unwrap();
        page.into_iter().map(|(_, n)| n.order_id).collect()
    }

    #[tokio::test]
    async fn every_event_makes_one_notification_and_junk_is_dead_lettered() {
        let local = InProcessBus::new();
        let mut dead = local.subscribe(&dead_letter_subject(crate::NAME, ORDER_EVENTS));
        let bus = Bus::connect(&EventsConfig::default(), crate::NAME, &[], &local)
            .await
            .unwrap();
        let source = bus.consumer(crate::NAME, ORDER_EVENTS).await.unwrap();
        let store = Arc::new(MemoryStore::default());
        let draining = CancellationToken::new();
        let consumer = tokio::spawn(shared::events::consume(
            crate::NAME,
            source,
            draining.clone(),
            OrderEvents {
                store: store.clone(),
            },
        ));
        for event in [
            confirmed("ord_1"),
            Event::new(ORDER_EVENTS, "junk", vec![0xff]),
            confirmed("ord_1"),
            confirmed("ord_2"),
        ] {
            bus.publisher().publish(event).await.unwrap();
        }
        let letter = dead.next().await.unwrap();
        assert_eq!(letter.id, "junk");
        shared::testing::eventually("two notifications", || {
            let store = store.clone();
            async move { orders_notified(&store).await.len() == 2 }
        })
        .await;
        draining.cancel();
        consumer.await.unwrap();
        assert_eq!(orders_notified(&store).await, ["ord_2", "ord_1"]);
    }
}
