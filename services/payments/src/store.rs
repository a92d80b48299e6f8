//! Where payments live. [`Store`] is what a database must provide; [`MemoryStore`] is
//! the embedded default, [`PgStore`] PostgreSQL (`DATABASE_URL`). Each method is one atomic step, so a charge retried
//! concurrently with itself still charges once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use shared::PageRequest;
use shared::pagination::position_key;

use crate::domain::{Charge, Payment, PaymentStatus};
use crate::error::Error;

mod postgres;

pub(crate) use postgres::PgStore;

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Charges once per `request_id`: a retry returns the first outcome (a declined
    /// card stays [`Error::CardDeclined`]); other parameters under the same id are
    /// [`Error::RequestConflict`].
    async fn charge(&self, charge: Charge) -> Result<Payment, Error>;

    /// Captured → refunded; idempotent.
    async fn refund(&self, payment_id: &str, reason: &str) -> Result<Payment, Error>;

    /// One payment; [`Error::PaymentNotFound`] if unknown.
    async fn payment(&self, payment_id: &str) -> Result<Payment, Error>;

    /// Up to `page.size + 1` payments (of `order_id`, if given) in creation order, after
    /// the page key `page.after` (see [`position_key`]).
    async fn payments(
        &self,
        order_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Vec<(String, Payment)>, Error>;
}

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// In creation order; the position is the page key.
    payments: Vec<Payment>,
    by_id: HashMap<String, usize>,
    by_request_id: HashMap<String, usize>,
}

impl MemoryStore {
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        // A panic while holding the lock may have left a half-applied change: refuse
        // to go on rather than serve it.
        self.state
            .lock()
            .map_err(|e| Error::Storage(Box::new(std::io::Error::other(e.to_string()))))
    }
}

impl State {
    fn index(&self, payment_id: &str) -> Result<usize, Error> {
        self.by_id
            .get(payment_id)
            .copied()
            .ok_or_else(|| Error::PaymentNotFound {
                id: payment_id.into(),
            })
    }
}

/// The payment `charge` makes, asking the card network (once per request_id: the
/// stores call this only for a request_id they have not seen).
fn new_payment(charge: Charge) -> Payment {
    let (status, status_reason) = match charge.authorize() {
        Ok(()) => (PaymentStatus::Captured, String::new()),
        Err(reason) => (PaymentStatus::Declined, reason.to_owned()),
    };
    let now = shared::db::truncate_to_micros(SystemTime::now());
    Payment {
        id: shared::id::new("pay"),
        request_id: charge.request_id,
        order_id: charge.order_id,
        customer_id: charge.customer_id,
        amount: charge.amount,
        status,
        status_reason,
        create_time: now,
        update_time: now,
    }
}

/// A retry of `charge` that found `existing`: its first outcome, or a conflict if the
/// request_id was used for something else.
fn retried(charge: Charge, existing: Payment) -> Result<Payment, Error> {
    if charge.made(&existing) {
        outcome(existing)
    } else {
        Err(Error::RequestConflict {
            request_id: charge.request_id,
        })
    }
}

