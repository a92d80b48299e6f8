//! The PostgreSQL store's own tests: several processes on one database, a lost
//! listening connection, the outbox's retention. The tests both stores pass are in
//! `store/tests.rs`.

use std::sync::{Arc, Mutex};

use super::*;
use crate::domain::Status;
use crate::outbox::tests::FlakyBus;
use crate::store::tests::{LEASE, confirm, create, order, relay_all};

/// One replica watches an order while its database link is cut; another finishes
/// the order meanwhile, so the NOTIFY never reaches the first. Once the link is back,
/// the watcher sees the end all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_the_end_committed_while_its_listener_was_cut_off() {
    use shared::testing::proxy::Faults;

    let (direct, proxy, cut_off) = shared::testing::fresh_db_behind_proxy().await;
    let direct = PgStore::connect(&direct).await.unwrap();
    let cut_off = PgStore::connect(&cut_off).await.unwrap();

    let placed = order("ord_1", "req-1", "cus-1");
    create(&direct, placed.clone()).await.unwrap();
    let mut watching = cut_off.watch("ord_1").await.unwrap();
    assert_eq!(*watching.borrow_and_update(), placed);

    let accepted = proxy.accepted();
    proxy.set(Faults::reset());
    let confirmed = confirm(&direct, placed).await;
    // The cut-off replica noticed: it tried to connect again, and failed.
    shared::testing::eventually("the cut-off replica to reconnect", || async {
        proxy.accepted() >= accepted + 2
    })
    .await;
    proxy.set(Faults::default());

    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        watching.wait_for(|order| order.status.is_final()),
    )
    .await
    .expect("the watcher saw the end within 10 s")
    .unwrap()
    .clone();
    assert_eq!(seen, confirmed);
    assert_eq!(cut_off.watched_len(), 0, "nothing kept for a final order");
}

/// Watching a final order, or one whose watchers all left, keeps nothing.
#[tokio::test]
async fn watches_keep_nothing_for_final_or_unwatched_orders() {
    let store = PgStore::connect(&shared::testing::fresh_db_config().await)
        .await
        .unwrap();
    let done = order("ord_1", "req-1", "cus-1");
    create(&store, done.clone()).await.unwrap();
    let done = confirm(&store, done).await;
    let watching = store.watch("ord_1").await.unwrap();
    assert_eq!(*watching.borrow(), done);
    assert_eq!(store.watched_len(), 0);

    create(&store, order("ord_2", "req-2", "cus-1"))
        .await
        .unwrap();
    drop(store.watch("ord_2").await.unwrap());
    create(&store, order("ord_3", "req-3", "cus-1"))
        .await
        .unwrap();
    let _watching = store.watch("ord_3").await.unwrap();
    assert_eq!(
        store.watched_len(),
        1,
        "ord_2's channel went with its watcher"
    );
}

#[tokio::test]
async fn a_restarted_process_publishes_what_the_last_one_committed() {
    let config = shared::testing::fresh_db_config().await;
    let before = PgStore::connect(&config).await.unwrap();
    let placed = order("ord_1", "req-1", "cus-1");
    create(&before, placed.clone()).await.unwrap();
    confirm(&before, placed).await;
    // Killed before its relay ran: the events are committed, never published.
    drop(before);

    let after = PgStore::connect(&config).await.unwrap();
    let bus = FlakyBus::default();
    assert_eq!(relay_all(&after, &bus).await, 2);
    assert_eq!(bus.ids(), ["ord_1.placed", "ord_1.confirmed"]);
}

