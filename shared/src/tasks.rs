//! A server's background work (an outbox relay, a consumer, a resumption loop), owned
//! by the server's life cycle instead of spawned and forgotten:
//!
//! - tasks registered with [`ServerBuilder::spawn`](crate::server::ServerBuilder::spawn)
//!   start when the server serves;
//! - they stop on the server's signals: [`Signals::draining`] (the drain began: stop
//!   taking new work) or [`Signals::drained`] (every call has ended: nothing can start
//!   new work any more, e.g. the last pass of an outbox relay);
//! - the drain waits for them, within the same `SHUTDOWN_GRACE_PERIOD` as the calls;
//! - a task that ends before the drain began, by returning or by panicking, **died**:
//!   it is logged as an error and the server reports NOT_SERVING on every health name,
//!   `liveness` included, so that Kubernetes restarts the pod. A process whose relay
//!   died would otherwise look healthy while its events pile up.
//!
//! [`every`] is the loop most background tasks are: a pass now, then one per interval.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Health;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The server's signals that background tasks stop on. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    draining: CancellationToken,
    drained: CancellationToken,
}

impl Signals {
    /// Cancelled when the server starts draining (or stops): stop taking new work.
    pub fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Cancelled once every call has ended after the drain began (or the server
    /// stopped): no handler can start new work from then on.
    pub fn drained(&self) -> &CancellationToken {
        &self.drained
    }
}

/// The tasks registered before the server serves.
#[derive(Default)]
pub(crate) struct Tasks {
    registered: Vec<(&'static str, Task)>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.registered.iter().map(|(name, _)| name).collect();
        f.debug_struct("Tasks").field("registered", &names).finish()
    }
}

impl Tasks {
    pub(crate) fn add(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.registered.push((name, Box::pin(task)));
    }

    /// Starts every task and supervises them until all have ended: a task that ends
    /// before `signals.draining()` is cancelled makes `health` fail.
    pub(crate) async fn supervise(self, service: &'static str, signals: Signals, health: Health) {
        let mut running = JoinSet::new();
        for (name, task) in self.registered {
            running.spawn(async move {
                task.await;
                name
            });
        }
        let names = running.len();
        while let Some(ended) = running.join_next().await {
            let died = !signals.draining.is_cancelled();
            match ended {
                Ok(task) if !died => tracing::debug!(service, task, "background task stopped"),
                Ok(task) => {
                    tracing::error!(
                        service,
                        task,
                        "background task ended while serving: reporting NOT_SERVING"
                    );
                    health.failing();
                }
                Err(error) => {
                    let panic = panic_message(error);
                    tracing::error!(
                        service,
                        panic,
                        died,
                        "background task panicked: reporting NOT_SERVING"
                    );
                    health.failing();
                }
            }
        }
        if names > 0 {
            tracing::info!(service, tasks = names, "background tasks stopped");
        }
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned()),
        Err(error) => error.to_string(),
    }
}

/// What one pass of an [`every`] loop found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// There may be more to do right away (a full batch): the next pass starts at once.
    More,
    /// Done for now (or failed, and logged it): the next pass waits for the interval.
    Done,
}

/// Runs `pass` at once, then every `interval` (or at once after [`Pass::More`]) until
/// `stop` is cancelled. A pass in progress is not interrupted.
pub async fn every<F, Fut>(interval: Duration, stop: &CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Pass>,
{
    while !stop.is_cancelled() {
        if pass().await == Pass::More {
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests;
