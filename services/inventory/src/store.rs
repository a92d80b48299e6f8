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
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{Stock, demo_catalog};

    fn item(sku: &str, quantity: i32) -> Item {
        Item {
            sku: sku.into(),
            quantity,
        }
    }

    fn reservation(id: &str, items: Vec<Item>) -> NewReservation {
        NewReservation::new(id.into(), items).unwrap()
    }

    async fn stock(store: &dyn Store, sku: &str) -> Stock {
        store.product(sku).await.unwrap().stock
    }

    async fn reserve_is_all_or_nothing(store: Arc<dyn Store>) {
        // SKU-008 has 3 units: asking for 4 fails the whole reservation.
        let err = store
            .reserve(reservation(
                "r1",
                vec![item("SKU-001", 1), item("SKU-008", 4)],
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InsufficientStock(s) if s[0].sku == "SKU-008" && s[0].available == 3)
        );
        assert_eq!(stock(store.as_ref(), "SKU-001").await.available, 100);

        let err = store
            .reserve(reservation("r2", vec![item("SKU-001", 1), item("NOPE", 1)]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ProductNotFound { .. }));
        assert_eq!(stock(store.as_ref(), "SKU-001").await.available, 100);
    }

    async fn reserve_commit_release_move_the_buckets(store: Arc<dyn Store>) {
        store
            .reserve(reservation("a", vec![item("SKU-002", 5)]))
            .await
            .unwrap();
        store
            .reserve(reservation("b", vec![item("SKU-002", 3)]))
            .await
            .unwrap();
        assert_eq!(
            stock(store.as_ref(), "SKU-002").await,
            Stock {
                available: 17,
                reserved: 8,
                sold: 0
            }
        );
        store.commit("a").await.unwrap();
        store.release("b").await.unwrap();
        assert_eq!(
            stock(store.as_ref(), "SKU-002").await,
            Stock {
                available: 20,
                reserved: 0,
                sold: 5
            }
        );
    }

    async fn every_step_is_idempotent(store: Arc<dyn Store>) {
        let first = store
            .reserve(reservation("a", vec![item("SKU-003", 2)]))
            .await
            .unwrap();
        let again = store
            .reserve(reservation("a", vec![item("SKU-003", 2)]))
            .await
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(stock(store.as_ref(), "SKU-003").await.reserved, 2);

        let err = store
            .reserve(reservation("a", vec![item("SKU-003", 3)]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ReservationConflict { .. }));

        let committed = store.commit("a").await.unwrap();
        assert_eq!(store.commit("a").await.unwrap(), committed);
        assert_eq!(
            stock(store.as_ref(), "SKU-003").await,
            Stock {
                available: 198,
                reserved: 0,
                sold: 2
            }
        );
        assert!(matches!(
            store.release("a").await,
            Err(Error::ReservationCommitted { .. })
        ));

        store
            .reserve(reservation("b", vec![item("SKU-003", 1)]))
            .await
            .unwrap();
        let released = store.release("b").await.unwrap();
        assert_eq!(store.release("b").await.unwrap(), released);
        assert_eq!(stock(store.as_ref(), "SKU-003").await.available, 198);
        assert!(matches!(
            store.commit("b").await,
            Err(Error::ReservationReleased { .. })
        ));
        assert!(matches!(
            store.commit("zzz").await,
            Err(Error::ReservationNotFound { .. })
        ));
    }

    async fn a_release_before_the_reservation_blocks_it(store: Arc<dyn Store>) {
        let tombstone = store.release("late").await.unwrap();
        assert_eq!(tombstone.state, ReservationState::Released);
        let late = store
            .reserve(reservation("late", vec![item("SKU-004", 1)]))
            .await
            .unwrap();
        assert_eq!(late.state, ReservationState::Released);
        assert_eq!(stock(store.as_ref(), "SKU-004").await.available, 10);
    }

    async fn parallel_reservations_never_oversell(store: Arc<dyn Store>) {
        // 50 tasks race for SKU-004's 10 units, two units each: exactly 5 win.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .reserve(reservation(&format!("r{i}"), vec![item("SKU-004", 2)]))
                        .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(Error::InsufficientStock(_)) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(won, 5);
        assert_eq!(
            stock(store.as_ref(), "SKU-004").await,
            Stock {
                available: 0,
                reserved: 10,
                sold: 0
            }
        );
    }

    async fn restock_is_all_or_nothing(store: Arc<dyn Store>) {
        let err = store
            .restock(&[item("SKU-005", 5), item("NOPE", 1)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ProductNotFound { .. }));
        assert_eq!(stock(store.as_ref(), "SKU-005").await.available, 500);
        let products = store
            .restock(&[item("SKU-006", 5), item("SKU-005", 1), item("SKU-006", 2)])
            .await
            .unwrap();
        let levels: Vec<_> = products
            .iter()
            .map(|p| (p.sku.as_str(), p.stock.available))
            .collect();
        assert_eq!(levels, [("SKU-005", 501), ("SKU-006", 22)]);
    }

    async fn products_are_paged_in_sku_order(store: Arc<dyn Store>) {
        let page = PageRequest::new(3, "").unwrap();
        let first = store.products(&page).await.unwrap();
        let skus: Vec<_> = first.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(skus, ["SKU-001", "SKU-002", "SKU-003", "SKU-004"]);
        let next = PageRequest {
            size: 3,
            after: Some("SKU-006".into()),
        };
        let rest = store.products(&next).await.unwrap();
        assert_eq!(rest.len(), 2);
    }

    async fn the_last_units_are_sold_exactly_once(store: Arc<dyn Store>) {
        // 50 orders of one unit race for SKU-004's 10: 10 reserve and sell, 40 are refused.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let id = format!("last-{i}");
                    store
                        .reserve(reservation(&id, vec![item("SKU-004", 1)]))
                        .await?;
                    store.commit(&id).await
                })
            })
            .collect();
        let mut sold = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => sold += 1,
                Err(Error::InsufficientStock(_)) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(sold, 10);
        assert_eq!(
            stock(store.as_ref(), "SKU-004").await,
            Stock {
                available: 0,
                reserved: 0,
                sold: 10
            }
        );
    }

    async fn memory_store() -> Arc<dyn Store> {
        Arc::new(MemoryStore::new(demo_catalog()))
    }

    async fn pg_store() -> Arc<dyn Store> {
        let config = shared::testing::fresh_db_config().await;
        Arc::new(PgStore::connect(&config, demo_catalog()).await.unwrap())
    }

    shared::store_tests!(
        memory: memory_store,
        postgres: pg_store,
        tests: [
            reserve_is_all_or_nothing,
            reserve_commit_release_move_the_buckets,
            every_step_is_idempotent,
            a_release_before_the_reservation_blocks_it,
            parallel_reservations_never_oversell,
            the_last_units_are_sold_exactly_once,
            restock_is_all_or_nothing,
            products_are_paged_in_sku_order,
        ]
    );

    #[tokio::test]
    async fn seeding_and_migrating_twice_keeps_the_stock() {
        let config = shared::testing::fresh_db_config().await;
        let first = PgStore::connect(&config, demo_catalog()).await.unwrap();
        first
            .reserve(reservation("r", vec![item("SKU-001", 4)]))
            .await
            .unwrap();
        // A second replica starting on the same database: migrations and seed again.
        let second = PgStore::connect(&config, demo_catalog()).await.unwrap();
        assert_eq!(stock(&second, "SKU-001").await.available, 96);
        assert_eq!(
            second
                .products(&PageRequest::new(0, "").unwrap())
                .await
                .unwrap()
                .len(),
            8
        );
    }
}
