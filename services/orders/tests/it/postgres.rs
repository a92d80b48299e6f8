//! The order flow with every service on PostgreSQL (`DATABASE_URL`): real inventory,
//! payments and orders servers in-process, sharing one fresh database (one schema each,
//! as the `stack` launcher does), so the database decides every race.

use std::collections::HashMap;

use contracts::inventory::v1::GetProductRequest;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::{OrderItem, OrderStatus, PlaceOrderRequest};
use orders::events::ORDER_EVENTS;
use shared::events::InProcessBus;
use shared::testing::{TestServer, env, fresh_database};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_orders_for_the_last_ten_units_sell_exactly_ten() {
    let database = fresh_database().await;
    let with_db = |pairs: Vec<(&'static str, String)>| {
        let mut vars: Vec<(String, String)> = vec![("DATABASE_URL".into(), database.clone())];
        vars.extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)));
        vars
    };
    let config =
        |vars: &[(String, String)]| env(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));

    let inventory = TestServer::start(
        inventory::build(inventory::Config::from_env(&config(&with_db(vec![]))).unwrap())
            .await
            .unwrap(),
    );
    let payments = TestServer::start(
        payments::build(payments::Config::from_env(&config(&with_db(vec![]))).unwrap())
            .await
            .unwrap(),
    );
    let orders_vars = with_db(vec![
        ("INVENTORY_ADDR", format!("http://{}", inventory.addr)),
        ("PAYMENTS_ADDR", format!("http://{}", payments.addr)),
        // Fifty sagas at once: enough connections that none waits out its acquire timeout.
        ("DATABASE_MAX_CONNECTIONS", "20".into()),
    ]);
    let bus = InProcessBus::new();
    let mut events = bus.subscribe(ORDER_EVENTS);
    let orders = TestServer::start(
        orders::build(
            orders::Config::from_env(&config(&orders_vars)).unwrap(),
            &bus,
        )
        .await
        .unwrap(),
    );

    // SKU-004 starts with 10 units; fifty customers want one each, at the same time.
    let placed: Vec<_> = (0..50)
        .map(|i| {
            let mut client = OrderServiceClient::new(orders.channel.clone());
            tokio::spawn(async move {
                let request = PlaceOrderRequest {
                    request_id: format!("race-{i}"),
                    customer_id: format!("cus-{i}"),
                    items: vec![OrderItem {
                        sku: "SKU-004".into(),
                        quantity: 1,
                        ..OrderItem::default()
                    }],
                    card_token: "tok_visa".into(),
                };
                client.place_order(request).await.unwrap().into_inner()
            })
        })
        .collect();
    let mut by_status: HashMap<i32, usize> = HashMap::new();
    for task in placed {
        let order = task.await.unwrap().order.unwrap();
        *by_status.entry(order.status).or_default() += 1;
    }
    assert_eq!(
        by_status.get(&(OrderStatus::Confirmed as i32)),
        Some(&10),
        "{by_status:?}"
    );
    assert_eq!(
        by_status.get(&(OrderStatus::Rejected as i32)),
        Some(&40),
        "{by_status:?}"
    );

    let product = InventoryServiceClient::new(inventory.channel.clone())
        .get_product(GetProductRequest {
            sku: "SKU-004".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (0, 0, 10)
    );

    // Every order's placed and final event went through the outbox to the bus.
    let mut ids = Vec::new();
    while ids.len() < 100 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await
            .expect("all 100 events within 10 s")
            .unwrap();
        ids.push(event.id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);

    orders.stop().await.unwrap();
    payments.stop().await.unwrap();
    inventory.stop().await.unwrap();
}
