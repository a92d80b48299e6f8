//! The order flow: a saga over inventory and payments, seen through two ports
//! ([`Inventory`], [`Payments`]) so that it holds no tonic code and its failure
//! paths are tested with fakes.
//!
//! ```text
//! price → create PENDING → reserve → charge → commit → CONFIRMED
//!                             │         │        └─ failed: release, refund → FAILED
//!                             │         ├─ declined: release → REJECTED
//!                             │         └─ no answer: release, refund what was charged → FAILED
//!                             ├─ refused (stock, product): → REJECTED
//!                             └─ no answer: release → REJECTED
//! ```
//!
//! REJECTED means the card was never charged and nothing is held; FAILED means the
//! card may have been charged, and was refunded. Every call is idempotent: the
//! reservation and the charge are keyed by the order id. So a call without an answer
//! is retried, and compensations (retried longer) can run whether or not the step they
//! undo took effect. A compensation that still fails is logged as an error naming the
//! order, for someone to finish by hand.
//!
//! The saga retries its own calls rather than leaving it to the channel (which retries
//! only what was not processed): a lost answer (DEADLINE_EXCEEDED) is safe to retry
//! here thanks to the keys, and compensations deserve more tries than steps. Its
//! calls tell the channel not to retry them too (`shared::client::NoRetry`), so
//! attempts never multiply, and each retry asks the downstream's retry budget first
//! ([`Inventory::may_retry`]): one budget bounds every retry sent to a downstream.
//! The saga runs in a task of its own, detached from the PlaceOrder call's deadline on
//! purpose: each of its calls is bounded by `GRPC_CLIENT_TIMEOUT`, and a caller that
//! gives up must not stop it halfway.
//!
//! A process that dies mid-saga (killed, out of memory, its node lost) leaves its order
//! PENDING, perhaps with stock reserved or the card charged. Since every step is
//! idempotent, running the saga again from the stored order finishes it: each process
//! looks for such stranded orders at start-up and every `SAGA_RESUME_INTERVAL`
//! ([`Saga::resume_stranded`]). A store claim with a lease keeps two processes from
//! resuming one order together: a saga that runs long renews its claim, and an order
//! is stranded once no process claimed it (or renewed its claim) for
//! `SAGA_RESUME_AFTER`. Within a process, a registry of the running sagas keeps an
//! order from being resumed where it still runs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use shared::Money;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::SagaConfig;
use crate::domain::{Item, NewOrder, Order, Status};
use crate::error::storage_error;
use crate::error::{Error, UpstreamError};
use crate::events::order_event;
use crate::outbox::with_trace;
use crate::store::{Created, Store};

mod resume;
mod retry;

use retry::{COMPENSATION, STEP, retry};

/// What the saga needs from inventory.
#[async_trait]
pub(crate) trait Inventory: Send + Sync + 'static {
    /// The unit price of `sku`; `None` if it is not in the catalog.
    async fn unit_price(&self, sku: &str) -> Result<Option<Money>, UpstreamError>;

    /// Reserves every item or none; [`UpstreamError::Refused`] if stock is short or a
    /// product is gone.
    async fn reserve(&self, reservation_id: &str, items: &[Item]) -> Result<(), UpstreamError>;

    /// Sells what the reservation holds.
    async fn commit(&self, reservation_id: &str) -> Result<(), UpstreamError>;

    /// Gives what the reservation holds back. Inventory records the release even of a
    /// reservation it has not seen, and a late reserve with that id then holds nothing:
    /// releasing is right after a reserve whose answer was lost.
    async fn release(&self, reservation_id: &str) -> Result<Release, UpstreamError>;

    /// Whether inventory's retry budget allows one more retry (counted if so).
    fn may_retry(&self) -> bool {
        true
    }
}

/// What releasing a reservation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    Released,
    /// It was committed: a commit whose answer was lost went through after all.
    AlreadyCommitted,
}

