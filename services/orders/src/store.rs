//! Where orders live. [`Store`] is what a database must provide; [`MemoryStore`] is the
//! embedded default. Each method is one atomic step, so of two requests racing with the
//! same request_id exactly one creates the order.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use shared::PageRequest;
use shared::pagination::position_key;
use tokio::sync::watch;

use crate::domain::{Order, storage_error};
use crate::error::Error;

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Stores `order`, unless an order with its request_id exists: then nothing is
    /// stored and that order is returned.
    async fn create(&self, order: Order) -> Result<Created, Error>;

    /// Replaces the order with `order.id` by `order`, and tells its watchers.
    async fn update(&self, order: &Order) -> Result<(), Error>;

    /// One order; [`Error::OrderNotFound`] if unknown.
    async fn order(&self, id: &str) -> Result<Order, Error>;

    /// The order placed with `request_id`, if any.
    async fn order_by_request(&self, request_id: &str) -> Result<Option<Order>, Error>;

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
}

#[derive(Debug, Default)]
struct State {
    /// In creation order; the position is the page key. Each order sits in a watch
    /// channel, which holds its current state and wakes its watchers on each change.
    orders: Vec<watch::Sender<Order>>,
    by_id: HashMap<String, usize>,
    by_request_id: HashMap<String, usize>,
    /// Each customer's orders, oldest first.
    by_customer: HashMap<String, Vec<usize>>,
}

impl MemoryStore {
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        // A panic while holding the lock may have left a half-applied change: refuse
        // to go on rather than serve it.
        self.state
            .lock()
            .map_err(|e| storage_error(std::io::Error::other(e.to_string())))
    }
}

impl State {
    fn index(&self, id: &str) -> Result<usize, Error> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| Error::OrderNotFound { id: id.into() })
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, order: Order) -> Result<Created, Error> {
        let mut state = self.lock()?;
        if let Some(&i) = state.by_request_id.get(&order.request_id) {
            return Ok(Created::Existing(state.orders[i].borrow().clone()));
        }
        let index = state.orders.len();
        state.by_id.insert(order.id.clone(), index);
        state.by_request_id.insert(order.request_id.clone(), index);
        state
            .by_customer
            .entry(order.customer_id.clone())
            .or_default()
            .push(index);
        state.orders.push(watch::Sender::new(order.clone()));
        Ok(Created::New(order))
    }

    async fn update(&self, order: &Order) -> Result<(), Error> {
        let state = self.lock()?;
        let index = state.index(&order.id)?;
        state.orders[index].send_replace(order.clone());
        Ok(())
    }

    async fn order(&self, id: &str) -> Result<Order, Error> {
        let state = self.lock()?;
        let index = state.index(id)?;
        Ok(state.orders[index].borrow().clone())
    }

    async fn order_by_request(&self, request_id: &str) -> Result<Option<Order>, Error> {
        let state = self.lock()?;
        let order = state
            .by_request_id
            .get(request_id)
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use shared::Money;

    use super::*;
    use crate::domain::{Item, NewOrder, Status};

    fn order(id: &str, request_id: &str, customer_id: &str) -> Order {
        let items = vec![Item {
            sku: "SKU-001".into(),
            quantity: 1,
        }];
        let request = NewOrder::new(
            request_id.into(),
            customer_id.into(),
            items,
            "tok_visa".into(),
        )
        .unwrap();
        let price = Some(Money::new("USD", 100));
        Order::new(id.into(), request, vec![price], SystemTime::now()).unwrap()
    }

    #[tokio::test]
    async fn one_order_per_request_id() {
        let store = MemoryStore::default();
        let first = order("ord_1", "req-1", "cus-1");
        assert!(matches!(
            store.create(first.clone()).await.unwrap(),
            Created::New(_)
        ));
        let second = order("ord_2", "req-1", "cus-1");
        let Created::Existing(existing) = store.create(second).await.unwrap() else {
            panic!("a second order was created for req-1");
        };
        assert_eq!(existing, first);
        assert_eq!(store.order_by_request("req-1").await.unwrap(), Some(first));
        assert!(matches!(
            store.order("ord_2").await,
            Err(Error::OrderNotFound { .. })
        ));
        assert_eq!(store.order_by_request("req-2").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_creates_make_one_order() {
        let store = Arc::new(MemoryStore::default());
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create(order(&format!("ord_{i}"), "same", "cus-1"))
                        .await
                })
            })
            .collect();
        let mut created = 0;
        for task in tasks {
            if let Created::New(_) = task.await.unwrap().unwrap() {
                created += 1;
            }
        }
        assert_eq!(created, 1);
    }

    #[tokio::test]
    async fn watchers_see_the_current_state_then_each_update() {
        let store = MemoryStore::default();
        let mut order = order("ord_1", "req-1", "cus-1");
        store.create(order.clone()).await.unwrap();
        let mut changes = store.watch("ord_1").await.unwrap();
        assert_eq!(changes.borrow_and_update().status, Status::Pending);

        order.finish(Status::Confirmed, SystemTime::now()).unwrap();
        store.update(&order).await.unwrap();
        changes.changed().await.unwrap();
        assert_eq!(changes.borrow_and_update().status, Status::Confirmed);
        assert_eq!(store.order("ord_1").await.unwrap(), order);

        assert!(matches!(
            store.watch("nope").await,
            Err(Error::OrderNotFound { .. })
        ));
        let unknown = self::order("ord_9", "req-9", "cus-1");
        assert!(matches!(
            store.update(&unknown).await,
            Err(Error::OrderNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_customers_orders_are_paged_newest_first() {
        let store = MemoryStore::default();
        for i in 0..5 {
            let customer = if i % 2 == 0 { "even" } else { "odd" };
            store
                .create(order(&format!("ord_{i}"), &format!("req-{i}"), customer))
                .await
                .unwrap();
        }
        let ids =
            |page: &[(String, Order)]| page.iter().map(|(_, o)| o.id.clone()).collect::<Vec<_>>();

        let first = store
            .orders("even", &PageRequest::new(2, "").unwrap())
            .await
            .unwrap();
        assert_eq!(
            ids(&first),
            ["ord_4", "ord_2", "ord_0"],
            "one more than the page size"
        );
        let next = PageRequest {
            size: 2,
            after: Some(first[1].0.clone()),
        };
        assert_eq!(ids(&store.orders("even", &next).await.unwrap()), ["ord_0"]);

        let garbage = PageRequest {
            size: 2,
            after: Some("zz".into()),
        };
        assert!(store.orders("even", &garbage).await.unwrap().is_empty());
        assert!(store.orders("nobody", &next).await.unwrap().is_empty());
    }
}
