//! Events between services, shaped like a message broker's messages: NATS JetStream
//! when `NATS_URL` is set, an in-process bus otherwise, with one API for both.
//!
//! - An [`Event`] is what a broker carries: a subject, a message id the broker
//!   de-duplicates on (JetStream's `Nats-Msg-Id`), headers (the W3C trace context
//!   `traceparent`/`tracestate`) and a protobuf payload.
//! - A service gets its [`Bus`] from [`Bus::connect`]`(&`[`EventsConfig`]`, …)`:
//!   publishers see only [`EventPublisher`] ([`Bus::publisher`]), consumers run
//!   [`consume`] on [`Bus::consumer`] with their [`Handler`], which acknowledges,
//!   retries or dead-letters each event the same way on both buses.
//! - [`InProcessBus`] publishes to [`Subscription`]s in the same process: what the
//!   `stack` launcher and the tests use without `NATS_URL`.
//! - `jetstream`: the streams (a service names its own, [`StreamSpec`]s declared by
//!   their publishers next to their subjects; `DEAD_LETTERS` is always there), durable
//!   pull consumers and acknowledged publishing.
//!
//! Delivery is at least once (a broker redelivers what was not acknowledged), so a
//! consumer must be idempotent by [`Event::id`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

mod bus;
mod config;
mod consume;
mod handling;
mod jetstream;

pub use bus::Bus;
pub use config::{EventsConfig, NATS_URL, NatsConfig, NatsUrls};
pub use consume::{Source, consume};
pub use handling::{
    DEAD_LETTER_ATTEMPTS, DEAD_LETTER_CONSUMER, DEAD_LETTER_EVENT_ID, DEAD_LETTER_REASON,
    DEAD_LETTER_STREAM_SEQUENCE, DEAD_LETTER_SUBJECT, HandleError, Handler, RetryPolicy,
    dead_letter_subject,
};
pub use jetstream::{DEAD_LETTERS_STREAM, DUPLICATE_WINDOW, StreamSpec};

/// One message on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unique per event, and the same when its publication is retried: brokers
    /// de-duplicate on it, and so must consumers.
    pub id: String,
    /// Where it is published, e.g. `orders.v1.events`: the proto package of its
    /// payload, so an incompatible payload gets a new subject. Subscribers name it
    /// exactly.
    pub subject: String,
    /// Message headers, e.g. the W3C trace context (`traceparent`, `tracestate`).
    pub headers: Vec<(String, String)>,
    /// The encoded protobuf message; which one is the subject's contract.
    pub payload: Bytes,
}

impl Event {
    /// An event without headers.
    pub fn new(
        subject: impl Into<String>,
        id: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            id: id.into(),
            subject: subject.into(),
            headers: Vec::new(),
            payload: payload.into(),
        }
    }
}

/// A PRODUCER span for publishing `event` on behalf of service `app` (`orders`), a
/// child of the current span, and the event with that span's trace context in its
/// headers: the consumer's span ([`consumer_span`]) becomes its child, so the
/// consumption joins the publisher's trace. Publish the event inside the span.
pub fn traced(app: &'static str, mut event: Event) -> (tracing::Span, Event) {
    let span = tracing::info_span!(
        "event.publish",
        otel.name = format!("publish {}", event.subject),
        otel.kind = "producer",
        app.service = app,
        messaging.operation.type = "send",
        messaging.destination.name = %event.subject,
        messaging.message.id = %event.id,
    );
    crate::observe::inject_trace_into_pairs(&span, &mut event.headers);
    (span, event)
}

/// A CONSUMER span for service `app` (`notifications`) processing `event`, continuing
/// the trace its headers carry (the publisher's span is its parent). Handle the
/// event inside it.
pub fn consumer_span(app: &'static str, event: &Event) -> tracing::Span {
    crate::observe::in_trace_from_pairs(&event.headers, || {
        tracing::info_span!(
            "event.process",
            otel.name = format!("process {}", event.subject),
            otel.kind = "consumer",
            app.service = app,
            messaging.operation.type = "process",
            messaging.destination.name = %event.subject,
            messaging.message.id = %event.id,
        )
    })
}

/// An event the bus did not take. (The in-process bus always takes them; a broker
/// can be unreachable or refuse.)
#[derive(Debug, thiserror::Error)]
#[error("cannot publish event {event_id:?} on {subject:?}")]
pub struct PublishError {
    pub subject: String,
    pub event_id: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A bus that could not be set up: NATS unreachable, JetStream disabled or refusing a
/// stream or consumer.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct EventsError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl EventsError {
    pub(crate) fn new(
        what: String,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what,
            source: source.into(),
        }
    }
}

/// Where a service publishes its events.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    /// Hands `event` to the bus. `Ok` means the bus has it: for a broker, that it
    /// acknowledged storing it; for [`InProcessBus`], that every current subscription
    /// has it queued.
    async fn publish(&self, event: Event) -> Result<(), PublishError>;
}