/// What the saga needs from payments.
#[async_trait]
pub(crate) trait Payments: Send + Sync + 'static {
    /// Charges once per `charge.request_id` and returns the payment id;
    /// [`UpstreamError::Refused`] if the card is declined.
    async fn charge(&self, charge: &Charge) -> Result<String, UpstreamError>;

    async fn refund(&self, payment_id: &str, reason: &str) -> Result<(), UpstreamError>;

    /// The ids of the captured (charged, not refunded) payments of `order_id`, and of
    /// those still being authorized: how a charge whose answer was lost is found.
    async fn captured(&self, order_id: &str) -> Result<Vec<String>, UpstreamError>;

    /// Whether payments' retry budget allows one more retry (counted if so).
    fn may_retry(&self) -> bool {
        true
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Charge {
    /// Payments' idempotency key.
    pub(crate) request_id: String,
    pub(crate) order_id: String,
    pub(crate) customer_id: String,
    pub(crate) amount: Money,
    pub(crate) card_token: String,
}

/// Places orders: one saga per order, all sharing the store and the upstreams. Each
/// state the order reaches is stored with its event (the outbox), which the relay
/// publishes (`outbox.rs`): the saga never publishes itself.
pub(crate) struct Saga {
    store: Arc<dyn Store>,
    inventory: Arc<dyn Inventory>,
    payments: Arc<dyn Payments>,
    config: SagaConfig,
    /// This process's name in the store's claims: unique per process, so that a
    /// restarted process never takes the claims of the one before it for its own.
    owner: String,
    /// The ids of the orders whose saga runs in this process.
    running: Arc<Mutex<HashSet<String>>>,
    /// The tasks the sagas run in, so that the drain can wait for them ([`Saga::ended`]).
    tasks: TaskTracker,
}

/// An order's saga is running in this process until this is dropped.
struct Running {
    order_id: String,
    running: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.order_id);
    }
}

