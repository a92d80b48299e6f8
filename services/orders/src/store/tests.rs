use std::sync::Arc;
use std::time::SystemTime;

use shared::Money;

use super::*;

/// The relays' claims in these tests: no relay here dies mid-pass.
const LEASE: Duration = Duration::from_secs(10);
use crate::domain::{Item, NewOrder, Status};
use crate::events::order_event;
use crate::outbox::tests::FlakyBus;

/// Now, as precisely as every store keeps it.
fn now() -> SystemTime {
    shared::db::truncate_to_micros(SystemTime::now())
}

/// Creates `order` with its placed event, as the saga does.
async fn create(store: &dyn Store, order: Order) -> Result<Created, Error> {
    let event = order_event(&order);
    store.create(order, event).await
}

/// Updates `order`, recording the event of its state, as the saga does.
async fn update(store: &dyn Store, order: &Order) -> Result<(), Error> {
    store.update(order, OWNER, Some(order_event(order))).await
}

/// The saga owner of the tests' updates.
const OWNER: &str = "orders_test";

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
    Order::new(id.into(), request, vec![price], now()).unwrap()
}

/// Every update is a compare-and-set: a final order never changes again, and a
/// saga that another process claimed changes nothing.
async fn updates_only_change_pending_orders_of_their_own_saga(store: Arc<dyn Store>) {
    let placed = order("ord_1", "req-1", "cus-1");
    create(&*store, placed.clone()).await.unwrap();
    let lease = Duration::from_secs(60);
    assert!(store.renew_claim("ord_1", "other", lease).await.unwrap());

    let mut charged = placed.clone();
    charged.payment_id = Some("pay_1".into());
    let refused = store.update(&charged, OWNER, None).await;
    assert!(
        matches!(refused, Err(Error::Superseded { .. })),
        "{refused:?}"
    );
    assert_eq!(store.order("ord_1").await.unwrap(), placed, "unchanged");

    store.update(&charged, "other", None).await.unwrap();
    let confirmed = confirm_as(&*store, charged.clone(), "other").await;
    // A stale saga, its claim lapsed or not, cannot turn it back to PENDING.
    let stale = store.update(&charged, OWNER, None).await;
    assert!(matches!(stale, Err(Error::Superseded { .. })), "{stale:?}");
    let stale = store.update(&charged, "other", None).await;
    assert!(matches!(stale, Err(Error::Superseded { .. })), "{stale:?}");
    assert_eq!(store.order("ord_1").await.unwrap(), confirmed);

    let unknown = store
        .update(&order("ord_9", "req-9", "cus-1"), OWNER, None)
        .await;
    assert!(
        matches!(unknown, Err(Error::OrderNotFound { .. })),
        "{unknown:?}"
    );
}

async fn one_order_per_request_id(store: Arc<dyn Store>) {
    let first = order("ord_1", "req-1", "cus-1");
    assert!(matches!(
        create(&*store, first.clone()).await.unwrap(),
        Created::New(_)
    ));
    let second = order("ord_2", "req-1", "cus-1");
    let Created::Existing(existing) = create(&*store, second).await.unwrap() else {
        panic!("a second order was created for req-1");
    };
    assert_eq!(existing, first);
    assert_eq!(
        store.order_by_request("", "req-1").await.unwrap(),
        Some(first.clone())
    );
    assert!(matches!(
        store.order("ord_2").await,
        Err(Error::OrderNotFound { .. })
    ));
    assert_eq!(store.order_by_request("", "req-2").await.unwrap(), None);
    // Request ids are scoped by who placed the order: another caller's req-1 is
    // another order.
    let mut theirs = order("ord_3", "req-1", "cus-2");
    theirs.placed_by = "cus-2".into();
    assert!(matches!(
        create(&*store, theirs.clone()).await.unwrap(),
        Created::New(_)
    ));
    assert_eq!(
        store.order_by_request("cus-2", "req-1").await.unwrap(),
        Some(theirs)
    );
    assert_eq!(
        store.order_by_request("", "req-1").await.unwrap(),
        Some(first)
    );
}

