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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use shared::Money;
use tracing::Instrument;

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

    /// The ids of the captured (charged, not refunded) payments of `order_id`: how a
    /// charge whose answer was lost is found.
    async fn captured(&self, order_id: &str) -> Result<Vec<String>, UpstreamError>;
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

/// Places orders: one saga per order, all sharing the store and the upstreams. Each
/// state the order reaches is stored with its event (the outbox), which the relay
/// publishes (`outbox.rs`): the saga never publishes itself.
pub(crate) struct Saga {
    store: Arc<dyn Store>,
    inventory: Arc<dyn Inventory>,
    payments: Arc<dyn Payments>,
}

impl Saga {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        inventory: Arc<dyn Inventory>,
        payments: Arc<dyn Payments>,
    ) -> Self {
        Self {
            store,
            inventory,
            payments,
        }
    }

    /// Places the order `request` asks for and returns it once final. A request whose
    /// request_id is known returns that order, waiting for its saga if it is still
    /// running: of any number of identical requests, one runs the saga.
    pub(crate) async fn place(self: Arc<Self>, request: NewOrder) -> Result<Order, Error> {
        if let Some(order) = self.store.order_by_request(&request.request_id).await? {
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
        // A task of its own: a caller that hangs up drops this future, and the saga
        // must not stop halfway with stock reserved or a card charged.
        let order_id = order.id.clone();
        let saga = tokio::spawn(Arc::clone(&self).run(order).in_current_span());
        saga.await
            .map_err(|source| Error::SagaAborted { order_id, source })?
    }

    /// The order `request` retries, once final; a different request under the same
    /// request_id is a conflict.
    async fn outcome_of(&self, order: Order, request: &NewOrder) -> Result<Order, Error> {
        if !order.placed_by(request) {
            return Err(Error::RequestConflict {
                request_id: request.request_id.clone(),
            });
        }
        let mut changes = self.store.watch(&order.id).await?;
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
        Ok(Order::new(id, request.clone(), prices, SystemTime::now())?)
    }

    /// Runs the saga of a stored, pending `order` and stores its final state with its
    /// event.
    async fn run(self: Arc<Self>, mut order: Order) -> Result<Order, Error> {
        tracing::info!(order_id = %order.id, total = %order.total, "order placed");
        let status = self.steps(&mut order).await?;
        order.finish(status, SystemTime::now())?;
        let event = with_trace(order_event(&order));
        self.store.update(&order, Some(event)).await?;
        tracing::info!(order_id = %order.id, status = order.status.name(), "order final");
        Ok(order)
    }

    /// Reserve, charge, commit, undoing what may have been done when a step fails.
    /// Returns the final status; errors only if the store fails.
    async fn steps(&self, order: &mut Order) -> Result<Status, Error> {
        // One reservation and one charge per order, keyed by its id: a retried call
        // finds them instead of making new ones.
        let key = order.id.clone();
        let items = order.items();

        if let Err(error) = retry(STEP, || self.inventory.reserve(&key, &items)).await {
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
        let payment_id = match retry(STEP, || self.payments.charge(&charge)).await {
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
        order.charged(payment_id, SystemTime::now())?;
        // Still pending: no event to record.
        self.store.update(order, None).await?;

        let Err(error) = retry(STEP, || self.inventory.commit(&key)).await else {
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
        match retry(COMPENSATION, || self.inventory.release(&order.id)).await {
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
            None => match retry(COMPENSATION, || self.payments.captured(&order.id)).await {
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
            if let Err(error) =
                retry(COMPENSATION, || self.payments.refund(&payment_id, &reason)).await
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
/// call of the saga is idempotent).
async fn retry<T, F>(policy: Retry, mut call: impl FnMut() -> F) -> Result<T, UpstreamError>
where
    F: Future<Output = Result<T, UpstreamError>>,
{
    let mut backoff = policy.backoff;
    for _ in 1..policy.attempts {
        match call().await {
            Err(error @ UpstreamError::Unavailable { .. }) => {
                tracing::debug!(%error, ?backoff, "no answer; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            answered => return answered,
        }
    }
    call().await
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
        let fake = Arc::new(Fake::default());
        let bus = InProcessBus::new();
        let store = Arc::new(MemoryStore::default());
        let saga = Saga::new(store.clone(), fake.clone(), fake.clone());
        let relay = crate::outbox::run(
            store,
            Arc::new(bus.clone()),
            crate::config::OutboxConfig::default(),
            tokio_util::sync::CancellationToken::new(),
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
