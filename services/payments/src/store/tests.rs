//! The charge flow over each store (`shared::store_tests!` runs every test on memory and
//! on PostgreSQL), with the authorizations counted at the card network.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use shared::{Money, PageRequest};
use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::authorizer::{Authorization, Authorizer, TestCardNetwork, Unanswered};
use crate::domain::{AuthorizationConfig, Charge, Payments};

fn charge(request_id: &str, order_id: &str, cents: i64, token: &str) -> Charge {
    let amount = contracts::common::v1::Money {
        currency_code: "USD".into(),
        amount_minor: cents,
    };
    Charge::new(
        request_id.into(),
        order_id.into(),
        "cus_1".into(),
        Some(&amount),
        token.into(),
    )
    .unwrap()
}

/// A card network in front of the test one that can fail or hold its calls.
#[derive(Default)]
struct Network {
    cards: TestCardNetwork,
    /// Calls still to fail (no answer).
    unanswered: AtomicUsize,
    /// When set, each call waits for a permit here first.
    gate: Option<Arc<Semaphore>>,
    entered: Notify,
}

#[async_trait]
impl Authorizer for Network {
    async fn authorize(
        &self,
        idempotency_key: &str,
        request: Authorization<'_>,
    ) -> Result<Decision, Unanswered> {
        self.entered.notify_one();
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("never closed").forget();
        }
        let fail = self
            .unanswered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(Unanswered("connection reset".into()));
        }
        self.cards.authorize(idempotency_key, request).await
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn payments(store: &Arc<dyn Store>, network: &Arc<Network>, timeout: Duration) -> Payments {
    Payments::new(
        store.clone(),
        network.clone(),
        AuthorizationConfig { timeout },
    )
}

async fn a_retried_charge_charges_once(store: Arc<dyn Store>) {
    let network = Arc::new(Network::default());
    let payments = payments(&store, &network, TIMEOUT);
    let first = payments
        .charge(charge("r1", "o1", 500, "tok_visa"))
        .await
        .unwrap();
    let again = payments
        .charge(charge("r1", "o1", 500, "tok_visa"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first.status, PaymentStatus::Captured);
    assert_eq!(first.amount, Money::new("USD", 500));
    let page = PageRequest::new(0, "").unwrap();
    assert_eq!(store.payments(None, &page).await.unwrap().len(), 1);
    assert_eq!(network.cards.calls(), 1);

    let err = payments
        .charge(charge("r1", "o1", 600, "tok_visa"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RequestConflict { .. }));
}

/// While one replica asks the card network, charges under the same request_id on two
/// replicas of the service (one store) wait for it and never ask the network again.
async fn concurrent_charges_authorize_once(store: Arc<dyn Store>) {
    let gate = Arc::new(Semaphore::new(0));
    let network = Arc::new(Network {
        gate: Some(gate.clone()),
        ..Network::default()
    });
    let first = tokio::spawn({
        let payments = payments(&store, &network, TIMEOUT);
        async move { payments.charge(charge("same", "o1", 100, "tok_visa")).await }
    });
    network.entered.notified().await;

    // Retries that wait at most their own (short) claim for the first one's outcome.
    let replicas = [
        Arc::new(payments(&store, &network, Duration::from_millis(50))),
        Arc::new(payments(&store, &network, Duration::from_millis(50))),
    ];
    let retries: Vec<_> = (0..20)
        .map(|i| {
            let payments = replicas[i % 2].clone();
            tokio::spawn(
                async move { payments.charge(charge("same", "o1", 100, "tok_visa")).await },
            )
        })
        .collect();
    for retry in retries {
        let err = retry.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::ChargeInProgress { .. }), "{err:?}");
    }
    assert_eq!(network.cards.calls(), 0, "still one call, held at the gate");

    gate.add_permits(100);
    let payment = first.await.unwrap().unwrap();
    assert_eq!(payment.status, PaymentStatus::Captured);
    assert_eq!(network.cards.calls(), 1, "one call to the card network");
    let again = replicas[1]
        .charge(charge("same", "o1", 100, "tok_visa"))
        .await
        .unwrap();
    assert_eq!(again, payment);
}

