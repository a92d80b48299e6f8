//! The inventory service through its generated client, on a real server in-process.

use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::inventory::v1::{
    CommitReservationRequest, GetProductRequest, ListProductsRequest, ReleaseReservationRequest,
    ReservationItem, ReservationState, ReserveStockRequest, RestockProductsRequest,
};
use shared::testing::{TestServer, violated_fields};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

type Client = InventoryServiceClient<Channel>;

async fn spawn_with(pairs: &[(&str, &str)]) -> (TestServer, Client) {
    let env = shared::testing::env(pairs.iter().copied());
    let config = inventory::Config::from_env(&env).expect("valid test config");
    let server = TestServer::start(inventory::build(config).await.expect("server binds"));
    let client = InventoryServiceClient::new(server.channel.clone());
    (server, client)
}

async fn spawn() -> (TestServer, Client) {
    spawn_with(&[]).await
}

fn item(sku: &str, quantity: i32) -> ReservationItem {
    ReservationItem {
        sku: sku.into(),
        quantity,
    }
}

fn reserve(id: &str, items: Vec<ReservationItem>) -> ReserveStockRequest {
    ReserveStockRequest {
        reservation_id: id.into(),
        items,
    }
}

async fn available(client: &mut Client, sku: &str) -> i64 {
    let request = GetProductRequest { sku: sku.into() };
    client
        .get_product(request)
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
        .available
}

#[tokio::test]
async fn get_product_returns_the_catalog_entry() {
    let (_server, mut client) = spawn().await;
    let product = client
        .get_product(GetProductRequest {
            sku: "SKU-001".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(product.name, "Espresso beans, 1 kg");
    assert_eq!(product.price.unwrap().amount_minor, 2400);
    assert!(product.update_time.is_some());
}

#[tokio::test]
async fn get_product_errors() {
    let (_server, mut client) = spawn().await;
    let missing = client
        .get_product(GetProductRequest {
            sku: "SKU-404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.get_details_resource_info().unwrap().resource_name,
        "SKU-404"
    );

    let empty = client
        .get_product(GetProductRequest { sku: String::new() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&empty), ["sku"]);
}

#[tokio::test]
async fn list_products_pages_through_the_catalog() {
    let (_server, mut client) = spawn().await;
    let mut skus = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_products(ListProductsRequest {
                page_size: 3,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.products.len() <= 3);
        skus.extend(page.products.into_iter().map(|p| p.sku));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected: Vec<String> = (1..=8).map(|i| format!("SKU-00{i}")).collect();
    assert_eq!(skus, expected);

    let all = client
        .list_products(ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.products.len(), 8);
    assert!(all.next_page_token.is_empty());
}

#[tokio::test]
async fn list_products_rejects_bad_paging() {
    let (_server, mut client) = spawn().await;
    let negative = ListProductsRequest {
        page_size: -1,
        page_token: String::new(),
    };
    assert_eq!(
        violated_fields(&client.list_products(negative).await.unwrap_err()),
        ["page_size"]
    );
    let forged = ListProductsRequest {
        page_size: 1,
        page_token: "forged".into(),
    };
    assert_eq!(
        violated_fields(&client.list_products(forged).await.unwrap_err()),
        ["page_token"]
    );
}

#[tokio::test]
async fn reservation_life_cycle() {
    let (_server, mut client) = spawn().await;
    let reservation = client
        .reserve_stock(reserve(
            "ord_1",
            vec![item("SKU-002", 2), item("SKU-001", 1)],
        ))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(reservation.state(), ReservationState::Reserved);
    assert_eq!(available(&mut client, "SKU-002").await, 23);

    // A retry returns the same reservation and reserves nothing more.
    let retry = client
        .reserve_stock(reserve(
            "ord_1",
            vec![item("SKU-001", 1), item("SKU-002", 2)],
        ))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(retry, reservation);
    assert_eq!(available(&mut client, "SKU-002").await, 23);

    let commit = CommitReservationRequest {
        reservation_id: "ord_1".into(),
    };
    let committed = client
        .commit_reservation(commit.clone())
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(committed.state(), ReservationState::Committed);
    client
        .commit_reservation(commit)
        .await
        .expect("commit is idempotent");
    let product = client
        .get_product(GetProductRequest {
            sku: "SKU-002".into(),
        })
        .await
        .unwrap();
    let product = product.into_inner().product.unwrap();
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (23, 0, 2)
    );

    let release = ReleaseReservationRequest {
        reservation_id: "ord_1".into(),
    };
    let err = client.release_reservation(release).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn release_is_the_compensation() {
    let (_server, mut client) = spawn().await;
    client
        .reserve_stock(reserve("ord_2", vec![item("SKU-004", 4)]))
        .await
        .unwrap();
    assert_eq!(available(&mut client, "SKU-004").await, 6);
    let release = ReleaseReservationRequest {
        reservation_id: "ord_2".into(),
    };
    let released = client
        .release_reservation(release.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        released.reservation.unwrap().state(),
        ReservationState::Released
    );
    client
        .release_reservation(release)
        .await
        .expect("release is idempotent");
    assert_eq!(available(&mut client, "SKU-004").await, 10);

    let commit = CommitReservationRequest {
        reservation_id: "ord_2".into(),
    };
    assert_eq!(
        client.commit_reservation(commit).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // A release that overtakes its reservation makes the late reservation a no-op.
    let early = ReleaseReservationRequest {
        reservation_id: "ord_3".into(),
    };
    client.release_reservation(early).await.unwrap();
    let late = client
        .reserve_stock(reserve("ord_3", vec![item("SKU-004", 1)]))
        .await
        .unwrap();
    assert_eq!(
        late.into_inner().reservation.unwrap().state(),
        ReservationState::Released
    );
    assert_eq!(available(&mut client, "SKU-004").await, 10);
}

#[tokio::test]
async fn reserve_stock_errors() {
    let (_server, mut client) = spawn().await;

    let short = client
        .reserve_stock(reserve("r1", vec![item("SKU-001", 1), item("SKU-008", 4)]))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition);
    let violations = short.get_details_precondition_failure().unwrap().violations;
    assert_eq!(violations[0].subject, "SKU-008");
    assert_eq!(violations[0].description, "requested 4, available 3");
    assert_eq!(
        available(&mut client, "SKU-001").await,
        100,
        "all or nothing"
    );

    let unknown = client
        .reserve_stock(reserve("r2", vec![item("SKU-404", 1)]))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let invalid = client
        .reserve_stock(reserve("", vec![item("SKU-001", 0), item("SKU-001", -5)]))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&invalid),
        [
            "reservation_id",
            "items[0].quantity",
            "items[1].quantity",
            "items[1].sku"
        ]
    );
    let empty = client
        .reserve_stock(reserve("r3", vec![]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&empty), ["items"]);

    client
        .reserve_stock(reserve("r4", vec![item("SKU-003", 1)]))
        .await
        .unwrap();
    let reused = client
        .reserve_stock(reserve("r4", vec![item("SKU-003", 2)]))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);

    let commit = CommitReservationRequest {
        reservation_id: "never".into(),
    };
    assert_eq!(
        client.commit_reservation(commit).await.unwrap_err().code(),
        Code::NotFound
    );
    let blank = CommitReservationRequest {
        reservation_id: String::new(),
    };
    assert_eq!(
        violated_fields(&client.commit_reservation(blank).await.unwrap_err()),
        ["reservation_id"]
    );
    let blank = ReleaseReservationRequest {
        reservation_id: " ".into(),
    };
    assert_eq!(
        violated_fields(&client.release_reservation(blank).await.unwrap_err()),
        ["reservation_id"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_of_the_last_units_never_oversell() {
    let (_server, client) = spawn().await;
    // SKU-008 has 3 units; 30 clients want one each.
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .reserve_stock(reserve(&format!("last-{i}"), vec![item("SKU-008", 1)]))
                    .await
            })
        })
        .collect();
    let mut reserved = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => reserved += 1,
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition),
        }
    }
    assert_eq!(reserved, 3);
    let mut client = client;
    assert_eq!(available(&mut client, "SKU-008").await, 0);
}

