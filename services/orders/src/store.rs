//! Where orders live, with the outbox of their events. [`Store`] is what a database
//! must provide; [`MemoryStore`] is the embedded default, [`PgStore`] PostgreSQL
//! (`DATABASE_URL`). Each method is one atomic step, so of two requests racing with the
//! same request_id exactly one creates the order, and an order's state never changes
//! without its event being recorded (the transactional outbox, see `outbox.rs`), and
//! of processes claiming a stranded order's saga at once one gets it (`saga.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use shared::PageRequest;
use shared::events::{Event, EventPublisher};
use shared::pagination::position_key;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::domain::Order;
use crate::error::Error;
use crate::outbox::{self, Outbox, Relayed};

mod postgres;

pub(crate) use postgres::PgStore;

#[async_trait]
pub(crate) trait Store: Outbox + 'static {
    /// Stores `order` and its `placed` event, unless an order with its request_id
    /// placed by the same caller (`placed_by`) exists: then nothing is stored and that
    /// order is returned.
    async fn create(&self, order: Order, event: Event) -> Result<Created, Error>;

    /// Replaces the order with `order.id` by `order` and records `event` (the event of
    /// the state it reached, if it reached one) at once, then tells its watchers. An
    /// event recorded before (same id) is not recorded again.
    ///
    /// A compare-and-set, for the saga run by `owner`: only a pending order changes,
    /// and only while no other process holds a live claim on its saga; otherwise
    /// nothing changes and the answer is [`Error::Superseded`]. So a saga that lost
    /// its claim can never turn a final order back, nor overwrite what another did.
    async fn update(&self, order: &Order, owner: &str, event: Option<Event>) -> Result<(), Error>;

    /// One order; [`Error::OrderNotFound`] if unknown.
    async fn order(&self, id: &str) -> Result<Order, Error>;

    /// The order `placed_by` placed with `request_id`, if any.
    async fn order_by_request(
        &self,
        placed_by: &str,
        request_id: &str,
    ) -> Result<Option<Order>, Error>;

    /// Up to `page.size + 1` of the customer's orders, newest first, after the page key
    /// `page.after` (see [`position_key`]), each with its page key.
    async fn orders(
        &self,
        customer_id: &str,
        page: &PageRequest,
    ) -> Result<Vec<(String, Order)>, Error>;

    /// The order as it is now, then each change. A watcher that falls behind sees the
    /// latest state, never a stale one. [`Error::OrderNotFound`] if unknown.
    async fn watch(&self, id: &str) -> Result<watch::Receiver<Order>, Error>;

    /// Claims for `owner`, until `lease` from now, up to `limit` pending orders (oldest
    /// first) whose saga no process is known to run: those whose claim lapsed, and
    /// those nobody claimed that have not changed for `stale_after` (their creator runs
    /// their saga and claims them only if it takes long). Of processes claiming at
    /// once, each order goes to one.
    async fn claim_stranded(
        &self,
        owner: &str,
        stale_after: Duration,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Order>, Error>;

    /// Extends `owner`'s claim on the pending order `id` until `lease` from now, or
    /// claims it if no live claim holds it. `false` if another owner holds a live claim
    /// or the order is final (or unknown).
    async fn renew_claim(&self, id: &str, owner: &str, lease: Duration) -> Result<bool, Error>;
}

/// What [`Store::create`] did.
#[derive(Debug)]
pub(crate) enum Created {
    New(Order),
    /// The order of an earlier request with the same request_id.
    Existing(Order),
}

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
    outbox_signal: Notify,
    /// One relay pass at a time: each takes the oldest pending events.
    relaying: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// In creation order; the position is the page key. Each order sits in a watch
    /// channel, which holds its current state and wakes its watchers on each change.
    orders: Vec<watch::Sender<Order>>,
    by_id: HashMap<String, usize>,
    /// By who placed it, then request_id.
    by_request_id: HashMap<(String, String), usize>,
    /// Each customer's orders, oldest first.
    by_customer: HashMap<String, Vec<usize>>,
    /// Events not published yet, oldest first (published ones are dropped).
    outbox: VecDeque<Event>,
    /// Every event id recorded, so that a repeated one is not recorded again.
    recorded: std::collections::HashSet<String>,
    /// The claims on pending orders' sagas by index: owner, and until when.
    claims: HashMap<usize, (String, Instant)>,
}

impl MemoryStore {
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        Ok(shared::storage::lock(&self.state)?)
    }

    /// The first `limit` pending events.
    fn pending(&self, limit: usize) -> Result<Vec<Event>, Error> {
        Ok(self.lock()?.outbox.iter().take(limit).cloned().collect())
    }
}

