//! Where notifications live. [`Store`] is what a database must provide; [`MemoryStore`]
//! is the embedded default, [`PgStore`] PostgreSQL (`DATABASE_URL`). Each method is one atomic step, so an event delivered twice,
//! even concurrently, makes one notification.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use shared::PageRequest;
use shared::pagination::position_key;
use tokio::sync::broadcast;

use crate::domain::Notification;
use crate::error::Error;

mod postgres;

pub(crate) use postgres::PgStore;

/// How many new notifications a `StreamNotifications` call may fall behind before it
/// is ended (the client lists to catch up, then streams again).
pub(crate) const FEED_CAPACITY: usize = 1024;

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Records `notification`, unless one was made from its event already: then nothing
    /// changes. Each new one goes to the subscribers.
    async fn add(&self, notification: Notification) -> Result<Added, Error>;

    /// Up to `page.size + 1` of the customer's notifications, newest first, after the
    /// page key `page.after` (see [`position_key`]), each with its page key.
    async fn notifications(
        &self,
        customer_id: &str,
        page: &PageRequest,
    ) -> Result<Vec<(String, Notification)>, Error>;

    /// Every notification added from now on, of every customer, by any replica. A
    /// receiver that falls more than [`FEED_CAPACITY`] behind is told it lagged; one
    /// whose feed may have missed some (a lost database connection) gets
    /// [`Feed::Interrupted`].
    fn subscribe(&self) -> broadcast::Receiver<Feed>;
}

/// What a live feed carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    Added(Notification),
    /// Notifications may have been added that this feed cannot tell: list them.
    Interrupted,
}

/// What [`Store::add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Added {
    New,
    /// A notification was made from this event before: a redelivery.
    Duplicate,
}

#[derive(Debug)]
pub(crate) struct MemoryStore {
    state: Mutex<State>,
    feed: broadcast::Sender<Feed>,
}

#[derive(Debug, Default)]
struct State {
    /// In creation order; the position is the page key.
    notifications: Vec<Notification>,
    /// The de-duplication: each event id seen, ever.
    event_ids: HashSet<String>,
    /// Each customer's notifications, oldest first.
    by_customer: HashMap<String, Vec<usize>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            feed: broadcast::Sender::new(FEED_CAPACITY),
        }
    }
}

impl MemoryStore {
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        Ok(shared::storage::lock(&self.state)?)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn add(&self, notification: Notification) -> Result<Added, Error> {
        let mut state = self.lock()?;
        if !state.event_ids.insert(notification.event_id.clone()) {
            return Ok(Added::Duplicate);
        }
        let index = state.notifications.len();
        state
            .by_customer
            .entry(notification.customer_id.clone())
            .or_default()
            .push(index);
        state.notifications.push(notification.clone());
        // Sent under the lock, so subscribers see notifications in the store's order.
        // No subscriber is not an error.
        let _ = self.feed.send(Feed::Added(notification));
        Ok(Added::New)
    }

    async fn notifications(
        &self,
        customer_id: &str,
        page: &PageRequest,
    ) -> Result<Vec<(String, Notification)>, Error> {
        let state = self.lock()?;
        let Some(indices) = state.by_customer.get(customer_id) else {
            return Ok(Vec::new());
        };
        Ok(page
            .newest_first(indices)
            .map(|i| (position_key(i), state.notifications[i].clone()))
            .collect())
    }

