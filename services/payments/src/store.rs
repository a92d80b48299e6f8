//! Where payments live. [`Store`] (the domain's) is what a database must provide;
//! [`MemoryStore`] is the embedded default, [`PgStore`] PostgreSQL (`DATABASE_URL`). Each method is one
//! atomic step; the decisions are the domain's (`domain.rs`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use shared::PageRequest;
use shared::pagination::position_key;

use crate::authorizer::Decision;
use crate::domain::{Begun, Payment, PaymentStatus, Pending, Refund, Store};
use crate::error::Error;

mod postgres;

pub(crate) use postgres::PgStore;

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
    /// What pending payments (by position) need until they end.
    pending: HashMap<usize, Claim>,
}

#[derive(Debug)]
struct Claim {
    card_token: String,
    until: Instant,
    refund_reason: Option<String>,
}

impl MemoryStore {
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        Ok(shared::storage::lock(&self.state)?)
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

    /// The pending payment at `index`, claimed until `until`.
    fn claim(&mut self, index: usize, until: Instant) -> Option<Pending> {
        let claim = self.pending.get_mut(&index)?;
        claim.until = until;
        Some(Pending {
            payment: self.payments[index].clone(),
            card_token: claim.card_token.clone(),
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn begin(&self, pending: Pending, claim: Duration) -> Result<Begun, Error> {
        let mut state = self.lock()?;
        let now = Instant::now();
        if let Some(&index) = state.by_request_id.get(&pending.payment.request_id) {
            let stalled = state.pending.get(&index).is_some_and(|c| c.until <= now);
            return Ok(
                match stalled.then(|| state.claim(index, now + claim)).flatten() {
                    Some(taken_over) => Begun::Claimed(taken_over),
                    None => Begun::Found(state.payments[index].clone()),
                },
            );
        }
        let index = state.payments.len();
        let payment = &pending.payment;
        state.by_id.insert(payment.id.clone(), index);
        state
            .by_request_id
            .insert(payment.request_id.clone(), index);
        state.payments.push(payment.clone());
        state.pending.insert(
            index,
            Claim {
                card_token: pending.card_token.clone(),
                until: now + claim,
                refund_reason: None,
            },
        );
        Ok(Begun::Claimed(pending))
    }

    async fn finish(&self, payment_id: &str, decision: &Decision) -> Result<Payment, Error> {
        let mut state = self.lock()?;
        let index = state.index(payment_id)?;
        if let Some(claim) = state.pending.remove(&index) {
            let (status, reason) = decision.end(claim.refund_reason.as_deref());
            let payment = &mut state.payments[index];
            payment.status = status;
            payment.status_reason = reason;
            payment.update_time = shared::db::truncate_to_micros(SystemTime::now());
        }
        Ok(state.payments[index].clone())
    }

    async fn release(&self, payment_id: &str) -> Result<(), Error> {
        let mut state = self.lock()?;
        let index = state.index(payment_id)?;
        if let Some(claim) = state.pending.get_mut(&index) {
            claim.until = Instant::now();
        }
        Ok(())
    }

    async fn claim_stalled(&self, claim: Duration, limit: usize) -> Result<Vec<Pending>, Error> {
        let mut state = self.lock()?;
        let now = Instant::now();
        let mut stalled: Vec<usize> = state
            .pending
            .iter()
            .filter(|(_, c)| c.until <= now)
            .map(|(&index, _)| index)
            .collect();
        stalled.sort_unstable();
        stalled.truncate(limit);
        Ok(stalled
            .into_iter()
            .filter_map(|index| state.claim(index, now + claim))
            .collect())
    }

    async fn refund(&self, payment_id: &str, reason: &str) -> Result<Payment, Error> {
        let mut state = self.lock()?;
        let index = state.index(payment_id)?;
        let State {
            payments, pending, ..
        } = &mut *state;
        let payment = &mut payments[index];
        match payment.refund()? {
            Refund::Done => {}
            Refund::Deferred => {
                if let Some(claim) = pending.get_mut(&index) {
                    claim.refund_reason.get_or_insert_with(|| reason.to_owned());
                }
            }
            Refund::Apply => {
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
mod tests;
