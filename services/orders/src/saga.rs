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
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use shared::Money;
use shared::tasks::Pass;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::SagaConfig;
use crate::domain::{Item, NewOrder, Order, Status, storage_error};
use crate::error::{Error, UpstreamError};
use crate::events::order_event;
use crate::outbox::with_trace;
use crate::store::{Created, Store};

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

/// How many times a call is made before its error counts, and the pause after the
/// first try (doubling after each).
#[derive(Clone, Copy, Debug)]
struct Retry {
    attempts: u32,
    backoff: Duration,
}

/// Steps forward: a few quick tries, then the saga compensates.
const STEP: Retry = Retry {
    attempts: 3,
    backoff: Duration::from_millis(100),
};

/// Compensations: longer, since giving up leaves stock held or a customer charged.
const COMPENSATION: Retry = Retry {
    attempts: 5,
    backoff: Duration::from_millis(100),
};

/// Most stranded orders claimed in one look.
const RESUME_BATCH: usize = 100;

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

/// Makes `call` until it answers, retrying only when it got no answer (safe: every
/// call of the saga is idempotent) and while `may_retry` (the downstream's retry
/// budget) allows, after a random pause that doubles its bound each time.
async fn retry<T, F>(
    policy: Retry,
    may_retry: impl Fn() -> bool,
    mut call: impl FnMut() -> F,
) -> Result<T, UpstreamError>
where
    F: Future<Output = Result<T, UpstreamError>>,
{
    let backoff = shared::client::policy::Backoff {
        initial: policy.backoff,
        max: policy.backoff * 2u32.pow(policy.attempts),
    };
    for retry in 1..policy.attempts {
        match call().await {
            Err(error @ UpstreamError::Unavailable { .. }) if may_retry() => {
                let pause = backoff.delay(retry);
                tracing::debug!(%error, ?pause, "no answer; retrying");
                tokio::time::sleep(pause).await;
            }
            answered => return answered,
        }
    }
    call().await
}

