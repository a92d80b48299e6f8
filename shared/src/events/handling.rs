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
use tracing::Instrument as _;

use super::Event;
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

#[cfg(test)]
mod tests {
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
}