impl State {
    fn index(&self, id: &str) -> Result<usize, Error> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| Error::OrderNotFound { id: id.into() })
    }

    /// Whether the saga of order `index` is claimed by someone else than `owner` now.
    fn claimed_by_other(&self, index: usize, owner: &str, now: Instant) -> bool {
        self.claims
            .get(&index)
            .is_some_and(|(holder, until)| holder != owner && *until >= now)
    }

    fn record(&mut self, event: Event) {
        if self.recorded.insert(event.id.clone()) {
            self.outbox.push_back(event);
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, order: Order, event: Event) -> Result<Created, Error> {
        let mut state = self.lock()?;
        let key = (order.placed_by.clone(), order.request_id.clone());
        if let Some(&i) = state.by_request_id.get(&key) {
            return Ok(Created::Existing(state.orders[i].borrow().clone()));
        }
        let index = state.orders.len();
        state.by_id.insert(order.id.clone(), index);
        state.by_request_id.insert(key, index);
        state
            .by_customer
            .entry(order.customer_id.clone())
            .or_default()
            .push(index);
        state.orders.push(watch::Sender::new(order.clone()));
        state.record(event);
        drop(state);
        self.outbox_signal.notify_one();
        Ok(Created::New(order))
    }

    async fn update(&self, order: &Order, owner: &str, event: Option<Event>) -> Result<(), Error> {
        let mut state = self.lock()?;
        let index = state.index(&order.id)?;
        if state.orders[index].borrow().status.is_final()
            || state.claimed_by_other(index, owner, Instant::now())
        {
            return Err(Error::Superseded {
                order_id: order.id.clone(),
            });
        }
        state.orders[index].send_replace(order.clone());
        if order.status.is_final() {
            // A final order's saga is over: nothing to claim any more.
            state.claims.remove(&index);
        }
        let Some(event) = event else {
            return Ok(());
        };
        state.record(event);
        drop(state);
        self.outbox_signal.notify_one();
        Ok(())
    }

    async fn order(&self, id: &str) -> Result<Order, Error> {
        let state = self.lock()?;
        let index = state.index(id)?;
        Ok(state.orders[index].borrow().clone())
    }

    async fn order_by_request(
        &self,
        placed_by: &str,
        request_id: &str,
    ) -> Result<Option<Order>, Error> {
        let state = self.lock()?;
        let order = state
            .by_request_id
            .get(&(placed_by.to_owned(), request_id.to_owned()))
            .map(|&i| state.orders[i].borrow().clone());
        Ok(order)
    }

    async fn orders(
        &self,
        customer_id: &str,
        page: &PageRequest,
    ) -> Result<Vec<(String, Order)>, Error> {
        let state = self.lock()?;
        let Some(indices) = state.by_customer.get(customer_id) else {
            return Ok(Vec::new());
        };
        Ok(page
            .newest_first(indices)
            .map(|i| (position_key(i), state.orders[i].borrow().clone()))
            .collect())
    }

    async fn watch(&self, id: &str) -> Result<watch::Receiver<Order>, Error> {
        let state = self.lock()?;
        let index = state.index(id)?;
        Ok(state.orders[index].subscribe())
    }

    async fn claim_stranded(
        &self,
        owner: &str,
        stale_after: Duration,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Order>, Error> {
        let mut state = self.lock()?;
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let mut claimed = Vec::new();
        for index in 0..state.orders.len() {
            if claimed.len() == limit {
                break;
            }
            let stranded = {
                let order = state.orders[index].borrow();
                !order.status.is_final()
                    && match state.claims.get(&index) {
                        Some((_, until)) => *until < now,
                        None => wall_now
                            .duration_since(order.update_time)
                            .is_ok_and(|age| age >= stale_after),
                    }
            };
            if stranded {
                state.claims.insert(index, (owner.to_owned(), now + lease));
                claimed.push(state.orders[index].borrow().clone());
            }
        }
        Ok(claimed)
    }

    async fn renew_claim(&self, id: &str, owner: &str, lease: Duration) -> Result<bool, Error> {
        let mut state = self.lock()?;
        let Some(&index) = state.by_id.get(id) else {
            return Ok(false);
        };
        let now = Instant::now();
        if state.orders[index].borrow().status.is_final()
            || state.claimed_by_other(index, owner, now)
        {
            return Ok(false);
        }
        state.claims.insert(index, (owner.to_owned(), now + lease));
        Ok(true)
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn relay(
        &self,
        limit: usize,
        // One process, one relay at a time: nothing to claim against.
        _lease: Duration,
        publisher: &dyn EventPublisher,
    ) -> Result<Relayed, Error> {
        let _one_at_a_time = self.relaying.lock().await;
        let mut relayed = Relayed::default();
        // Published outside the state lock; only this pass removes from the front.
        for event in self.pending(limit)? {
            if let Err(error) = outbox::publish(publisher, event).await {
                relayed.failure = Some(error);
                break;
            }
            self.lock()?.outbox.pop_front();
            relayed.sent += 1;
        }
        Ok(relayed)
    }

    fn outbox_signal(&self) -> &Notify {
        &self.outbox_signal
    }

    async fn prune_published(&self, _: Duration, _: usize) -> Result<u64, Error> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests;