    fn subscribe(&self) -> broadcast::Receiver<Feed> {
        self.feed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;

    fn notification(event_id: &str, customer_id: &str) -> Notification {
        Notification {
            id: shared::id::new("ntf"),
            customer_id: customer_id.into(),
            order_id: "ord_1".into(),
            event_id: event_id.into(),
            message: format!("about {event_id}"),
            create_time: shared::db::truncate_to_micros(SystemTime::now()),
        }
    }

    fn events(page: &[(String, Notification)]) -> Vec<&str> {
        page.iter().map(|(_, n)| n.event_id.as_str()).collect()
    }

    async fn an_event_makes_one_notification_however_often_it_comes(store: Arc<dyn Store>) {
        let mut feed = store.subscribe();
        assert_eq!(
            store.add(notification("e1", "cus-1")).await.unwrap(),
            Added::New
        );
        assert_eq!(
            store.add(notification("e1", "cus-1")).await.unwrap(),
            Added::Duplicate
        );
        assert_eq!(
            store.add(notification("e2", "cus-1")).await.unwrap(),
            Added::New
        );

        let all = store
            .notifications("cus-1", &PageRequest::new(0, "").unwrap())
            .await
            .unwrap();
        assert_eq!(events(&all), ["e2", "e1"]);
        assert_eq!(added(&mut feed).await.event_id, "e1");
        assert_eq!(
            added(&mut feed).await.event_id,
            "e2",
            "the duplicate was not sent"
        );
    }

    /// The next notification of `feed`.
    async fn added(feed: &mut broadcast::Receiver<Feed>) -> Notification {
        match feed.recv().await.unwrap() {
            Feed::Added(notification) => notification,
            Feed::Interrupted => panic!("the feed was interrupted"),
        }
    }

    async fn concurrent_redeliveries_make_one_notification(store: Arc<dyn Store>) {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.add(notification("same", "cus-1")).await.unwrap() })
            })
            .collect();
        let mut new = 0;
        for task in tasks {
            if task.await.unwrap() == Added::New {
                new += 1;
            }
        }
        assert_eq!(new, 1);
    }

    async fn a_customers_notifications_are_paged_newest_first(store: Arc<dyn Store>) {
        for i in 0..5 {
            let customer = if i % 2 == 0 { "even" } else { "odd" };
            store
                .add(notification(&format!("e{i}"), customer))
                .await
                .unwrap();
        }
        let first = store
            .notifications("even", &PageRequest::new(2, "").unwrap())
            .await
            .unwrap();
        assert_eq!(
            events(&first),
            ["e4", "e2", "e0"],
            "one more than the page size"
        );
        let next = PageRequest {
            size: 2,
            after: Some(first[1].0.clone()),
        };
        assert_eq!(
            events(&store.notifications("even", &next).await.unwrap()),
            ["e0"]
        );
        let garbage = PageRequest {
            size: 2,
            after: Some("zz".into()),
        };
        assert!(
            store
                .notifications("even", &garbage)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .notifications("nobody", &next)
                .await
                .unwrap()
                .is_empty()
        );
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
            an_event_makes_one_notification_however_often_it_comes,
            concurrent_redeliveries_make_one_notification,
            a_customers_notifications_are_paged_newest_first,
        ]
    );

    /// A stream on one replica sees the notifications every replica makes, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_carries_every_replicas_notifications_once() {
        let config = shared::testing::fresh_db_config().await;
        let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut feed = b.subscribe();
        a.add(notification("e1", "cus-1")).await.unwrap();
        b.add(notification("e2", "cus-1")).await.unwrap();
        a.add(notification("e3", "cus-2")).await.unwrap();
        let seen = [
            added(&mut feed).await,
            added(&mut feed).await,
            added(&mut feed).await,
        ];
        let events: Vec<_> = seen.iter().map(|n| n.event_id.as_str()).collect();
        assert_eq!(events, ["e1", "e2", "e3"]);
        assert!(feed.try_recv().is_err(), "nothing twice");
    }

    /// A replica whose database link is cut cannot tell what it missed: its feed says
    /// so, and carries every replica's notifications again once the link is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_cut_off_from_the_database_says_it_was_interrupted() {
        use shared::testing::proxy::Faults;

        let (direct, proxy, cut_off) = shared::testing::fresh_db_behind_proxy().await;
        let a = PgStore::connect(&direct).await.unwrap();
        let b = PgStore::connect(&cut_off).await.unwrap();

        let mut feed = b.subscribe();
        proxy.set(Faults::reset());
        a.add(notification("missed", "cus-1")).await.unwrap();
        let told = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv()).await;
        assert_eq!(told.expect("told within 10 s").unwrap(), Feed::Interrupted);
        proxy.set(Faults::default());

        // Listening again takes a moment: add until one comes through (10 s at most).
        let mut feed = b.subscribe();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            a.add(notification(&shared::id::new("again"), "cus-1"))
                .await
                .unwrap();
            let next = tokio::time::timeout(std::time::Duration::from_millis(200), feed.recv());
            if let Ok(Ok(Feed::Added(n))) = next.await {
                assert!(n.event_id.starts_with("again"), "{n:?}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the feed never came back"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_consumers_on_one_database_make_one_notification() {
        let config = shared::testing::fresh_db_config().await;
        let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
        let (a, b) = (a.unwrap(), b.unwrap());
        let (x, y) = tokio::join!(
            a.add(notification("same", "cus-1")),
            b.add(notification("same", "cus-1"))
        );
        let mut outcomes = [x.unwrap(), y.unwrap()];
        outcomes.sort_by_key(|added| *added == Added::Duplicate);
        assert_eq!(outcomes, [Added::New, Added::Duplicate]);
        let page = PageRequest::new(0, "").unwrap();
        assert_eq!(b.notifications("cus-1", &page).await.unwrap().len(), 1);
    }
}