/// The outcome of a charge as the caller sees it.
fn outcome(payment: Payment) -> Result<Payment, Error> {
    match payment.status {
        PaymentStatus::Declined => Err(Error::CardDeclined {
            payment_id: payment.id,
            reason: payment.status_reason,
        }),
        PaymentStatus::Captured | PaymentStatus::Refunded => Ok(payment),
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn charge(&self, charge: Charge) -> Result<Payment, Error> {
        let mut state = self.lock()?;
        if let Some(&i) = state.by_request_id.get(&charge.request_id) {
            return retried(charge, state.payments[i].clone());
        }
        let payment = new_payment(charge);
        let index = state.payments.len();
        state.by_id.insert(payment.id.clone(), index);
        state
            .by_request_id
            .insert(payment.request_id.clone(), index);
        state.payments.push(payment.clone());
        outcome(payment)
    }

    async fn refund(&self, payment_id: &str, reason: &str) -> Result<Payment, Error> {
        let mut state = self.lock()?;
        let index = state.index(payment_id)?;
        let payment = &mut state.payments[index];
        match payment.status {
            PaymentStatus::Refunded => {}
            PaymentStatus::Declined => {
                return Err(Error::NotCaptured {
                    id: payment_id.into(),
                });
            }
            PaymentStatus::Captured => {
                payment.status = PaymentStatus::Refunded;
                payment.status_reason = reason.to_owned();
                payment.update_time = SystemTime::now();
            }
        }
        Ok(payment.clone())
    }

    async fn payment(&self, payment_id: &str) -> Result<Payment, Error> {
        let state = self.lock()?;
        let index = state.index(payment_id)?;
        Ok(state.payments[index].clone())
    }

    async fn payments(
        &self,
        order_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Vec<(String, Payment)>, Error> {
        let state = self.lock()?;
        let start = match &page.after {
            // A key we did not make matches nothing rather than failing.
            Some(after) => after
                .parse::<usize>()
                .map_or(usize::MAX, |i| i.saturating_add(1)),
            None => 0,
        };
        Ok(state
            .payments
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, p)| order_id.is_none_or(|o| p.order_id == o))
            .take(page.size + 1)
            .map(|(i, p)| (position_key(i), p.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use shared::Money;

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

    async fn a_retried_charge_charges_once(store: Arc<dyn Store>) {
        let first = store
            .charge(charge("r1", "o1", 500, "tok_visa"))
            .await
            .unwrap();
        let again = store
            .charge(charge("r1", "o1", 500, "tok_visa"))
            .await
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(first.amount, Money::new("USD", 500));
        let page = PageRequest::new(0, "").unwrap();
        assert_eq!(store.payments(None, &page).await.unwrap().len(), 1);

        let err = store
            .charge(charge("r1", "o1", 600, "tok_visa"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RequestConflict { .. }));
    }

    async fn concurrent_retries_charge_once(store: Arc<dyn Store>) {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .charge(charge("same", "o1", 100, "tok_visa"))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap().id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1);
    }

    async fn a_declined_card_is_recorded_and_stays_declined(store: Arc<dyn Store>) {
        let err = store
            .charge(charge("r1", "o1", 500, "tok_declined"))
            .await
            .unwrap_err();
        let Error::CardDeclined { payment_id, .. } = err else {
            panic!("{err:?}")
        };
        let err = store
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
            store.refund(&payment_id, "").await,
            Err(Error::NotCaptured { .. })
        ));
    }

    async fn refunds_are_idempotent(store: Arc<dyn Store>) {
        let payment = store
            .charge(charge("r1", "o1", 500, "tok_visa"))
            .await
            .unwrap();
        let refunded = store.refund(&payment.id, "order failed").await.unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        assert_eq!(store.refund(&payment.id, "again").await.unwrap(), refunded);
        assert!(matches!(
            store.refund("pay_nope", "").await,
            Err(Error::PaymentNotFound { .. })
        ));
    }

    async fn payments_are_listed_in_order_and_filtered_by_order(store: Arc<dyn Store>) {
        for i in 0..5 {
            let order = if i % 2 == 0 { "even" } else { "odd" };
            store
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
            concurrent_retries_charge_once,
            a_declined_card_is_recorded_and_stays_declined,
            refunds_are_idempotent,
            payments_are_listed_in_order_and_filtered_by_order,
        ]
    );

    #[tokio::test]
    async fn two_instances_migrate_one_database() {
        let config = shared::testing::fresh_db_config().await;
        let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
        let payment = a
            .unwrap()
            .charge(charge("r1", "o1", 100, "tok_visa"))
            .await
            .unwrap();
        assert_eq!(b.unwrap().payment(&payment.id).await.unwrap(), payment);
    }
}
