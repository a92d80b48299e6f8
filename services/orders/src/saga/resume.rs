//! Resuming stranded sagas: the orders a dead process left PENDING (see `saga.rs`).

use std::sync::Arc;
use std::time::SystemTime;

use shared::tasks::Pass;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Saga;
use crate::domain::Order;

/// Most stranded orders claimed in one look.
const RESUME_BATCH: usize = 100;

impl Saga {
    /// Resumes the sagas of stranded orders (see the module's documentation): looks
    /// at once, then every `SAGA_RESUME_INTERVAL` until `draining` is cancelled. The
    /// sagas it started run on (like those of `PlaceOrder`) until they end: the drain
    /// waits for them ([`Saga::ended`]) within its grace period; an order left pending
    /// then is resumed by another process.
    pub(crate) async fn resume_stranded(self: Arc<Self>, draining: CancellationToken) {
        tracing::info!(
            owner = %self.owner,
            resume_after = ?self.config.resume_after,
            interval = ?self.config.resume_interval,
            "resuming stranded sagas"
        );
        shared::tasks::every(self.config.resume_interval, &draining, || async {
            let claimed = self
                .store
                .claim_stranded(
                    &self.owner,
                    self.config.resume_after,
                    self.config.resume_after,
                    RESUME_BATCH,
                )
                .await;
            match claimed {
                Ok(orders) => {
                    let full = orders.len() == RESUME_BATCH;
                    orders.into_iter().for_each(|order| self.resume(order));
                    // A full batch: there may be more right away.
                    if full { Pass::More } else { Pass::Done }
                }
                Err(error) => {
                    tracing::warn!(
                        error = %shared::status::ErrorChain(&error),
                        "looking for stranded sagas failed; retrying"
                    );
                    Pass::Done
                }
            }
        })
        .await;
        tracing::info!("stopped resuming stranded sagas");
    }

    /// Runs the saga of the stranded order `order` in a task of its own, unless it runs
    /// here already.
    fn resume(self: &Arc<Self>, order: Order) {
        let Some(running) = self.start(&order.id) else {
            tracing::debug!(order_id = %order.id, "claimed an order whose saga runs here");
            return;
        };
        let age = SystemTime::now()
            .duration_since(order.create_time)
            .unwrap_or_default();
        tracing::info!(order_id = %order.id, ?age, charged = order.payment_id.is_some(), "resuming the saga of a stranded order");
        let span = tracing::info_span!("resume saga", order_id = %order.id);
        let saga = Arc::clone(self);
        self.tasks.spawn(
            async move {
                let order_id = order.id.clone();
                if let Err(error) = saga.run(order, running).await {
                    // Its claim lapses, and the order is resumed again.
                    tracing::warn!(%order_id, error = %shared::status::ErrorChain(&error), "a resumed saga failed");
                }
            }
            .instrument(span),
        );
    }
}
