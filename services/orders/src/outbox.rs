//! The transactional outbox relay: publishes the events the store wrote together with
//! each order state change, so that no change is ever left unpublished.
//!
//! - The saga never publishes. [`Store::create`](crate::store::Store::create) and
//!   [`Store::update`](crate::store::Store::update) write the order
//!   *and* its event (with the saga's trace context in its headers) in one transaction.
//! - [`run`] publishes what is pending, in order (an order's events one after the
//!   other: placed before its final state), marks each sent once the bus took it, and
//!   retries a failing bus with capped exponential backoff: nothing is skipped.
//! - It wakes as soon as the store commits an event ([`Outbox::outbox_signal`]), and also
//!   every poll interval: events committed by another replica, or left by a process that
//!   stopped between its commit and the publication (at start-up, the first pass
//!   publishes those).
//! - Delivery is at least once: a publication whose "sent" mark is lost is repeated.
//!   The broker de-duplicates by event id, and consumers are idempotent.
//! - Published events are kept `OUTBOX_RETENTION` to look into, then deleted: every
//!   replica's relay prunes them every [`PRUNE_EVERY`], in batches.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shared::events::{Event, EventPublisher, PublishError};
use shared::status::ErrorChain;
use tokio::sync::Notify;
use tracing::Instrument as _;

use crate::config::OutboxConfig;
use crate::error::Error;

/// The first pause after a failed pass; it doubles after each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between passes while the bus or the database fails.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the relay deletes the events published longer than the retention ago.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most events deleted by one statement, so that no delete holds locks for long.
const PRUNE_BATCH: usize = 1000;

/// What the relay needs of the store: the events recorded with each order state change
/// (the stores of `store.rs` implement it, beside [`Store`](crate::store::Store)).
#[async_trait]
pub(crate) trait Outbox: Send + Sync {
    /// Publishes up to `limit` pending events through `publisher` (with
    /// [`publish`]), oldest first and each order's in the order they were
    /// recorded, marking each sent once published; stops at the first failure. Relays
    /// running at once (replicas) never publish the same event together: each claims
    /// what it publishes for `lease` (what a relay that died holds is free after it).
    async fn relay(
        &self,
        limit: usize,
        lease: Duration,
        publisher: &dyn EventPublisher,
    ) -> Result<Relayed, Error>;

    /// Notified after each commit that recorded an event: wakes the relay.
    fn outbox_signal(&self) -> &Notify;

    /// Deletes up to `limit` events published `retention` ago or earlier; how many.
    /// Pending events are never deleted. The in-memory store keeps no published event.
    async fn prune_published(&self, retention: Duration, limit: usize) -> Result<u64, Error>;
}

/// What one pass of the relay did.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    /// Events published and marked sent.
    pub(crate) sent: usize,
    /// Why the pass stopped early: the next event stays pending, and so do the ones
    /// after it.
    pub(crate) failure: Option<PublishError>,
}

/// Publishes the store's pending events through `publisher` until `stop` resolves,
/// then makes one last pass for what is committed by then. `stop` is when no saga of
/// this process can record anything more (the server drained, its sagas ended), so
/// the last pass leaves nothing of this process's behind; what a failing bus leaves
/// pending is published by another replica or at the next start.
pub(crate) async fn run(
    store: Arc<dyn Outbox>,
    publisher: Arc<dyn EventPublisher>,
    config: OutboxConfig,
    stop: impl Future<Output = ()>,
) {
    tracing::info!(
        poll_interval = ?config.poll_interval,
        batch_size = config.batch_size,
        retention = ?config.retention,
        "relaying order events"
    );
    let mut failures: u32 = 0;
    let mut next_prune = tokio::time::Instant::now();
    let mut stop = pin!(stop);
    loop {
        if tokio::time::Instant::now() >= next_prune {
            prune(store.as_ref(), config.retention).await;
            next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
        }
        let backoff = match pass(store.as_ref(), publisher.as_ref(), &config).await {
            Ok(sent) => {
                failures = 0;
                if sent == config.batch_size {
                    // A full batch: there may be more right away.
                    continue;
                }
                None
            }
            Err(()) => {
                failures = failures.saturating_add(1);
                Some(backoff(failures))
            }
        };
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = store.outbox_signal().notified(), if backoff.is_none() => {}
            () = tokio::time::sleep(backoff.unwrap_or(config.poll_interval)) => {}
        }
    }
    let _ = pass(store.as_ref(), publisher.as_ref(), &config).await;
    tracing::info!("stopped relaying order events");
}

/// One pass; the number of events sent, or `Err` (logged) if it stopped on a failure.
async fn pass(
    store: &dyn Outbox,
    publisher: &dyn EventPublisher,
    config: &OutboxConfig,
) -> Result<usize, ()> {
    match store
        .relay(config.batch_size, config.claim_lease, publisher)
        .await
    {
        Ok(Relayed {
            sent,
            failure: None,
        }) => Ok(sent),
        Ok(Relayed {
            sent,
            failure: Some(error),
        }) => {
            tracing::warn!(sent, error = %ErrorChain(&error), "publishing order events failed; retrying");
            Err(())
        }
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), "reading the outbox failed; retrying");
            Err(())
        }
    }
}

/// Deletes the events published `retention` ago or earlier, batch after batch.
/// Failures are logged: the next pruning tries again.
async fn prune(store: &dyn Outbox, retention: Duration) {
    let mut pruned = 0;
    loop {
        match store.prune_published(retention, PRUNE_BATCH).await {
            Ok(deleted) => {
                pruned += deleted;
                if deleted < PRUNE_BATCH as u64 {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "pruning published order events failed");
                break;
            }
        }
    }
    if pruned > 0 {
        tracing::info!(pruned, ?retention, "pruned published order events");
    }
}

/// The pause after `failures` failed passes in a row: 100 ms, 200 ms, … up to 10 s.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// Publishes one stored event inside a PRODUCER span that continues the trace of the
/// saga that wrote it (its headers), so the consumers' spans join the order's trace.
/// The relay runs outside any span, so the producer span's parent is the stored context.
pub(crate) async fn publish(
    publisher: &dyn EventPublisher,
    stored: Event,
) -> Result<(), PublishError> {
    let headers = stored.headers.clone();
    let (span, event) = shared::observe::in_trace_from_pairs(&headers, || {
        shared::events::traced(crate::NAME, stored)
    });
    publisher.publish(event).instrument(span).await
}

/// `event` with the current span's trace context in its headers: written to the outbox
/// inside the saga's span, it links the later publication to the order's trace.
pub(crate) fn with_trace(mut event: Event) -> Event {
    shared::observe::inject_trace_into_pairs(&tracing::Span::current(), &mut event.headers);
    event
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// A bus that records what it took, and refuses everything while told to fail.
    #[derive(Debug, Default)]
    pub(crate) struct FlakyBus {
        failing: AtomicBool,
        published: Mutex<Vec<Event>>,
    }

    impl FlakyBus {
        pub(crate) fn fail(&self, failing: bool) {
            self.failing.store(failing, Ordering::SeqCst);
        }

        pub(crate) fn ids(&self) -> Vec<String> {
            let published = self.published.lock().unwrap();
            published.iter().map(|e| e.id.clone()).collect()
        }
    }

    #[async_trait]
    impl EventPublisher for FlakyBus {
        async fn publish(&self, event: Event) -> Result<(), PublishError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(PublishError {
                    subject: event.subject,
                    event_id: event.id,
                    source: "the broker is down".into(),
                });
            }
            self.published.lock().unwrap().push(event);
            Ok(())
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