async fn a_declined_card_is_recorded_and_stays_declined(store: Arc<dyn Store>) {
    let network = Arc::new(Network::default());
    let payments = payments(&store, &network, TIMEOUT);
    let err = payments
        .charge(charge("r1", "o1", 500, "tok_declined"))
        .await
        .unwrap_err();
    let Error::CardDeclined { payment_id, .. } = err else {
        panic!("{err:?}")
    };
    let err = payments
        .charge(charge("r1", "o1", 500, "tok_declined"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::CardDeclined { payment_id: ref again, .. } if *again == payment_id)
    );
    assert_eq!(
        store.payment(&payment_id).await.unwrap().status,
        PaymentStatus::Declined
    );
    assert!(matches!(
        payments.refund(&payment_id, "").await,
        Err(Error::NotCaptured { .. })
    ));
}

async fn refunds_are_idempotent(store: Arc<dyn Store>) {
    let network = Arc::new(Network::default());
    let payments = payments(&store, &network, TIMEOUT);
    let payment = payments
        .charge(charge("r1", "o1", 500, "tok_visa"))
        .await
        .unwrap();
    let refunded = payments.refund(&payment.id, "order failed").await.unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    assert_eq!(
        payments.refund(&payment.id, "again").await.unwrap(),
        refunded
    );
    assert!(matches!(
        payments.refund("pay_nope", "").await,
        Err(Error::PaymentNotFound { .. })
    ));
}

async fn payments_are_listed_in_order_and_filtered_by_order(store: Arc<dyn Store>) {
    let network = Arc::new(Network::default());
    let payments = payments(&store, &network, TIMEOUT);
    for i in 0..5 {
        let order = if i % 2 == 0 { "even" } else { "odd" };
        payments
            .charge(charge(&format!("r{i}"), order, 100, "tok_visa"))
            .await
            .unwrap();
    }
    let page = PageRequest::new(2, "").unwrap();
    let even = store.payments(Some("even"), &page).await.unwrap();
    let requests: Vec<_> = even.iter().map(|(_, p)| p.request_id.as_str()).collect();
    assert_eq!(requests, ["r0", "r2", "r4"]);
    let next = PageRequest {
        size: 2,
        after: Some(even[1].0.clone()),
    };
    let rest = store.payments(Some("even"), &next).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1.request_id, "r4");
}

/// A process that recorded a charge and called the card network, then died before it
/// recorded the answer: while its claim holds, the card network is not asked again;
/// after, a retry resumes the charge with the same key, and the card is authorized once.
async fn a_stalled_authorization_is_resumed_by_a_retry_with_the_same_key(store: Arc<dyn Store>) {
    let network = Arc::new(Network::default());
    let claim = Duration::from_millis(300);
    let Begun::Claimed(dead) = store
        .begin(charge("r1", "o1", 500, "tok_visa").pending(), claim)
        .await
        .unwrap()
    else {
        panic!("a new request_id is claimed")
    };
    let request = Authorization {
        card_token: &dead.card_token,
        amount: &dead.payment.amount,
        order_id: &dead.payment.order_id,
        customer_id: &dead.payment.customer_id,
    };
    network.authorize(&dead.payment.id, request).await.unwrap();

    // A retry whose own claim would be shorter than the dead one's gives up first:
    // the dead process's claim is respected.
    let impatient = payments(&store, &network, Duration::from_millis(50));
    let err = impatient
        .charge(charge("r1", "o1", 500, "tok_visa"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ChargeInProgress { .. }), "{err:?}");
    assert_eq!(network.cards.calls(), 1, "not asked while the claim holds");

    // A patient retry waits for the claim to expire, then resumes the charge.
    let resumed = payments(&store, &network, TIMEOUT)
        .charge(charge("r1", "o1", 500, "tok_visa"))
        .await
        .unwrap();
    assert_eq!(resumed.id, dead.payment.id);
    assert_eq!(resumed.status, PaymentStatus::Captured);
    assert_eq!(network.cards.calls(), 2, "asked again, with the same key");
    assert_eq!(network.cards.authorizations(), 1, "authorized once");
}