impl Saga {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        inventory: Arc<dyn Inventory>,
        payments: Arc<dyn Payments>,
        config: SagaConfig,
    ) -> Self {
        Self {
            store,
            inventory,
            payments,
            config,
            owner: shared::id::new(crate::NAME),
            running: Arc::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// Resolves once every saga started in this process has ended. Call it once no new
    /// saga can start (the server has drained): the outbox relay's last pass then
    /// publishes what they recorded.
    pub(crate) async fn ended(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Marks the saga of `order_id` as running here; `None` if it already is.
    fn start(&self, order_id: &str) -> Option<Running> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.insert(order_id.to_owned()).then(|| Running {
            order_id: order_id.to_owned(),
            running: Arc::clone(&self.running),
        })
    }

    /// Places the order `request` asks for and returns it once final. A request whose
    /// request_id is known returns that order, waiting for its saga if it is still
    /// running: of any number of identical requests, one runs the saga.
    pub(crate) async fn place(self: Arc<Self>, request: NewOrder) -> Result<Order, Error> {
        if let Some(order) = self
            .store
            .order_by_request(&request.placed_by, &request.request_id)
            .await?
        {
            return self.outcome_of(order, &request).await;
        }
        let order = self.price(&request).await?;
        // The event carries this call's trace: its consumers' spans join the order's trace.
        let placed = with_trace(order_event(&order));
        let order = match self.store.create(order, placed).await? {
            Created::New(order) => order,
            // An identical request got there between the lookup and the create.
            Created::Existing(order) => return self.outcome_of(order, &request).await,
        };
        tracing::info!(order_id = %order.id, total = %order.total, "order placed");
        // Registered before anything can look for stranded orders' sagas to resume.
        let Some(running) = self.start(&order.id) else {
            return self.outcome_of(order, &request).await;
        };
        // A task of its own: a caller that hangs up drops this future, and the saga
        // must not stop halfway with stock reserved or a card charged.
        let order_id = order.id.clone();
        let saga = (self.tasks).spawn(Arc::clone(&self).run(order, running).in_current_span());
        saga.await
            .map_err(|source| Error::SagaAborted { order_id, source })?
    }

    /// The order `request` retries, once final; a different request under the same
    /// request_id is a conflict.
    async fn outcome_of(&self, order: Order, request: &NewOrder) -> Result<Order, Error> {
        if !order.is_retried_by(request) {
            return Err(Error::RequestConflict {
                request_id: request.request_id.clone(),
            });
        }
        self.final_state(&order.id).await
    }

    /// Order `id` once final, whichever process finishes it.
    async fn final_state(&self, id: &str) -> Result<Order, Error> {
        let mut changes = self.store.watch(id).await?;
        let order = changes
            .wait_for(|order| order.status.is_final())
            .await
            .map_err(storage_error)?;
        Ok(order.clone())
    }

    /// A pending order at the catalog's current prices (not stored yet). Not retried:
    /// nothing is held yet, so an UNAVAILABLE answer lets the caller retry.
    async fn price(&self, request: &NewOrder) -> Result<Order, Error> {
        let mut prices = Vec::with_capacity(request.items.len());
        for item in &request.items {
            prices.push(
                self.inventory
                    .unit_price(&item.sku)
                    .await
                    .map_err(Error::Pricing)?,
            );
        }
        let id = shared::id::new("ord");
        Ok(Order::new(id, request.clone(), prices, now())?)
    }

    /// Runs the saga of a stored, pending `order` (new, or resumed from what was
    /// stored) and stores its final state with its event. Renews the order's claim
    /// while it runs, so that no other process resumes it meanwhile.
    ///
    /// A saga that loses its claim (another process took the order over after this
    /// one could not renew it) stops before its next step, and so does one whose
    /// update the store refuses ([`Error::Superseded`]): the order's end is then the
    /// other process's, which this one waits for.
    async fn run(self: Arc<Self>, mut order: Order, _running: Running) -> Result<Order, Error> {
        let id = order.id.clone();
        let finished = tokio::select! {
            finished = self.finish(&mut order) => finished,
            () = self.keep_claim(id.clone()) => Err(Error::Superseded { order_id: id }),
        };
        match finished {
            Err(Error::Superseded { order_id }) => {
                tracing::warn!(%order_id, "another process runs this order's saga now; this one stopped");
                self.final_state(&order_id).await
            }
            Err(error) => Err(error),
            Ok(()) => {
                tracing::info!(order_id = %order.id, status = order.status.name(), "order final");
                Ok(order)
            }
        }
    }

    /// The saga's steps, then the order's final state stored with its event.
    async fn finish(&self, order: &mut Order) -> Result<(), Error> {
        let status = self.steps(order).await?;
        order.finish(status, now())?;
        let event = with_trace(order_event(order));
        self.store.update(order, &self.owner, Some(event)).await
    }

    /// Renews the claim on order `id` a few times per `SAGA_RESUME_AFTER`, for as long
    /// as it is polled; returns once another process holds it. The first renewal
    /// claims the order: a saga that ends sooner costs no claim at all.
    async fn keep_claim(&self, id: String) {
        let lease = self.config.resume_after;
        loop {
            tokio::time::sleep(lease / 3).await;
            match self.store.renew_claim(&id, &self.owner, lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(order_id = %id, error = %shared::status::ErrorChain(&error), "renewing the claim on an order's saga failed");
                }
            }
        }
    }

    /// Reserve, charge, commit, undoing what may have been done when a step fails.
    /// Returns the final status; errors only if the store fails.
    async fn steps(&self, order: &mut Order) -> Result<Status, Error> {
        // One reservation and one charge per order, keyed by its id: a retried call
        // finds them instead of making new ones.
        let key = order.id.clone();
        let items = order.items();

        if let Err(error) = retry(
            STEP,
            || self.inventory.may_retry(),
            || self.inventory.reserve(&key, &items),
        )
        .await
        {
            tracing::warn!(order_id = %key, %error, "reserving stock failed");
            if !matches!(error, UpstreamError::Refused(_)) {
                self.release(order).await;
            }
            return Ok(Status::Rejected {
                reason: error.reason(),
            });
        }

        let charge = Charge {
            request_id: key.clone(),
            order_id: key.clone(),
            customer_id: order.customer_id.clone(),
            amount: order.total.clone(),
            card_token: order.card_token.clone(),
        };
        let payment_id = match retry(
            STEP,
            || self.payments.may_retry(),
            || self.payments.charge(&charge),
        )
        .await
        {
            Ok(payment_id) => payment_id,
            Err(error) => {
                tracing::warn!(order_id = %key, %error, "charging the card failed");
                self.release(order).await;
                if let UpstreamError::Refused(reason) = error {
                    return Ok(Status::Rejected { reason });
                }
                // The charge may have gone through without its answer reaching us.
                let reason = error.reason();
                self.refund(order, &reason).await;
                return Ok(Status::Failed { reason });
            }
        };
        order.charged(payment_id, now())?;
        // Still pending: no event to record.
        self.store.update(order, &self.owner, None).await?;

        let Err(error) = retry(
            STEP,
            || self.inventory.may_retry(),
            || self.inventory.commit(&key),
        )
        .await
        else {
            return Ok(Status::Confirmed);
        };
        tracing::warn!(order_id = %key, %error, "committing the reservation failed");
        if self.release(order).await == Some(Release::AlreadyCommitted) {
            tracing::info!(order_id = %key, "the reservation was committed after all");
            return Ok(Status::Confirmed);
        }
        let reason = error.reason();
        self.refund(order, &reason).await;
        Ok(Status::Failed { reason })
    }

    /// Compensation: gives the order's stock back. `None` if inventory could not be
    /// told, which is logged for someone to release the reservation by hand.
    async fn release(&self, order: &Order) -> Option<Release> {
        match retry(
            COMPENSATION,
            || self.inventory.may_retry(),
            || self.inventory.release(&order.id),
        )
        .await
        {
            Ok(release) => Some(release),
            Err(error) => {
                tracing::error!(
                    order_id = %order.id,
                    reservation_id = %order.id,
                    %error,
                    "compensation failed: the order's stock stays reserved; release the reservation by hand"
                );
                None
            }
        }
    }

    /// Compensation: refunds what the order was charged. Without a payment id (the
    /// charge's answer was lost), whatever payments captured for the order is refunded.
    /// Failures are logged for someone to refund by hand.
    async fn refund(&self, order: &Order, reason: &str) {
        let payment_ids = match &order.payment_id {
            Some(payment_id) => vec![payment_id.clone()],
            None => match retry(
                COMPENSATION,
                || self.payments.may_retry(),
                || self.payments.captured(&order.id),
            )
            .await
            {
                Ok(payment_ids) => payment_ids,
                Err(error) => {
                    tracing::error!(
                        order_id = %order.id,
                        %error,
                        "compensation failed: cannot tell whether the order was charged; refund its payments by hand"
                    );
                    return;
                }
            },
        };
        let reason = format!("order {} failed: {reason}", order.id);
        for payment_id in payment_ids {
            if let Err(error) = retry(
                COMPENSATION,
                || self.payments.may_retry(),
                || self.payments.refund(&payment_id, &reason),
            )
            .await
            {
                tracing::error!(
                    order_id = %order.id,
                    %payment_id,
                    %error,
                    "compensation failed: the customer is charged for a failed order; refund the payment by hand"
                );
            }
        }
    }
}

/// The time of a state change, to the microsecond: what PostgreSQL keeps, so that the
/// order a caller is answered with equals the one read back later (a retried
/// PlaceOrder, GetOrder, the gateway's idempotent replay) whichever store holds it.
fn now() -> SystemTime {
    shared::db::truncate_to_micros(SystemTime::now())
}

#[cfg(test)]
mod tests;
