use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use shared::events::InProcessBus;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::events::ORDER_EVENTS;
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