/// A bus within one process: every event goes to each subscription of its subject, in
/// publication order. Cheap to clone; the clones share their subscriptions.
///
/// Nothing is lost once subscribed: each subscription has its own unbounded queue.
/// A broker stores events until consumers take them, so its publishers neither wait
/// for nor lose events because of a slow consumer; a bounded queue would have to do one
/// or the other (block the orders saga on the notifications consumer, or drop events as
/// tokio's `broadcast` does for a receiver that lags). The price is memory if a consumer
/// stops reading but keeps its subscription; consumers here do one in-memory insert per
/// event, far quicker than orders are placed.
///
/// As on a NATS subject without a stream, an event published while no one is subscribed
/// reaches no one: subscribe consumers before starting publishers.
#[derive(Clone, Debug, Default)]
pub struct InProcessBus {
    subscriptions: Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Event>>>>>,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event published on `subject` from now on. Dropping the subscription ends it.
    pub fn subscribe(&self, subject: &str) -> Subscription {
        let (queue, events) = mpsc::unbounded_channel();
        self.lock()
            .entry(subject.to_owned())
            .or_default()
            .push(queue);
        Subscription {
            subject: subject.to_owned(),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<mpsc::UnboundedSender<Event>>>> {
        // Every change under the lock is a single push or retain, so a panic elsewhere
        // cannot have left the map half-changed: go on with it.
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl EventPublisher for InProcessBus {
    async fn publish(&self, event: Event) -> Result<(), PublishError> {
        let mut subscriptions = self.lock();
        if let Some(queues) = subscriptions.get_mut(&event.subject) {
            // Queuing under the lock gives every subscription the same order. A send
            // fails only when its subscription was dropped: forget that one.
            queues.retain(|queue| queue.send(event.clone()).is_ok());
            if queues.is_empty() {
                subscriptions.remove(&event.subject);
            }
        }
        Ok(())
    }
}

/// The events of one subject, from when it was subscribed to.
#[derive(Debug)]
pub struct Subscription {
    subject: String,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Subscription {
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The next event, waiting for one if need be; `None` once every handle of the bus
    /// is gone and everything queued was taken.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(subject: &str, id: usize) -> Event {
        Event::new(subject, format!("evt_{id}"), id.to_string().into_bytes())
    }

    /// Takes every event left, once the bus is gone.
    async fn drain(mut subscription: Subscription) -> Vec<String> {
        let mut ids = Vec::new();
        while let Some(event) = subscription.next().await {
            ids.push(event.id);
        }
        ids
    }

    #[tokio::test]
    async fn every_subscription_gets_every_event_of_its_subject_in_order() {
        let bus = InProcessBus::new();
        let (a, b, other) = (bus.subscribe("s"), bus.subscribe("s"), bus.subscribe("t"));
        for i in 0..3 {
            bus.publish(event("s", i)).await.unwrap();
        }
        drop(bus);
        assert_eq!(drain(a).await, ["evt_0", "evt_1", "evt_2"]);
        assert_eq!(drain(b).await, ["evt_0", "evt_1", "evt_2"]);
        assert!(drain(other).await.is_empty());
    }

    #[tokio::test]
    async fn nothing_is_lost_while_a_consumer_does_not_read() {
        let bus = InProcessBus::new();
        let subscription = bus.subscribe("s");
        for i in 0..10_000 {
            bus.publish(event("s", i)).await.unwrap();
        }
        drop(bus);
        let ids = drain(subscription).await;
        assert_eq!(ids.len(), 10_000);
        assert_eq!(ids.last().map(String::as_str), Some("evt_9999"));
    }

    #[tokio::test]
    async fn events_before_subscribing_reach_no_one() {
        let bus = InProcessBus::new();
        bus.publish(event("s", 0)).await.unwrap();
        let subscription = bus.subscribe("s");
        bus.publish(event("s", 1)).await.unwrap();
        drop(bus);
        assert_eq!(drain(subscription).await, ["evt_1"]);
    }

    #[tokio::test]
    async fn dropped_subscriptions_are_forgotten() {
        let bus = InProcessBus::new();
        let kept = bus.subscribe("s");
        drop(bus.subscribe("s"));
        bus.publish(event("s", 0)).await.unwrap();
        assert_eq!(bus.lock()["s"].len(), 1);
        drop(kept);
        bus.publish(event("s", 1)).await.unwrap();
        assert!(bus.lock().is_empty());
    }

    #[tokio::test]
    async fn payload_and_headers_arrive_unchanged() {
        let bus = InProcessBus::new();
        let mut subscription = bus.subscribe("s");
        let mut sent = Event::new("s", "evt_1", vec![0, 1, 2]);
        sent.headers
            .push(("traceparent".into(), "00-abc-def-01".into()));
        bus.publish(sent.clone()).await.unwrap();
        assert_eq!(subscription.subject(), "s");
        assert_eq!(subscription.next().await, Some(sent));
    }
}