/// The time of a state change, to the microsecond: what PostgreSQL keeps, so that the
/// order a caller is answered with equals the one read back later (a retried
/// PlaceOrder, GetOrder, the gateway's idempotent replay) whichever store holds it.
fn now() -> SystemTime {
    shared::db::truncate_to_micros(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    use shared::events::{InProcessBus, ORDER_EVENTS};

    use super::*;
    use crate::store::MemoryStore;

    /// A scripted call: it fails, or it takes effect and its answer is lost.
    #[derive(Clone, Debug)]
    enum Outcome {
        Fail(UpstreamError),
        Lost,
    }

    /// Inventory and payments in one, with scripted failures and a record of the calls.
    #[derive(Default)]
    struct Fake {
        script: Mutex<HashMap<&'static str, VecDeque<Outcome>>>,
        calls: Mutex<Vec<String>>,
        /// Payments captured and not refunded.
        captured: Mutex<Vec<String>>,
        committed: Mutex<bool>,
    }

    fn unavailable() -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: "fake",
            detail: "no answer".into(),
        }
    }

    fn refused(reason: &str) -> UpstreamError {
        UpstreamError::Refused(reason.into())
    }

    impl Fake {
        fn script(&self, method: &'static str, outcomes: impl IntoIterator<Item = Outcome>) {
            self.script
                .lock()
                .unwrap()
                .entry(method)
                .or_default()
                .extend(outcomes);
        }

        fn fail(&self, method: &'static str, times: usize, error: UpstreamError) {
            self.script(method, std::iter::repeat_n(Outcome::Fail(error), times));
        }

        /// Records the call. `Err` if it is scripted to fail before taking effect;
        /// `Ok(true)` if it takes effect but its answer is lost.
        fn call(&self, method: &'static str) -> Result<bool, UpstreamError> {
            self.calls.lock().unwrap().push(method.to_owned());
            match self
                .script
                .lock()
                .unwrap()
                .get_mut(method)
                .and_then(VecDeque::pop_front)
            {
                Some(Outcome::Fail(error)) => Err(error),
                Some(Outcome::Lost) => Ok(true),
                None => Ok(false),
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn count(&self, method: &str) -> usize {
            self.calls().iter().filter(|call| *call == method).count()
        }

        fn answer<T>(lost: bool, value: T) -> Result<T, UpstreamError> {
            if lost { Err(unavailable()) } else { Ok(value) }
        }
    }

    #[async_trait]
    impl Inventory for Fake {
        async fn unit_price(&self, sku: &str) -> Result<Option<Money>, UpstreamError> {
            self.call("price")?;
            Ok((sku != "UNKNOWN").then(|| Money::new("USD", 500)))
        }

        async fn reserve(&self, _: &str, _: &[Item]) -> Result<(), UpstreamError> {
            let lost = self.call("reserve")?;
            Self::answer(lost, ())
        }

        async fn commit(&self, _: &str) -> Result<(), UpstreamError> {
            let lost = self.call("commit")?;
            *self.committed.lock().unwrap() = true;
            Self::answer(lost, ())
        }

        async fn release(&self, _: &str) -> Result<Release, UpstreamError> {
            self.call("release")?;
            if *self.committed.lock().unwrap() {
                return Ok(Release::AlreadyCommitted);
            }
            Ok(Release::Released)
        }
    }

    #[async_trait]
    impl Payments for Fake {
        async fn charge(&self, charge: &Charge) -> Result<String, UpstreamError> {
            let lost = self.call("charge")?;
            let payment_id = format!("pay_{}", charge.request_id);
            let mut captured = self.captured.lock().unwrap();
            if !captured.contains(&payment_id) {
                captured.push(payment_id.clone());
            }
            drop(captured);
            Self::answer(lost, payment_id)
        }

        async fn refund(&self, payment_id: &str, _: &str) -> Result<(), UpstreamError> {
            self.call("refund")?;
            self.captured.lock().unwrap().retain(|p| p != payment_id);
            Ok(())
        }

        async fn captured(&self, _: &str) -> Result<Vec<String>, UpstreamError> {
            self.call("captured")?;
            Ok(self.captured.lock().unwrap().clone())
        }
    }

    struct Harness {
        saga: Arc<Saga>,
        fake: Arc<Fake>,
        bus: InProcessBus,
    }

    fn harness() -> Harness {
        harness_with(crate::config::SagaConfig::default())
    }

    fn harness_with(config: crate::config::SagaConfig) -> Harness {
        let fake = Arc::new(Fake::default());
        let bus = InProcessBus::new();
        let store = Arc::new(MemoryStore::default());
        let saga = Saga::new(store.clone(), fake.clone(), fake.clone(), config);
        let relay = crate::outbox::run(
            store,
            Arc::new(bus.clone()),
            crate::config::OutboxConfig::default(),
            std::future::pending(),
        );
        tokio::spawn(relay);
        Harness {
            saga: Arc::new(saga),
            fake,
            bus,
        }
    }

    fn request(request_id: &str) -> NewOrder {
        let items = vec![Item {
            sku: "SKU-1".into(),
            quantity: 2,
        }];
        NewOrder::new(request_id.into(), "cus-1".into(), items, "tok_visa".into()).unwrap()
    }

    impl Harness {
        async fn place(&self) -> Order {
            self.saga.clone().place(request("req-1")).await.unwrap()
        }

        fn captured(&self) -> Vec<String> {
            self.fake.captured.lock().unwrap().clone()
        }
    }

    fn reason(order: &Order) -> &str {
        match &order.status {
            Status::Rejected { reason } | Status::Failed { reason } => reason,
            Status::Pending | Status::Confirmed => "",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_step_succeeds_and_the_order_is_confirmed() {
        let h = harness();
        let mut events = h.bus.subscribe(ORDER_EVENTS);
        let order = h.place().await;
        assert_eq!(order.status, Status::Confirmed);
        assert_eq!(order.total, Money::new("USD", 1000));
        assert_eq!(order.payment_id, Some(format!("pay_{}", order.id)));
        assert_eq!(h.fake.calls(), ["price", "reserve", "charge", "commit"]);
        let placed = events.next().await.unwrap();
        let confirmed = events.next().await.unwrap();
        assert_eq!(placed.id, format!("{}.placed", order.id));
        assert_eq!(confirmed.id, format!("{}.confirmed", order.id));
    }

    #[tokio::test(start_paused = true)]
    async fn a_declined_card_releases_the_stock_and_rejects() {
        let h = harness();
        h.fake.fail("charge", 1, refused("card declined"));
        let order = h.place().await;
        assert_eq!(
            order.status,
            Status::Rejected {
                reason: "card declined".into()
            }
        );
        assert_eq!(h.fake.calls(), ["price", "reserve", "charge", "release"]);
        assert_eq!(order.payment_id, None);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_stock_rejects_with_nothing_to_undo() {
        let h = harness();
        h.fake
            .fail("reserve", 1, refused("not enough stock for SKU-1"));
        let order = h.place().await;
        assert_eq!(reason(&order), "not enough stock for SKU-1");
        assert!(matches!(order.status, Status::Rejected { .. }));
        assert_eq!(h.fake.calls(), ["price", "reserve"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reserve_without_answer_is_retried_then_released_and_rejected() {
        let h = harness();
        h.fake.fail("reserve", 3, unavailable());
        let order = h.place().await;
        assert_eq!(
            order.status,
            Status::Rejected {
                reason: "fake is unavailable".into()
            }
        );
        assert_eq!(h.fake.count("reserve"), 3);
        assert_eq!(h.fake.count("release"), 1);
        assert_eq!(h.fake.count("charge"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_that_answers_on_a_retry_goes_on() {
        let h = harness();
        h.fake.fail("charge", 2, unavailable());
        let order = h.place().await;
        assert_eq!(order.status, Status::Confirmed);
        assert_eq!(h.fake.count("charge"), 3);
        assert_eq!(h.captured().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_charge_whose_answer_was_lost_is_found_and_refunded() {
        let h = harness();
        h.fake
            .script("charge", [Outcome::Lost, Outcome::Lost, Outcome::Lost]);
        let order = h.place().await;
        assert_eq!(
            order.status,
            Status::Failed {
                reason: "fake is unavailable".into()
            }
        );
        assert_eq!(h.fake.count("release"), 1);
        assert_eq!(h.fake.count("captured"), 1);
        assert_eq!(h.fake.count("refund"), 1);
        assert!(h.captured().is_empty(), "refunded");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_commit_releases_refunds_and_fails() {
        let h = harness();
        let broken = UpstreamError::Failed {
            upstream: "fake",
            detail: "bug".into(),
        };
        h.fake.fail("commit", 1, broken);
        let order = h.place().await;
        assert_eq!(
            order.status,
            Status::Failed {
                reason: "fake failed".into()
            }
        );
        assert_eq!(
            h.fake.calls(),
            ["price", "reserve", "charge", "commit", "release", "refund"]
        );
        assert!(h.captured().is_empty(), "refunded");
        assert!(
            order.payment_id.is_some(),
            "the refunded payment stays on the order"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_whose_answer_was_lost_is_confirmed_not_refunded() {
        let h = harness();
        h.fake
            .script("commit", [Outcome::Lost, Outcome::Lost, Outcome::Lost]);
        let order = h.place().await;
        assert_eq!(order.status, Status::Confirmed);
        assert_eq!(h.fake.count("refund"), 0);
        assert_eq!(h.captured().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn compensations_are_retried_longer_than_steps() {
        let h = harness();
        h.fake.fail("charge", 1, refused("card declined"));
        h.fake.fail("release", 4, unavailable());
        let order = h.place().await;
        assert!(matches!(order.status, Status::Rejected { .. }));
        assert_eq!(h.fake.count("release"), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_compensation_that_keeps_failing_still_ends_the_order() {
        let h = harness();
        h.fake.fail("commit", 3, unavailable());
        h.fake.fail("release", 5, unavailable());
        h.fake.fail("refund", 5, unavailable());
        let order = h.place().await;
        assert!(matches!(order.status, Status::Failed { .. }));
        assert_eq!(h.captured().len(), 1, "left for someone to refund by hand");
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_skus_are_invalid_and_create_no_order() {
        let h = harness();
        let mut request = request("req-1");
        request.items[0].sku = "UNKNOWN".into();
        let err = h.saga.clone().place(request).await.unwrap_err();
        assert!(
            matches!(err, Error::Invalid(ref e) if e.violations[0].field == "items[0].sku"),
            "{err:?}"
        );
        assert_eq!(h.fake.calls(), ["price"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_catalog_fails_the_call_and_creates_no_order() {
        let h = harness();
        h.fake.fail("price", 1, unavailable());
        let err = h.saga.clone().place(request("req-1")).await.unwrap_err();
        assert!(
            matches!(err, Error::Pricing(UpstreamError::Unavailable { .. })),
            "{err:?}"
        );
        assert_eq!(h.fake.calls(), ["price"], "not retried: the caller may");
        // Nothing was stored, so the same request may simply be sent again.
        assert_eq!(h.place().await.status, Status::Confirmed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_request_returns_the_same_order_and_a_different_one_conflicts() {
        let h = harness();
        let first = h.place().await;
        let again = h.place().await;
        assert_eq!(first, again);
        assert_eq!(h.fake.count("charge"), 1);

        let mut different = request("req-1");
        different.items[0].quantity = 3;
        let err = h.saga.clone().place(different).await.unwrap_err();
        assert!(matches!(err, Error::RequestConflict { .. }), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stranded_order_is_resumed_from_where_it_stopped_and_finished_once() {
        let h = harness_with(crate::config::SagaConfig {
            resume_after: Duration::from_millis(100),
            resume_interval: Duration::from_millis(100),
        });
        let mut events = h.bus.subscribe(ORDER_EVENTS);
        // As a process that died after reserving and charging left it, long ago.
        let mut order = h.saga.price(&request("req-1")).await.unwrap();
        order.update_time = SystemTime::now() - Duration::from_secs(60);
        h.saga
            .store
            .create(order.clone(), order_event(&order))
            .await
            .unwrap();
        h.fake.reserve(&order.id, &order.items()).await.unwrap();
        let charge = Charge {
            request_id: order.id.clone(),
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            amount: order.total.clone(),
            card_token: order.card_token.clone(),
        };
        h.fake.charge(&charge).await.unwrap();

        let draining = CancellationToken::new();
        let resuming = tokio::spawn(h.saga.clone().resume_stranded(draining.clone()));
        let mut changes = h.saga.store.watch(&order.id).await.unwrap();
        let resumed = changes
            .wait_for(|order| order.status.is_final())
            .await
            .unwrap()
            .clone();
        assert_eq!(resumed.status, Status::Confirmed);
        assert_eq!(resumed.payment_id, Some(format!("pay_{}", order.id)));
        assert_eq!(h.captured().len(), 1, "the same charge, found again");
        assert_eq!(
            h.fake.calls(),
            ["price", "reserve", "charge", "reserve", "charge", "commit"]
        );

        // Later looks find nothing more to do.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.fake.count("commit"), 1);
        draining.cancel();
        resuming.await.unwrap();
        let ids = [
            events.next().await.unwrap().id,
            events.next().await.unwrap().id,
        ];
        assert_eq!(
            ids,
            [
                format!("{}.placed", order.id),
                format!("{}.confirmed", order.id)
            ]
        );
    }

    /// Two processes run one order's saga (this one's claim lapsed and the other took
    /// the order over): the one without the claim stops at its first store update,
    /// before committing, and answers the order as the other one ends it.
    #[tokio::test]
    async fn a_saga_without_the_claim_stops_and_answers_the_other_ones_outcome() {
        let h = harness();
        let other = Arc::new(Saga::new(
            h.saga.store.clone(),
            h.fake.clone(),
            h.fake.clone(),
            crate::config::SagaConfig::default(),
        ));
        let order = h.saga.price(&request("req-1")).await.unwrap();
        h.saga
            .store
            .create(order.clone(), order_event(&order))
            .await
            .unwrap();
        let lease = Duration::from_secs(60);
        assert!(
            h.saga
                .store
                .renew_claim(&order.id, &other.owner, lease)
                .await
                .unwrap()
        );

        let stale = tokio::spawn({
            let (saga, order) = (h.saga.clone(), order.clone());
            let running = saga.start(&order.id).unwrap();
            async move { saga.run(order, running).await }
        });
        shared::testing::eventually("the stale saga to charge", || async {
            h.fake.count("charge") == 1
        })
        .await;
        let running = other.start(&order.id).unwrap();
        let finished = other.clone().run(order, running).await.unwrap();
        assert_eq!(finished.status, Status::Confirmed);

        assert_eq!(stale.await.unwrap().unwrap(), finished);
        assert_eq!(h.fake.count("commit"), 1, "committed by the claimant only");
        assert_eq!(
            h.fake.calls(),
            ["price", "reserve", "charge", "reserve", "charge", "commit"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_identical_requests_run_one_saga() {
        let h = harness();
        let tasks: Vec<_> = (0..20)
            .map(|_| tokio::spawn(h.saga.clone().place(request("same"))))
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            let order = task.await.unwrap().unwrap();
            assert_eq!(order.status, Status::Confirmed);
            ids.push(order.id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1);
        assert_eq!(h.fake.count("reserve"), 1);
        assert_eq!(h.fake.count("charge"), 1);
    }
}