fn restock(sku: &str, quantity: i32) -> RestockProductsRequest {
    RestockProductsRequest {
        sku: sku.into(),
        quantity,
    }
}

#[tokio::test]
async fn restock_products_streams_deliveries() {
    let (_server, mut client) = spawn().await;
    let deliveries = vec![
        restock("SKU-008", 5),
        restock("SKU-001", 10),
        restock("SKU-008", 2),
    ];
    let summary = client
        .restock_products(tokio_stream::iter(deliveries))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.item_count, 3);
    assert_eq!(summary.units_added, 17);
    let levels: Vec<_> = summary
        .products
        .iter()
        .map(|p| (p.sku.as_str(), p.available))
        .collect();
    assert_eq!(levels, [("SKU-001", 110), ("SKU-008", 10)]);
}

#[tokio::test]
async fn restock_products_is_all_or_nothing() {
    let (_server, mut client) = spawn().await;
    let unknown = vec![restock("SKU-001", 10), restock("SKU-404", 1)];
    let err = client
        .restock_products(tokio_stream::iter(unknown))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(available(&mut client, "SKU-001").await, 100);

    let invalid = vec![restock("SKU-001", 10), restock("SKU-002", 0)];
    let err = client
        .restock_products(tokio_stream::iter(invalid))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["[1].quantity"]);
    assert_eq!(available(&mut client, "SKU-001").await, 100);

    let err = client
        .restock_products(tokio_stream::iter(Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["stream"]);
}

