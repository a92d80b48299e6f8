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
