//! The one consume loop every consumer runs, whichever bus delivers: it takes one event
//! at a time, hands it to the service's [`Handler`] inside a consumer span (the trace
//! continues from the event's headers) and then acknowledges, retries or dead-letters
//! it. The decision is made here, once, so that every consumer treats failures alike.
//!
//! - `Ok` → acknowledge: the handler has committed its effect, so the event is done.
//! - [`HandleError::Retry`] → deliver it again after a backoff that doubles per
//!   attempt; after [`RetryPolicy::max_deliver`] attempts, dead-letter it.
//! - [`HandleError::Reject`] → dead-letter it now: delivering it again cannot help.
//! - a panic of the handler → as [`HandleError::Retry`] (the consumer goes on).
//!
//! A dead letter is the original payload and headers, on
//! [`dead_letter_subject`]`(consumer, subject)`, plus the `Dead-Letter-*` headers saying
//! why. On JetStream, events after a retried one are delivered meanwhile (a retry is a
//! NAK with a delay), so a poison message never blocks the ones behind it; the in-process
//! bus retries in place, which holds the queue only for the (short, bounded) backoff.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Event, EventPublisher, InProcessBus, Subscription, jetstream};
use crate::status::ErrorChain;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Header of a dead letter: why it was dead-lettered (the handler's error chain).
pub const DEAD_LETTER_REASON: &str = "Dead-Letter-Reason";
/// Header of a dead letter: how many times it was delivered to the consumer.
pub const DEAD_LETTER_ATTEMPTS: &str = "Dead-Letter-Attempts";
/// Header of a dead letter: the subject it was published on.
pub const DEAD_LETTER_SUBJECT: &str = "Dead-Letter-Subject";
/// Header of a dead letter: the consumer that gave up on it.
pub const DEAD_LETTER_CONSUMER: &str = "Dead-Letter-Consumer";
/// Header of a dead letter: its id, the `Nats-Msg-Id` to republish it with.
pub const DEAD_LETTER_EVENT_ID: &str = "Dead-Letter-Event-Id";
/// Header of a dead letter from JetStream: the stream and the sequence it had there
/// (`ORDER_EVENTS 42`), to find or replay the original.
pub const DEAD_LETTER_STREAM_SEQUENCE: &str = "Dead-Letter-Stream-Sequence";

/// Where consumer `consumer` puts the events of `subject` it gave up on:
/// `dlq.<consumer>.<subject>`, e.g. `dlq.notifications.orders.v1.events`. On JetStream
/// they are kept in the `DEAD_LETTERS` stream (`dlq.>`).
pub fn dead_letter_subject(consumer: &str, subject: &str) -> String {
    format!("dlq.{consumer}.{subject}")
}

/// Why a handler did not process an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// It may work later (a database unreachable): deliver the event again.
    #[error("failed, to be retried")]
    Retry(#[source] BoxError),
    /// It can never work (an undecodable payload): dead-letter the event now.
    #[error("rejected")]
    Reject(#[source] BoxError),
}

impl HandleError {
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self::Retry(error.into())
    }

    pub fn reject(error: impl Into<BoxError>) -> Self {
        Self::Reject(error.into())
    }
}

/// What a consumer does with each event. `Ok` must mean its effect is committed (e.g.
/// stored): the event is acknowledged right after, and never delivered again. Events
/// are delivered at least once, so handling one twice must change nothing more.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, event: &Event) -> Result<(), HandleError>;
}

/// How often an event is tried before it is dead-lettered, and how long to wait
/// between tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries of one event at most (the first included); `EVENTS_MAX_DELIVER`.
    pub max_deliver: u32,
    /// The wait before the second delivery, doubled for each one after it;
    /// `EVENTS_RETRY_BACKOFF`.
    pub backoff: Duration,
    /// The longest wait between two deliveries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_deliver: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after the failed delivery number `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// What to do with an event after the handler answered, at delivery `attempt`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Ack,
    /// Deliver it again after this long.
    Retry(Duration),
    /// Give up: publish it on the dead-letter subject, saying why.
    DeadLetter(String),
}

pub(super) fn decide(
    outcome: &Result<(), HandleError>,
    attempt: u32,
    policy: &RetryPolicy,
) -> Decision {
    match outcome {
        Ok(()) => Decision::Ack,
        Err(error @ HandleError::Reject(_)) => Decision::DeadLetter(ErrorChain(error).to_string()),
        Err(error @ HandleError::Retry(_)) if attempt >= policy.max_deliver => {
            Decision::DeadLetter(format!(
                "{} (gave up after {attempt} attempts)",
                ErrorChain(error)
            ))
        }
        Err(HandleError::Retry(_)) => Decision::Retry(policy.delay(attempt)),
    }
}

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

/// Runs the handler on one event inside its consumer span.
pub(super) async fn handle(
    app: &'static str,
    handler: &impl Handler,
    event: &Event,
    attempt: u32,
) -> Result<(), HandleError> {
    let span = super::consumer_span(app, event);
    async {
        // A panic is a bug that may depend on state: retried, then dead-lettered, like
        // any failure, and the loop goes on with the next event.
        let outcome = crate::panic::catch_unwind(handler.handle(event))
            .await
            .unwrap_or_else(|panic| Err(HandleError::retry(panic)));
        if let Err(error) = &outcome {
            tracing::warn!(event_id = %event.id, attempt, error = %ErrorChain(error), "event not processed");
        }
        outcome
    }
    .instrument(span)
    .await
}

/// The headers of the dead letter of `event`, after the original ones.
pub(super) fn dead_letter_headers(
    event: &Event,
    consumer: &str,
    reason: &str,
    attempts: u32,
) -> Vec<(String, String)> {
    let mut headers = event.headers.clone();
    headers.extend([
        (DEAD_LETTER_REASON.to_owned(), one_line(reason)),
        (DEAD_LETTER_ATTEMPTS.to_owned(), attempts.to_string()),
        (DEAD_LETTER_SUBJECT.to_owned(), event.subject.clone()),
        (DEAD_LETTER_CONSUMER.to_owned(), consumer.to_owned()),
        (DEAD_LETTER_EVENT_ID.to_owned(), event.id.clone()),
    ]);
    headers
}

/// Header values cannot hold line breaks.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
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

    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_deliver: 3,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(3),
    };

    fn retry() -> Result<(), HandleError> {
        Err(HandleError::retry("database down"))
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(&Ok(()), 1, &POLICY), Decision::Ack);
        assert_eq!(decide(&Ok(()), 3, &POLICY), Decision::Ack);
        assert_eq!(
            decide(&retry(), 1, &POLICY),
            Decision::Retry(Duration::from_millis(1))
        );
        assert_eq!(
            decide(&retry(), 2, &POLICY),
            Decision::Retry(Duration::from_millis(2))
        );
        let Decision::DeadLetter(reason) = decide(&retry(), 3, &POLICY) else {
            panic!("the last attempt dead-letters");
        };
        assert!(
            reason.contains("database down") && reason.contains("3 attempts"),
            "{reason}"
        );
        let Decision::DeadLetter(reason) =
            decide(&Err(HandleError::reject("not protobuf")), 1, &POLICY)
        else {
            panic!("a rejection dead-letters at once");
        };
        assert!(reason.contains("not protobuf"), "{reason}");
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = (1..=8).map(|a| policy.delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(60));
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
