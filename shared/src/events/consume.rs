//! The consume loop every consumer runs, whichever bus delivers: one event at a time,
//! handed to the service's [`Handler`] and then acknowledged, retried or dead-lettered
//! as [`super::handling`] decides. On JetStream, a retry is a NAK with a delay; the
//! in-process bus retries in place.

use tokio_util::sync::CancellationToken;

use super::handling::dead_letter_subject;
use super::handling::{Decision, Handler, RetryPolicy, dead_letter_headers, decide, handle};
use super::{Event, EventPublisher, InProcessBus, Subscription, jetstream};

/// The events one consumer takes, from [`super::Bus::consumer`].
#[derive(Debug)]
pub struct Source {
    pub(super) consumer: String,
    pub(super) policy: RetryPolicy,
    pub(super) kind: SourceKind,
}

#[derive(Debug)]
pub(super) enum SourceKind {
    InProcess {
        subscription: Subscription,
        /// Where dead letters go.
        bus: InProcessBus,
    },
    JetStream(Box<jetstream::PullSource>),
}

impl Source {
    /// The name of the consumer (its durable name on JetStream).
    pub fn consumer(&self) -> &str {
        &self.consumer
    }
}

/// Runs `handler` on every event of `source` until `draining` is cancelled. Cancelling lets the event in hand finish, acknowledged or
/// not; events not acknowledged are delivered again by JetStream later (after
/// `NATS_ACK_WAIT`), to this consumer or another instance of it. `app` names the
/// service in the consumer spans.
pub async fn consume(
    app: &'static str,
    source: Source,
    draining: CancellationToken,
    handler: impl Handler,
) {
    let Source {
        consumer,
        policy,
        kind,
    } = source;
    tracing::info!(%consumer, "consuming events");
    match kind {
        SourceKind::InProcess {
            mut subscription,
            bus,
        } => {
            let consumer = InProcessConsumer {
                app,
                consumer: &consumer,
                policy,
                bus,
                draining: &draining,
            };
            while let Some(event) = next_unless(&draining, subscription.next()).await {
                consumer.process(&handler, event).await;
            }
        }
        SourceKind::JetStream(mut source) => {
            while let Some(message) = next_unless(&draining, source.next()).await {
                source.process(app, &policy, &handler, message).await;
            }
        }
    }
    tracing::info!(%consumer, "stopped consuming events");
}

/// The next item, or `None` once `draining` is cancelled (checked first).
async fn next_unless<T>(
    draining: &CancellationToken,
    next: impl Future<Output = Option<T>>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = draining.cancelled() => None,
        item = next => item,
    }
}

/// The in-process side: retries in place, dead letters published on the same bus.
struct InProcessConsumer<'a> {
    app: &'static str,
    consumer: &'a str,
    policy: RetryPolicy,
    bus: InProcessBus,
    draining: &'a CancellationToken,
}

