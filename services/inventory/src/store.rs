//! Where products and reservations live. [`Store`] is what a database must provide;
//! [`MemoryStore`] is the embedded default, [`PgStore`] PostgreSQL (`DATABASE_URL`). Each method is one atomic step, so the
//! all-or-nothing and idempotency rules hold under any concurrency.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use shared::PageRequest;

use crate::domain::{Change, Item, NewReservation, Product, Reservation, ReservationState, units};
use crate::error::{Error, Shortage};

mod postgres;

pub(crate) use postgres::PgStore;

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// One product; [`Error::ProductNotFound`] if unknown.
    async fn product(&self, sku: &str) -> Result<Product, Error>;

    /// Up to `page.size + 1` products after `page.after`, in sku order (the extra one
    /// tells whether there is a next page).
    async fn products(&self, page: &PageRequest) -> Result<Vec<Product>, Error>;

    /// Reserves every item or none. A repeated request returns the existing reservation;
    /// the same id with other items is [`Error::ReservationConflict`].
    async fn reserve(&self, request: NewReservation) -> Result<Reservation, Error>;

    /// Reserved → committed; idempotent.
    async fn commit(&self, id: &str) -> Result<Reservation, Error>;

    /// Reserved → released; idempotent. An unknown id is recorded as released, so a
    /// late `reserve` with that id reserves nothing.
    async fn release(&self, id: &str) -> Result<Reservation, Error>;

    /// Adds every item's quantity to its sku's available stock, all or nothing.
    /// Returns the restocked products in sku order.
    async fn restock(&self, items: &[Item]) -> Result<Vec<Product>, Error>;
}

/// Everything in memory behind one lock: simple and obviously serializable.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    products: BTreeMap<String, Product>,
    reservations: HashMap<String, Reservation>,
}

impl MemoryStore {
    pub(crate) fn new(catalog: Vec<Product>) -> Self {
        let products = catalog.into_iter().map(|p| (p.sku.clone(), p)).collect();
        Self {
            state: Mutex::new(State {
                products,
                reservations: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        Ok(shared::storage::lock(&self.state)?)
    }
}

impl State {
    fn product_mut(&mut self, sku: &str) -> Result<&mut Product, Error> {
        self.products
            .get_mut(sku)
            .ok_or_else(|| Error::ProductNotFound { sku: sku.into() })
    }

    /// Moves every item's units with `change`, e.g. from reserved to sold.
    fn move_stock(
        &mut self,
        items: &[Item],
        now: SystemTime,
        change: impl Fn(&mut crate::domain::Stock, i64),
    ) {
        for item in items {
            if let Some(product) = self.products.get_mut(&item.sku) {
                change(&mut product.stock, units(item.quantity));
                product.update_time = now;
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn product(&self, sku: &str) -> Result<Product, Error> {
        self.lock()?.product_mut(sku).map(|p| p.clone())
    }

    async fn products(&self, page: &PageRequest) -> Result<Vec<Product>, Error> {
        let state = self.lock()?;
        let start = match &page.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        Ok(state
            .products
            .range::<str, _>((start, Bound::Unbounded))
            .take(page.size + 1)
            .map(|(_, p)| p.clone())
            .collect())
    }

    async fn reserve(&self, request: NewReservation) -> Result<Reservation, Error> {
        let mut state = self.lock()?;
        if let Some(existing) = state.reservations.get(&request.id) {
            return existing.clone().answer(&request);
        }

        let mut shortages = Vec::new();
        for item in &request.items {
            let product = state.product_mut(&item.sku)?;
            if product.stock.available < units(item.quantity) {
                shortages.push(Shortage {
                    sku: item.sku.clone(),
                    requested: item.quantity,
                    available: product.stock.available,
                });
            }
        }
        if !shortages.is_empty() {
            return Err(Error::InsufficientStock(shortages));
        }

        let now = SystemTime::now();
        state.move_stock(&request.items, now, |stock, n| {
            stock.available -= n;
            stock.reserved += n;
        });
        let reservation = Reservation {
            id: request.id,
            items: request.items,
            state: ReservationState::Reserved,
            create_time: now,
            update_time: now,
        };
        state
            .reservations
            .insert(reservation.id.clone(), reservation.clone());
        Ok(reservation)
    }

    async fn commit(&self, id: &str) -> Result<Reservation, Error> {
        let mut state = self.lock()?;
        let reservation = state
            .reservations
            .get(id)
            .ok_or_else(|| Error::ReservationNotFound { id: id.into() })?
            .clone();
        let reservation = match reservation.commit()? {
            Change::Done(reservation) => return Ok(reservation),
            Change::Apply(reservation) => reservation,
        };
        let now = SystemTime::now();
        state.move_stock(&reservation.items, now, |stock, n| {
            stock.reserved -= n;
            stock.sold += n;
        });
        Ok(state.set_state(id, ReservationState::Committed, now))
    }

    async fn release(&self, id: &str) -> Result<Reservation, Error> {
        let mut state = self.lock()?;
        let now = SystemTime::now();
        let Some(reservation) = state.reservations.get(id).cloned() else {
            let tombstone = Reservation {
                id: id.into(),
                items: Vec::new(),
                state: ReservationState::Released,
                create_time: now,
                update_time: now,
            };
            state.reservations.insert(id.into(), tombstone.clone());
            return Ok(tombstone);
        };
        let reservation = match reservation.release()? {
            Change::Done(reservation) => return Ok(reservation),
            Change::Apply(reservation) => reservation,
        };
        state.move_stock(&reservation.items, now, |stock, n| {
            stock.reserved -= n;
            stock.available += n;
        });
        Ok(state.set_state(id, ReservationState::Released, now))
    }

    async fn restock(&self, items: &[Item]) -> Result<Vec<Product>, Error> {
        let mut state = self.lock()?;
        for item in items {
            state.product_mut(&item.sku)?;
        }
        let now = SystemTime::now();
        state.move_stock(items, now, |stock, n| {
            stock.available = stock.available.saturating_add(n)
        });
        let mut skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        Ok(skus
            .into_iter()
            .filter_map(|sku| state.products.get(sku).cloned())
            .collect())
    }
}

impl State {
    fn set_state(&mut self, id: &str, to: ReservationState, now: SystemTime) -> Reservation {
        let reservation = self
            .reservations
            .get_mut(id)
            .expect("caller checked it exists");
        reservation.state = to;
        reservation.update_time = now;
        reservation.clone()
    }
}

#[cfg(test)]
mod tests;