/// Nobody retries a stalled charge (its saga gave up and asked for a refund): the
/// resumer finishes it, and the refund applies.
async fn the_resumer_finishes_a_stalled_charge_and_applies_its_refund(store: Arc<dyn Store>) {
    let network = Arc::new(Network::default());
    let Begun::Claimed(dead) = store
        .begin(
            charge("r1", "o1", 500, "tok_visa").pending(),
            Duration::ZERO,
        )
        .await
        .unwrap()
    else {
        panic!("a new request_id is claimed")
    };
    let payments = payments(&store, &network, TIMEOUT);
    let pending = payments
        .refund(&dead.payment.id, "order failed")
        .await
        .unwrap();
    assert_eq!(pending.status, PaymentStatus::Pending);

    assert_eq!(payments.resume_stalled_once().await.unwrap(), 1);
    let payment = store.payment(&dead.payment.id).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Refunded);
    assert_eq!(payment.status_reason, "order failed");
    assert_eq!(network.cards.authorizations(), 1);
    assert_eq!(
        payments.resume_stalled_once().await.unwrap(),
        0,
        "nothing left"
    );
}

/// The card network does not answer: UNAVAILABLE, the payment stays pending and
/// unclaimed, and the caller's retry resumes it at once.
async fn an_unanswered_authorization_is_resumed_by_the_next_retry(store: Arc<dyn Store>) {
    let network = Arc::new(Network {
        unanswered: AtomicUsize::new(1),
        ..Network::default()
    });
    let payments = payments(&store, &network, TIMEOUT);
    let err = payments
        .charge(charge("r1", "o1", 500, "tok_visa"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ProviderUnavailable(_)), "{err:?}");
    let page = PageRequest::new(0, "").unwrap();
    let recorded = store.payments(None, &page).await.unwrap();
    assert_eq!(recorded[0].1.status, PaymentStatus::Pending);

    let payment = payments
        .charge(charge("r1", "o1", 500, "tok_visa"))
        .await
        .unwrap();
    assert_eq!(payment.status, PaymentStatus::Captured);
    assert_eq!(payment.id, recorded[0].1.id);
    assert_eq!(network.cards.authorizations(), 1);
}

/// The caller gives up (its deadline) while the card network is being asked: the
/// authorization still ends and is recorded.
async fn an_authorization_outlives_its_cancelled_call(store: Arc<dyn Store>) {
    let gate = Arc::new(Semaphore::new(0));
    let network = Arc::new(Network {
        gate: Some(gate.clone()),
        ..Network::default()
    });
    let payments = Arc::new(payments(&store, &network, TIMEOUT));
    let call = tokio::spawn({
        let payments = payments.clone();
        async move { payments.charge(charge("r1", "o1", 500, "tok_visa")).await }
    });
    network.entered.notified().await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    gate.add_permits(1);

    let page = PageRequest::new(0, "").unwrap();
    shared::testing::eventually("the authorization to be recorded", || async {
        let payments = store.payments(None, &page).await.unwrap();
        payments[0].1.status == PaymentStatus::Captured
    })
    .await;
    assert_eq!(network.cards.calls(), 1);
}

async fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::default())
}

async fn pg_store() -> Arc<dyn Store> {
    let config = shared::testing::fresh_db_config().await;
    Arc::new(PgStore::connect(&config).await.unwrap())
}

shared::store_tests!(
    memory: memory_store,
    postgres: pg_store,
    tests: [
        a_retried_charge_charges_once,
        concurrent_charges_authorize_once,
        a_declined_card_is_recorded_and_stays_declined,
        refunds_are_idempotent,
        payments_are_listed_in_order_and_filtered_by_order,
        a_stalled_authorization_is_resumed_by_a_retry_with_the_same_key,
        the_resumer_finishes_a_stalled_charge_and_applies_its_refund,
        an_unanswered_authorization_is_resumed_by_the_next_retry,
        an_authorization_outlives_its_cancelled_call,
    ]
);

#[tokio::test]
async fn two_instances_migrate_one_database() {
    let config = shared::testing::fresh_db_config().await;
    let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    let network = Arc::new(Network::default());
    let payment = payments(&a, &network, TIMEOUT)
        .charge(charge("r1", "o1", 100, "tok_visa"))
        .await
        .unwrap();
    assert_eq!(b.payment(&payment.id).await.unwrap(), payment);
}