impl InProcessConsumer<'_> {
    async fn process(&self, handler: &impl Handler, event: Event) {
        let mut attempt = 1;
        loop {
            let outcome = handle(self.app, handler, &event, attempt).await;
            match decide(&outcome, attempt, &self.policy) {
                Decision::Ack => return,
                Decision::Retry(delay) => {
                    tokio::select! {
                        () = self.draining.cancelled() => {
                            // Nothing keeps in-process events across a restart.
                            tracing::warn!(event_id = %event.id, "shutting down: event dropped before its retry");
                            return;
                        }
                        () = tokio::time::sleep(delay) => attempt += 1,
                    }
                }
                Decision::DeadLetter(reason) => {
                    return self.dead_letter(event, &reason, attempt).await;
                }
            }
        }
    }

    async fn dead_letter(&self, event: Event, reason: &str, attempts: u32) {
        let subject = dead_letter_subject(self.consumer, &event.subject);
        tracing::error!(event_id = %event.id, %subject, reason, "event dead-lettered");
        let headers = dead_letter_headers(&event, self.consumer, reason, attempts);
        let letter = Event {
            subject,
            headers,
            ..event
        };
        // The in-process bus never refuses an event.
        let _ = self.bus.publish(letter).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::events::handling::{
        DEAD_LETTER_ATTEMPTS, DEAD_LETTER_CONSUMER, DEAD_LETTER_EVENT_ID, DEAD_LETTER_REASON,
        DEAD_LETTER_SUBJECT, HandleError,
    };

    const POLICY: RetryPolicy = RetryPolicy {
        max_deliver: 3,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(3),
    };

    fn retry() -> Result<(), HandleError> {
        Err(HandleError::retry("database down"))
    }

    /// Fails `failures` times per event id, rejects payloads `b"poison"`, panics on
    /// `b"panic"`, records the rest.
    #[derive(Default)]
    struct Flaky {
        failures: u32,
        attempts: AtomicU32,
        done: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Handler for std::sync::Arc<Flaky> {
        async fn handle(&self, event: &Event) -> Result<(), HandleError> {
            if event.payload.as_ref() == b"poison" {
                return Err(HandleError::reject("undecodable"));
            }
            assert_ne!(event.payload.as_ref(), b"panic", "a bug in the handler");
            if self.attempts.fetch_add(1, Ordering::SeqCst) < self.failures {
                return retry();
            }
            self.attempts.store(0, Ordering::SeqCst);
            self.done.lock().unwrap().push(event.id.clone());
            Ok(())
        }
    }

    /// Consumer `test` of subject `s` on an in-process bus, running a [`Flaky`].
    struct Running {
        bus: InProcessBus,
        /// Its dead letters.
        dead: Subscription,
        handler: std::sync::Arc<Flaky>,
        draining: CancellationToken,
        consumer: tokio::task::JoinHandle<()>,
    }

    impl Running {
        fn start(failures: u32) -> Self {
            let bus = InProcessBus::new();
            let dead = bus.subscribe(&dead_letter_subject("test", "s"));
            let handler = std::sync::Arc::new(Flaky {
                failures,
                ..Flaky::default()
            });
            let source = Source {
                consumer: "test".into(),
                policy: POLICY,
                kind: SourceKind::InProcess {
                    subscription: bus.subscribe("s"),
                    bus: bus.clone(),
                },
            };
            let draining = CancellationToken::new();
            let consumer = tokio::spawn(consume("test", source, draining.clone(), handler.clone()));
            Self {
                bus,
                dead,
                handler,
                draining,
                consumer,
            }
        }

        async fn publish(&self, events: impl IntoIterator<Item = Event>) {
            for event in events {
                self.bus.publish(event).await.unwrap();
            }
        }

        /// Waits until `n` events are done.
        async fn done(&self, n: usize) {
            crate::testing::eventually("events done", || {
                std::future::ready(self.handler.done.lock().unwrap().len() >= n)
            })
            .await;
        }

        /// Drains, and checks that the loop ended by itself.
        async fn stop(self) -> std::sync::Arc<Flaky> {
            self.draining.cancel();
            self.consumer.await.expect("the loop ends cleanly");
            self.handler
        }
    }

    /// The next event of `subscription`, within 10 s.
    async fn next(subscription: &mut Subscription) -> Event {
        tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("an event within 10 s")
            .expect("the bus is alive")
    }

    fn header<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
        event
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn in_process_retries_in_place_and_dead_letters_what_is_rejected() {
        let mut running = Running::start(2);
        running
            .publish([
                Event::new("s", "evt_1", "1"),
                Event::new("s", "evt_poison", "poison"),
                Event::new("s", "evt_2", "2"),
            ])
            .await;
        let letter = next(&mut running.dead).await;
        running.done(2).await;
        let handler = running.stop().await;
        // Two failures then success: retried in place; the poison did not block evt_2.
        assert_eq!(*handler.done.lock().unwrap(), ["evt_1", "evt_2"]);
        assert_eq!(
            (letter.id.as_str(), letter.payload.as_ref()),
            ("evt_poison", b"poison".as_slice())
        );
        assert_eq!(letter.subject, "dlq.test.s");
        assert_eq!(header(&letter, DEAD_LETTER_ATTEMPTS), Some("1"));
        assert_eq!(header(&letter, DEAD_LETTER_SUBJECT), Some("s"));
        assert_eq!(header(&letter, DEAD_LETTER_CONSUMER), Some("test"));
        assert_eq!(header(&letter, DEAD_LETTER_EVENT_ID), Some("evt_poison"));
        let reason = header(&letter, DEAD_LETTER_REASON).unwrap();
        assert!(reason.contains("undecodable"), "{reason}");
    }

    #[tokio::test]
    async fn in_process_dead_letters_after_max_deliver_with_the_original_headers() {
        let mut running = Running::start(u32::MAX);
        let mut event = Event::new("s", "evt_1", "1");
        event
            .headers
            .push(("traceparent".into(), "00-abc-def-01".into()));
        running.publish([event]).await;
        let letter = next(&mut running.dead).await;
        let handler = running.stop().await;
        assert_eq!(handler.attempts.load(Ordering::SeqCst), POLICY.max_deliver);
        assert_eq!(header(&letter, "traceparent"), Some("00-abc-def-01"));
        assert_eq!(header(&letter, DEAD_LETTER_ATTEMPTS), Some("3"));
        assert!(handler.done.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_panicking_handler_is_retried_then_dead_lettered_and_the_loop_goes_on() {
        let mut running = Running::start(0);
        running
            .publish([
                Event::new("s", "evt_panic", "panic"),
                Event::new("s", "evt_1", "1"),
            ])
            .await;
        let letter = next(&mut running.dead).await;
        running.done(1).await;
        let handler = running.stop().await;
        assert_eq!(*handler.done.lock().unwrap(), ["evt_1"]);
        assert_eq!(letter.id, "evt_panic");
        assert_eq!(header(&letter, DEAD_LETTER_ATTEMPTS), Some("3"));
        let reason = header(&letter, DEAD_LETTER_REASON).unwrap();
        assert!(
            reason.contains("panicked") && reason.contains("a bug in the handler"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn the_loop_stops_when_draining() {
        Running::start(0).stop().await;
    }
}