async fn racing_creates_make_one_order(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                create(&*store, order(&format!("ord_{i}"), "same", "cus-1")).await
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

async fn watchers_see_the_current_state_then_each_update(store: Arc<dyn Store>) {
    let mut order = order("ord_1", "req-1", "cus-1");
    create(&*store, order.clone()).await.unwrap();
    let mut changes = store.watch("ord_1").await.unwrap();
    assert_eq!(changes.borrow_and_update().status, Status::Pending);

    order.finish(Status::Confirmed, now()).unwrap();
    update(&*store, &order).await.unwrap();
    changes.changed().await.unwrap();
    assert_eq!(changes.borrow_and_update().status, Status::Confirmed);
    assert_eq!(store.order("ord_1").await.unwrap(), order);

    assert!(matches!(
        store.watch("nope").await,
        Err(Error::OrderNotFound { .. })
    ));
    let unknown = self::order("ord_9", "req-9", "cus-1");
    assert!(matches!(
        update(&*store, &unknown).await,
        Err(Error::OrderNotFound { .. })
    ));
}

async fn a_customers_orders_are_paged_newest_first(store: Arc<dyn Store>) {
    for i in 0..5 {
        let customer = if i % 2 == 0 { "even" } else { "odd" };
        create(
            &*store,
            order(&format!("ord_{i}"), &format!("req-{i}"), customer),
        )
        .await
        .unwrap();
    }
    let ids = |page: &[(String, Order)]| page.iter().map(|(_, o)| o.id.clone()).collect::<Vec<_>>();

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

/// Confirms `order` as the saga would, recording its event.
async fn confirm(store: &dyn Store, order: Order) -> Order {
    confirm_as(store, order, OWNER).await
}

/// Confirms `order` as the saga of `owner` would.
async fn confirm_as(store: &dyn Store, mut order: Order, owner: &str) -> Order {
    order.finish(Status::Confirmed, now()).unwrap();
    let event = order_event(&order);
    store.update(&order, owner, Some(event)).await.unwrap();
    order
}

/// Relays until nothing is pending; how many were sent.
async fn relay_all(store: &dyn Store, bus: &FlakyBus) -> usize {
    let mut sent = 0;
    loop {
        let relayed = store.relay(10, LEASE, bus).await.unwrap();
        assert!(relayed.failure.is_none(), "{:?}", relayed.failure);
        if relayed.sent == 0 {
            return sent;
        }
        sent += relayed.sent;
    }
}

async fn nothing_is_lost_while_the_bus_fails(store: Arc<dyn Store>) {
    let bus = FlakyBus::default();
    bus.fail(true);
    create(&*store, order("ord_1", "req-1", "cus-1"))
        .await
        .unwrap();
    let relayed = store.relay(10, LEASE, &bus).await.unwrap();
    assert_eq!(relayed.sent, 0);
    assert!(relayed.failure.is_some());
    confirm(&*store, order("ord_1", "req-1", "cus-1")).await;
    create(&*store, order("ord_2", "req-2", "cus-1"))
        .await
        .unwrap();
    // A state change that records no event (the payment) adds nothing.
    store
        .update(&order("ord_2", "req-2", "cus-1"), OWNER, None)
        .await
        .unwrap();
    assert!(
        store
            .relay(10, LEASE, &bus)
            .await
            .unwrap()
            .failure
            .is_some()
    );

    bus.fail(false);
    assert_eq!(relay_all(&*store, &bus).await, 3);
    let mut ids = bus.ids();
    // An order's events in order; how different orders' interleave is free.
    let at = |id: &str| {
        let at = ids.iter().position(|published| published == id);
        at.unwrap_or_else(|| panic!("{id} published: {ids:?}"))
    };
    assert!(at("ord_1.placed") < at("ord_1.confirmed"), "{ids:?}");
    ids.sort();
    assert_eq!(ids, ["ord_1.confirmed", "ord_1.placed", "ord_2.placed"]);
    assert_eq!(
        store.relay(10, LEASE, &bus).await.unwrap().sent,
        0,
        "each is sent once"
    );
}

async fn events_are_relayed_in_batches_and_recorded_once(store: Arc<dyn Store>) {
    let bus = FlakyBus::default();
    for i in 0..5 {
        let placed = order(&format!("ord_{i}"), &format!("req-{i}"), "cus-1");
        create(&*store, placed.clone()).await.unwrap();
        let confirmed = confirm(&*store, placed).await;
        // The same state again (a stale saga) is refused and records nothing more.
        let again = update(&*store, &confirmed).await;
        assert!(matches!(again, Err(Error::Superseded { .. })), "{again:?}");
    }
    assert_eq!(store.relay(4, LEASE, &bus).await.unwrap().sent, 4);
    relay_all(&*store, &bus).await;
    let ids = bus.ids();
    assert_eq!(ids.len(), 10, "{ids:?}");
    for i in 0..5 {
        let placed = ids.iter().position(|id| *id == format!("ord_{i}.placed"));
        let confirmed = ids
            .iter()
            .position(|id| *id == format!("ord_{i}.confirmed"));
        assert!(placed < confirmed, "{ids:?}");
    }
}

const LONG: Duration = Duration::from_secs(3600);

async fn claimed_ids(store: &dyn Store, owner: &str, stale_after: Duration) -> Vec<String> {
    let claimed = store
        .claim_stranded(owner, stale_after, LONG, 100)
        .await
        .unwrap();
    claimed.into_iter().map(|order| order.id).collect()
}

async fn each_stranded_order_is_claimed_by_one_claimer(store: Arc<dyn Store>) {
    for i in 0..5 {
        let pending = order(&format!("ord_{i}"), &format!("req-{i}"), "cus-1");
        create(&*store, pending).await.unwrap();
    }
    let done = order("ord_done", "req-done", "cus-1");
    create(&*store, done.clone()).await.unwrap();
    confirm(&*store, done).await;
    assert!(
        claimed_ids(&*store, "early", LONG).await.is_empty(),
        "an order that changed lately is not stranded"
    );

    // Replicas looking at once (separate connections on PostgreSQL).
    let claimers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                claimed_ids(&*store, &format!("owner-{i}"), Duration::ZERO).await
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    claimed.sort();
    assert_eq!(claimed, ["ord_0", "ord_1", "ord_2", "ord_3", "ord_4"]);
    assert!(
        claimed_ids(&*store, "late", Duration::ZERO)
            .await
            .is_empty(),
        "claimed orders are not stranded while their claim lasts"
    );
}

async fn a_lapsed_claim_is_taken_again_and_a_renewed_one_is_not(store: Arc<dyn Store>) {
    let pending = order("ord_1", "req-1", "cus-1");
    create(&*store, pending.clone()).await.unwrap();
    assert_eq!(claimed_ids(&*store, "a", Duration::ZERO).await, ["ord_1"]);
    assert!(claimed_ids(&*store, "b", Duration::ZERO).await.is_empty());
    assert!(!store.renew_claim("ord_1", "b", LONG).await.unwrap());
    assert!(store.renew_claim("ord_1", "a", LONG).await.unwrap());
    assert!(claimed_ids(&*store, "b", Duration::ZERO).await.is_empty());

    // a's last renewal is short: it lapses, as when its process dies.
    let short = Duration::from_millis(20);
    assert!(store.renew_claim("ord_1", "a", short).await.unwrap());
    let b_claimed = std::sync::Mutex::new(Vec::new());
    shared::testing::eventually("the lapsed claim taken", || async {
        let ids = claimed_ids(&*store, "b", Duration::ZERO).await;
        let taken = !ids.is_empty();
        b_claimed.lock().unwrap().extend(ids);
        taken
    })
    .await;
    assert_eq!(*b_claimed.lock().unwrap(), ["ord_1"]);
    assert!(
        !store.renew_claim("ord_1", "a", LONG).await.unwrap(),
        "a lost it"
    );
    assert!(store.renew_claim("ord_1", "b", LONG).await.unwrap());

    // A final order is nobody's to claim.
    confirm_as(&*store, pending, "b").await;
    assert!(!store.renew_claim("ord_1", "b", LONG).await.unwrap());
    assert!(!store.renew_claim("nope", "b", LONG).await.unwrap());
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
        one_order_per_request_id,
        racing_creates_make_one_order,
        watchers_see_the_current_state_then_each_update,
        a_customers_orders_are_paged_newest_first,
        nothing_is_lost_while_the_bus_fails,
        events_are_relayed_in_batches_and_recorded_once,
        each_stranded_order_is_claimed_by_one_claimer,
        a_lapsed_claim_is_taken_again_and_a_renewed_one_is_not,
        updates_only_change_pending_orders_of_their_own_saga,
    ]
);

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