async fn health_status(server: &TestServer, service: &str) -> Result<i32, Status> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    Ok(server.health().check(request).await?.into_inner().status)
}

#[tokio::test]
async fn health_reports_the_server_and_the_service() {
    let (server, _client) = spawn().await;
    for service in ["", "liveness", "readiness", "inventory.v1.InventoryService"] {
        assert_eq!(
            health_status(&server, service).await.unwrap(),
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let unknown = health_status(&server, "payments.v1.PaymentService")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_resolve_everything() {
    let (server, _client) = spawn().await;
    for report in [
        shared::testing::reflection_v1(server.channel.clone()).await,
        shared::testing::reflection_v1alpha(server.channel.clone()).await,
    ] {
        assert_eq!(
            report.services,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "inventory.v1.InventoryService",
            ]
        );
        for file in [
            "inventory/v1/inventory.proto",
            "common/v1/money.proto",
            "google/protobuf/timestamp.proto",
            "error_details.proto",
            "health.proto",
            "google/protobuf/duration.proto",
        ] {
            assert!(
                report.files.contains(file),
                "{file} missing from {:?}",
                report.files
            );
        }
    }
}

#[tokio::test]
async fn reflection_can_be_switched_off() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let (server, mut client) = spawn_with(&[("GRPC_REFLECTION", "false")]).await;
    available(&mut client, "SKU-001").await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let err = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn shutdown_turns_health_off_and_lets_in_flight_calls_finish() {
    // A shutdown delay keeps the server accepting while it reports NOT_SERVING, as
    // load balancers need; the restock stream is the slow in-flight call.
    let (server, mut client) = spawn_with(&[("SHUTDOWN_DELAY", "2s")]).await;
    let (deliveries, stream) = mpsc::channel(4);
    deliveries.send(restock("SKU-005", 1)).await.unwrap();
    let call =
        tokio::spawn(async move { client.restock_products(ReceiverStream::new(stream)).await });
    // A health Watch ends when the drain begins: how this test knows it has.
    let mut watch = server
        .health()
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();

    server.begin_shutdown();
    // Health checks share the call's connection, so once one answers NOT_SERVING
    // the server has already received the in-flight call.
    shared::testing::eventually("health to report NOT_SERVING", || async {
        let status = health_status(&server, "inventory.v1.InventoryService").await;
        status.ok() == Some(ServingStatus::NotServing as i32)
    })
    .await;
    assert_eq!(
        health_status(&server, "").await.unwrap(),
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        health_status(&server, "readiness").await.unwrap(),
        ServingStatus::NotServing as i32
    );
    // Liveness holds while draining, so Kubernetes does not restart a stopping pod.
    assert_eq!(
        health_status(&server, "liveness").await.unwrap(),
        ServingStatus::Serving as i32
    );

    // The call goes on through the drain.
    while watch.message().await.is_ok_and(|status| status.is_some()) {}
    deliveries.send(restock("SKU-005", 2)).await.unwrap();
    drop(deliveries);
    let summary = call
        .await
        .unwrap()
        .expect("the in-flight call completes")
        .into_inner();
    assert_eq!(summary.units_added, 3);
    server.join().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_drain_that_outlives_the_grace_period_is_cut_short() {
    let (server, mut client) = spawn_with(&[("SHUTDOWN_GRACE_PERIOD", "200ms")]).await;
    let (deliveries, stream) = mpsc::channel(4);
    deliveries.send(restock("SKU-005", 1)).await.unwrap();
    let call =
        tokio::spawn(async move { client.restock_products(ReceiverStream::new(stream)).await });
    // Make sure the call reached the server before shutting down.
    health_status(&server, "").await.unwrap();
    // The stream never ends, yet the server stops within its grace period…
    server
        .stop()
        .await
        .expect("a timed-out drain is not an error");
    // …without the call: it was still open when the server gave up on it (in a test,
    // its connection task outlives the server; a process that exits ends it).
    assert!(!call.is_finished(), "the call ended: {:?}", call.await);
    call.abort();
    drop(deliveries);
}

#[tokio::test]
async fn calls_are_counted_in_the_metrics_by_status() {
    let (_server, mut client) = spawn().await;
    let count = |code: &str| {
        let text = shared::metrics::render();
        let prefix = format!(
            "rpc_server_call_duration_seconds_count{{rpc_grpc_status_code=\"{code}\",rpc_method=\"GetProduct\",rpc_service=\"inventory.v1.InventoryService\",rpc_system=\"grpc\"}} "
        );
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let (ok, not_found) = (count("0"), count("5"));
    available(&mut client, "SKU-001").await;
    client
        .get_product(GetProductRequest {
            sku: "SKU-404".into(),
        })
        .await
        .unwrap_err();
    shared::testing::eventually("the calls to be counted", || async { count("0") > ok }).await;
    assert!(count("5") > not_found);
}