#[tokio::test]
async fn published_events_are_deleted_after_the_retention_and_pending_ones_never() {
    let config = shared::testing::fresh_db_config().await;
    let store = PgStore::connect(&config).await.unwrap();
    let bus = FlakyBus::default();
    let placed = order("ord_1", "req-1", "cus-1");
    create(&store, placed.clone()).await.unwrap();
    confirm(&store, placed).await;
    assert_eq!(relay_all(&store, &bus).await, 2);
    create(&store, order("ord_2", "req-2", "cus-1"))
        .await
        .unwrap();

    let hour = Duration::from_secs(3600);
    let prune = |retention, limit| store.prune_published(retention, limit);
    assert_eq!(prune(hour, 100).await.unwrap(), 0, "published just now");
    assert_eq!(prune(Duration::ZERO, 1).await.unwrap(), 1, "one batch");
    assert_eq!(prune(Duration::ZERO, 100).await.unwrap(), 1, "the other");
    assert_eq!(prune(Duration::ZERO, 100).await.unwrap(), 0);
    assert_eq!(store.pending_events().await.unwrap(), 1, "pending stays");
    assert_eq!(relay_all(&store, &bus).await, 1);
    assert_eq!(
        bus.ids(),
        ["ord_1.placed", "ord_1.confirmed", "ord_2.placed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_one_database_publish_every_event() {
    let config = shared::testing::fresh_db_config().await;
    let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
    let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    for i in 0..40 {
        let store = if i % 2 == 0 { &a } else { &b };
        let placed = order(&format!("ord_{i}"), &format!("req-{i}"), "cus-1");
        create(&**store, placed.clone()).await.unwrap();
        confirm(&**store, placed).await;
    }
    // One bus for both: it records the order in which the events were published.
    let bus = Arc::new(FlakyBus::default());
    let relay = |store: Arc<PgStore>| {
        let bus = bus.clone();
        tokio::spawn(async move { while store.relay(3, LEASE, &*bus).await.unwrap().sent > 0 {} })
    };
    let (ra, rb) = (relay(a.clone()), relay(b.clone()));
    ra.await.unwrap();
    rb.await.unwrap();
    // What one relay skipped while the other held it may still be pending: finish.
    while b.relay(100, LEASE, &*bus).await.unwrap().sent > 0 {}

    let ids = bus.ids();
    for i in 0..40 {
        let first = |name: &str| {
            let id = format!("ord_{i}.{name}");
            ids.iter().position(|published| *published == id)
        };
        let (placed, confirmed) = (first("placed"), first("confirmed"));
        assert!(
            placed.is_some() && confirmed.is_some(),
            "none missing: {ids:?}"
        );
        assert!(placed < confirmed, "placed before confirmed: {ids:?}");
    }
    assert!(ids.len() >= 80);
    assert_eq!(a.pending_events().await.unwrap(), 0, "each is marked sent");
}

/// A bus that asks PostgreSQL, while each event is being published, how many
/// transactions of the database are open.
struct InspectingBus {
    pool: sqlx::PgPool,
    open_transactions: Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl EventPublisher for InspectingBus {
    async fn publish(&self, _: Event) -> Result<(), shared::events::PublishError> {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        self.open_transactions.lock().unwrap().push(open);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_holds_no_transaction_open_while_the_broker_answers() {
    let url = shared::testing::fresh_database().await;
    let config = shared::db::DbConfig::from_url(&url).unwrap();
    let store = PgStore::connect(&config).await.unwrap();
    for i in 0..3 {
        let placed = order(&format!("ord_{i}"), &format!("req-{i}"), "cus-1");
        create(&store, placed).await.unwrap();
    }
    let bus = InspectingBus {
        pool: sqlx::PgPool::connect(&url).await.unwrap(),
        open_transactions: Mutex::default(),
    };
    assert_eq!(store.relay(10, LEASE, &bus).await.unwrap().sent, 3);
    assert_eq!(*bus.open_transactions.lock().unwrap(), [0, 0, 0]);
    assert_eq!(
        store.pending_events().await.unwrap(),
        0,
        "each is marked sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_see_changes_committed_by_another_replica() {
    let config = shared::testing::fresh_db_config().await;
    let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
    let (a, b) = (a.unwrap(), b.unwrap());
    let placed = order("ord_1", "req-1", "cus-1");
    create(&a, placed.clone()).await.unwrap();
    let mut changes = b.watch("ord_1").await.unwrap();
    assert_eq!(changes.borrow_and_update().status, Status::Pending);

    // Replica a's saga ends the order; b's watcher hears of it through PostgreSQL.
    // (b may have started listening after a's commit: it re-reads what it watches.)
    let confirmed = confirm(&a, placed).await;
    let seen = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        changes.wait_for(|order| order.status.is_final()),
    )
    .await
    .expect("the change within 10 s")
    .map(|order| order.clone())
    .unwrap();
    assert_eq!(seen, confirmed);
}
