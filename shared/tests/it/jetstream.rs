//! `shared::events` on a real `nats-server` with JetStream: streams, publishing across
//! an outage of the server, and the consume loop's retries and dead letters.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shared::Env;
use shared::events::{
    Bus, DEAD_LETTER_ATTEMPTS, DEAD_LETTER_CONSUMER, DEAD_LETTER_EVENT_ID, DEAD_LETTER_SUBJECT,
    Event, EventsConfig, HandleError, Handler, InProcessBus, StreamSpec, consume,
    dead_letter_subject,
};
use shared::testing::{NatsServer, eventually};
use tokio_util::sync::CancellationToken;

/// The events of these tests and their stream, as a publishing service declares them.
const EVENTS: &str = "test.v1.events";
const STREAM: StreamSpec = StreamSpec {
    name: "TEST_EVENTS",
    subjects: &[EVENTS],
    max_age: Duration::from_secs(3600),
    max_bytes: 1 << 20,
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn config(server: &NatsServer, pairs: &[(&str, &str)]) -> EventsConfig {
    let url = server.url();
    let env: Env = [
        ("NATS_URL", url.as_str()),
        ("NATS_ACK_WAIT", "2s"),
        ("EVENTS_RETRY_BACKOFF", "10ms"),
        ("EVENTS_MAX_DELIVER", "3"),
    ]
    .into_iter()
    .chain(pairs.iter().copied())
    .collect();
    EventsConfig::from_env(&env).unwrap()
}

async fn connect(config: &EventsConfig) -> Bus {
    let bus = Bus::connect(config, "test", &[STREAM], &InProcessBus::new())
        .await
        .unwrap();
    assert!(bus.is_jetstream());
    bus
}

fn header<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// One delivery to a handler: the event id and its `traceparent` header.
type Delivery = (String, Option<String>);

/// Keeps failing (retryably) on payload `fail`, rejects payload `junk`, and records
/// every delivery as `(event id, traceparent)`.
#[derive(Clone, Default)]
struct Recorder {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Recorder {
    fn ids(&self) -> Vec<String> {
        let deliveries = self.deliveries.lock().unwrap();
        deliveries.iter().map(|(id, _)| id.clone()).collect()
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        let traceparent = header(event, "traceparent").map(str::to_owned);
        self.deliveries
            .lock()
            .unwrap()
            .push((event.id.clone(), traceparent));
        match event.payload.as_ref() {
            b"fail" => Err(HandleError::retry("the store is down")),
            b"junk" => Err(HandleError::reject("not an order event")),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn streams_are_created_idempotently_by_every_instance() {
    let server = NatsServer::start().await;
    let config = config(&server, &[]);
    let first = connect(&config).await;
    let second = connect(&config).await;
    // Two instances of one service: the same durable consumer, created twice.
    let a = first.consumer("test", EVENTS).await.unwrap();
    let b = second.consumer("test", EVENTS).await.unwrap();
    assert_eq!((a.consumer(), b.consumer()), ("test", "test"));
    // Publishing through either lands in the one stream.
    first
        .publisher()
        .publish(Event::new(EVENTS, "evt_1", "1"))
        .await
        .unwrap();
    second
        .publisher()
        .publish(Event::new(EVENTS, "evt_2", "2"))
        .await
        .unwrap();
    let stored: Vec<_> = server
        .stored(EVENTS)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored, ["evt_1", "evt_2"]);
    // A subject no stream given to `Bus::connect` holds: refused, by name.
    let error = first.consumer("test", "other.v1.events").await.unwrap_err();
    assert!(error.to_string().contains("other.v1.events"), "{error}");
}

#[tokio::test]
async fn a_failing_event_is_retried_then_dead_lettered_without_blocking_the_next() {
    let server = NatsServer::start().await;
    // A slow backoff, so that the good event is seen between two retries of the bad.
    let bus = connect(&config(&server, &[("EVENTS_RETRY_BACKOFF", "300ms")])).await;
    let recorder = Recorder::default();
    let draining = CancellationToken::new();
    let consumer = tokio::spawn(consume(
        "test",
        bus.consumer("test", EVENTS).await.unwrap(),
        draining.clone(),
        recorder.clone(),
    ));
    let mut failing = Event::new(EVENTS, "evt_fail", "fail");
    failing
        .headers
        .push(("traceparent".into(), TRACEPARENT.into()));
    let publisher = bus.publisher();
    publisher.publish(failing).await.unwrap();
    publisher
        .publish(Event::new(EVENTS, "evt_junk", "junk"))
        .await
        .unwrap();
    let mut good = Event::new(EVENTS, "evt_good", "good");
    good.headers
        .push(("traceparent".into(), TRACEPARENT.into()));
    publisher.publish(good).await.unwrap();

    let subject = dead_letter_subject("test", EVENTS);
    eventually("two dead letters", || {
        let (server, subject) = (&server, subject.clone());
        async move { server.stored(&subject).await.len() == 2 }
    })
    .await;
    draining.cancel();
    consumer.await.unwrap();

    let ids = recorder.ids();
    let attempts = ids.iter().filter(|id| *id == "evt_fail").count();
    assert_eq!(attempts, 3, "EVENTS_MAX_DELIVER deliveries: {ids:?}");
    let last_failure = ids.iter().rposition(|id| id == "evt_fail").unwrap();
    let good_at = ids.iter().position(|id| id == "evt_good").unwrap();
    assert!(
        good_at < last_failure,
        "not blocked by the retries: {ids:?}"
    );
    assert_eq!(ids.iter().filter(|id| *id == "evt_junk").count(), 1);
    // The trace context came through the broker, in the headers.
    let deliveries = recorder.deliveries.lock().unwrap().clone();
    assert!(
        deliveries
            .iter()
            .filter(|(id, _)| id != "evt_junk")
            .all(|(_, traceparent)| traceparent.as_deref() == Some(TRACEPARENT)),
        "{deliveries:?}"
    );

    let letters = server.stored(&subject).await;
    // The rejected one first: at once, while the other was still being retried.
    let (junk, failed) = (&letters[0], &letters[1]);
    assert_eq!(header(failed, DEAD_LETTER_EVENT_ID), Some("evt_fail"));
    assert_eq!(header(failed, DEAD_LETTER_ATTEMPTS), Some("3"));
    assert_eq!(header(failed, DEAD_LETTER_SUBJECT), Some(EVENTS));
    assert_eq!(header(failed, DEAD_LETTER_CONSUMER), Some("test"));
    assert_eq!(header(failed, "traceparent"), Some(TRACEPARENT));
    assert_eq!(failed.payload.as_ref(), b"fail");
    assert_eq!(header(junk, DEAD_LETTER_EVENT_ID), Some("evt_junk"));
    assert_eq!(header(junk, DEAD_LETTER_ATTEMPTS), Some("1"));
}

#[tokio::test]
async fn publishing_fails_fast_while_nats_is_down_and_works_once_it_is_back() {
    let mut server = NatsServer::start().await;
    let bus = connect(&config(&server, &[("NATS_PUBLISH_TIMEOUT", "1s")])).await;
    let publisher = bus.publisher();
    publisher
        .publish(Event::new(EVENTS, "evt_before", "1"))
        .await
        .unwrap();

    server.kill();
    let started = Instant::now();
    let error = publisher
        .publish(Event::new(EVENTS, "evt_during", "2"))
        .await
        .expect_err("no acknowledgement while the server is down");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by NATS_PUBLISH_TIMEOUT, took {:?}",
        started.elapsed()
    );
    assert_eq!(error.event_id, "evt_during");

    server.restart().await;
    // The client reconnects by itself; the publisher retries as the outbox relay does.
    eventually("a publish after the restart", || {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish(Event::new(EVENTS, "evt_during", "2"))
                .await
                .is_ok()
        }
    })
    .await;
    let stored: Vec<_> = server
        .stored(EVENTS)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    // Once each, even if the failed attempt reached the server after all.
    assert_eq!(stored, ["evt_before", "evt_during"]);
}
