use std::sync::Arc;
use std::time::SystemTime;

use shared::Money;

use super::*;

/// The relays' claims in these tests: no relay here dies mid-pass.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
use crate::domain::{Item, NewOrder, Status};
use crate::events::order_event;
use crate::outbox::tests::FlakyBus;

/// Now, as precisely as every store keeps it.
fn now() -> SystemTime {
    shared::db::truncate_to_micros(SystemTime::now())
}

/// Creates `order` with its placed event, as the saga does.
pub(crate) async fn create(store: &dyn Store, order: Order) -> Result<Created, Error> {
    let event = order_event(&order);
    store.create(order, event).await
}

/// Updates `order`, recording the event of its state, as the saga does.
async fn update(store: &dyn Store, order: &Order) -> Result<(), Error> {
    store.update(order, OWNER, Some(order_event(order))).await
}

/// The saga owner of the tests' updates.
const OWNER: &str = "orders_test";

pub(crate) fn order(id: &str, request_id: &str, customer_id: &str) -> Order {
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
pub(crate) async fn confirm(store: &dyn Store, order: Order) -> Order {
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
pub(crate) async fn relay_all(store: &dyn Store, bus: &FlakyBus) -> usize {
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

/// Which states are open is the domain's word (`Status::OPEN`), not a store's: an
/// order in any state the domain calls final takes no update and no claim, in every
/// store, and an open one takes both.
async fn only_the_domains_open_states_change_or_are_claimed(store: Arc<dyn Store>) {
    let finals = [
        Status::Confirmed,
        Status::Rejected {
            reason: "card declined".into(),
        },
        Status::Failed {
            reason: "payment refunded".into(),
        },
    ];
    assert!(finals.iter().all(Status::is_final));
    assert!(Status::OPEN.iter().all(|status| !status.is_final()));
    let mut ended = Vec::new();
    for (i, status) in finals.into_iter().enumerate() {
        let mut order = order(&format!("ord_{i}"), &format!("req-{i}"), "cus-1");
        create(&*store, order.clone()).await.unwrap();
        order.finish(status, now()).unwrap();
        store
            .update(&order, OWNER, Some(order_event(&order)))
            .await
            .unwrap();
        ended.push(order);
    }
    let open = order("ord_open", "req-open", "cus-1");
    create(&*store, open.clone()).await.unwrap();

    assert_eq!(
        claimed_ids(&*store, OWNER, Duration::ZERO).await,
        ["ord_open"]
    );
    assert!(store.renew_claim("ord_open", OWNER, LONG).await.unwrap());
    for order in &ended {
        let mut changed = order.clone();
        changed.payment_id = Some("pay_late".into());
        let refused = store.update(&changed, OWNER, None).await;
        assert!(
            matches!(refused, Err(Error::Superseded { .. })),
            "{:?}: {refused:?}",
            order.status
        );
        assert!(
            !store.renew_claim(&order.id, OWNER, LONG).await.unwrap(),
            "{:?}",
            order.status
        );
        assert_eq!(&store.order(&order.id).await.unwrap(), order);
    }
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
        only_the_domains_open_states_change_or_are_claimed,
    ]
);
