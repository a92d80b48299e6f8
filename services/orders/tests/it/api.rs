//! The orders service through its generated client, on a real server in-process, with
//! real inventory and payments servers behind it. Where a test needs inventory to
//! misbehave, a proxy in front of the real one fails or holds `CommitReservation`.

use shared::testing::violated_fields;
use std::sync::Arc;
use std::time::Duration;

use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use contracts::inventory::v1::{self as inventory_pb, GetProductRequest};
use contracts::orders::v1::order_event::Kind;
use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::{
    GetOrderRequest, ListOrdersRequest, Order, OrderEvent, OrderItem, OrderStatus,
    PlaceOrderRequest, WatchOrderRequest,
};
use contracts::payments::v1::payment_service_client::PaymentServiceClient;
use contracts::payments::v1::{GetPaymentRequest, ListPaymentsRequest, Payment, PaymentStatus};
use orders::events::ORDER_EVENTS;
use prost::Message;
use shared::events::{InProcessBus, Subscription};
use shared::testing::{ClosedPort, TestServer, env, eventually};
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::StatusExt;

type Client = OrderServiceClient<Channel>;

/// What the inventory proxy does with `CommitReservation`.
#[derive(Clone, Debug)]
enum Commit {
    /// Answers INTERNAL without committing: a failure after the charge.
    Fail,
    /// Waits for a permit, then commits: holds an order PENDING for as long as a test needs.
    Gated(Arc<Semaphore>),
}

/// Orders, with real inventory and payments, and a subscription to its events.
struct Stack {
    orders: TestServer,
    client: Client,
    inventory: InventoryServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
    events: Subscription,
    // Kept to stop them with the test.
    _upstreams: Vec<TestServer>,
}

impl Stack {
    async fn start() -> Self {
        Self::start_with(None, &[]).await
    }

    /// `commit` puts the proxy in front of inventory; `pairs` add to orders' environment.
    async fn start_with(commit: Option<Commit>, pairs: &[(&str, &str)]) -> Self {
        let inventory = TestServer::start(
            inventory::build(inventory::Config::from_env(&env([])).unwrap())
                .await
                .unwrap(),
        );
        let payments = TestServer::start(
            payments::build(payments::Config::from_env(&env([])).unwrap())
                .await
                .unwrap(),
        );
        let real_inventory = InventoryServiceClient::new(inventory.channel.clone());
        let payments_addr = format!("http://{}", payments.addr);
        let mut inventory_addr = format!("http://{}", inventory.addr);
        let mut upstreams = vec![inventory, payments];
        if let Some(commit) = commit {
            let proxy = proxy(real_inventory.clone(), commit).await;
            inventory_addr = format!("http://{}", proxy.addr);
            upstreams.push(proxy);
        }
        let mut vars = vec![
            ("INVENTORY_ADDR", inventory_addr.as_str()),
            ("PAYMENTS_ADDR", payments_addr.as_str()),
        ];
        // Later pairs win: a test may point orders elsewhere.
        vars.extend_from_slice(pairs);

        let config = orders::Config::from_env(&env(vars)).unwrap();
        let bus = InProcessBus::new();
        let events = bus.subscribe(ORDER_EVENTS);
        let orders = TestServer::start(orders::build(config, &bus).await.unwrap());
        Self {
            client: OrderServiceClient::new(orders.channel.clone()),
            inventory: real_inventory,
            payments: PaymentServiceClient::new(upstreams[1].channel.clone()),
            orders,
            events,
            _upstreams: upstreams,
        }
    }

    async fn place(&self, request: PlaceOrderRequest) -> Result<Order, Status> {
        let response = self.client.clone().place_order(request).await?;
        Ok(response.into_inner().order.unwrap())
    }

    async fn get(&self, order_id: &str) -> Result<Order, Status> {
        let request = GetOrderRequest {
            order_id: order_id.into(),
        };
        Ok(self
            .client
            .clone()
            .get_order(request)
            .await?
            .into_inner()
            .order
            .unwrap())
    }

    async fn list(
        &self,
        customer_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Order>, String), Status> {
        let request = ListOrdersRequest {
            customer_id: customer_id.into(),
            page_size,
            page_token: page_token.into(),
        };
        let page = self.client.clone().list_orders(request).await?.into_inner();
        Ok((page.orders, page.next_page_token))
    }

    async fn watch(
        &self,
        order_id: &str,
    ) -> Result<Streaming<contracts::orders::v1::WatchOrderResponse>, Status> {
        let request = WatchOrderRequest {
            order_id: order_id.into(),
        };
        Ok(self.client.clone().watch_order(request).await?.into_inner())
    }

    /// (available, reserved, sold) of `sku`.
    async fn stock(&self, sku: &str) -> (i64, i64, i64) {
        let request = GetProductRequest { sku: sku.into() };
        let product = self
            .inventory
            .clone()
            .get_product(request)
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        (product.available, product.reserved, product.sold)
    }

    async fn payment(&self, payment_id: &str) -> Payment {
        let request = GetPaymentRequest {
            payment_id: payment_id.into(),
        };
        self.payments
            .clone()
            .get_payment(request)
            .await
            .unwrap()
            .into_inner()
            .payment
            .unwrap()
    }

    async fn payments_of(&self, order_id: &str) -> Vec<Payment> {
        let request = ListPaymentsRequest {
            order_id: order_id.into(),
            ..Default::default()
        };
        self.payments
            .clone()
            .list_payments(request)
            .await
            .unwrap()
            .into_inner()
            .payments
    }

    /// The next event on the bus, decoded.
    async fn next_event(&mut self) -> OrderEvent {
        let event = tokio::time::timeout(Duration::from_secs(10), self.events.next())
            .await
            .expect("an order event within 10 s")
            .expect("the bus is open");
        let message = OrderEvent::decode(event.payload).unwrap();
        assert_eq!(event.id, message.event_id);
        message
    }

    /// The one order of `customer_id`, once it exists and has been charged (so the saga
    /// stands at the commit).
    async fn charged_order_of(&self, customer_id: &str) -> Order {
        eventually("the order to be charged", || async {
            let (orders, _) = self.list(customer_id, 0, "").await.unwrap();
            orders.first().is_some_and(|o| !o.payment_id.is_empty())
        })
        .await;
        self.list(customer_id, 0, "").await.unwrap().0.remove(0)
    }
}

fn order_request(
    request_id: &str,
    customer_id: &str,
    items: &[(&str, i32)],
    card_token: &str,
) -> PlaceOrderRequest {
    PlaceOrderRequest {
        request_id: request_id.into(),
        customer_id: customer_id.into(),
        items: items
            .iter()
            .map(|&(sku, quantity)| OrderItem {
                sku: sku.into(),
                quantity,
                unit_price: None,
            })
            .collect(),
        card_token: card_token.into(),
    }
}

fn status(order: &Order) -> OrderStatus {
    order.status()
}

#[tokio::test]
async fn an_order_is_confirmed_its_stock_sold_and_its_card_charged() {
    let mut stack = Stack::start().await;
    let request = order_request(
        "req-1",
        "cus-1",
        &[("SKU-001", 2), ("SKU-003", 1)],
        "tok_visa",
    );
    let order = stack.place(request).await.unwrap();

    assert_eq!(status(&order), OrderStatus::Confirmed);
    assert!(order.order_id.starts_with("ord_"), "{}", order.order_id);
    assert_eq!(order.status_reason, "");
    let prices: Vec<_> = order
        .items
        .iter()
        .map(|i| i.unit_price.as_ref().unwrap().amount_minor)
        .collect();
    assert_eq!(prices, [2400, 1250]);
    assert_eq!(order.total.as_ref().unwrap().amount_minor, 2 * 2400 + 1250);
    assert_eq!(stack.get(&order.order_id).await.unwrap(), order);

    assert_eq!(stack.stock("SKU-001").await, (98, 0, 2));
    let payment = stack.payment(&order.payment_id).await;
    assert_eq!(payment.status(), PaymentStatus::Captured);
    assert_eq!(payment.amount.unwrap().amount_minor, 6050);
    assert_eq!(payment.order_id, order.order_id);

    let placed = stack.next_event().await;
    assert_eq!(placed.event_id, format!("{}.placed", order.order_id));
    assert!(matches!(placed.kind, Some(Kind::Placed(_))));
    assert_eq!(status(placed.order.as_ref().unwrap()), OrderStatus::Pending);
    let confirmed = stack.next_event().await;
    assert!(matches!(confirmed.kind, Some(Kind::Confirmed(_))));
    assert_eq!(confirmed.order.unwrap(), order);
}

#[tokio::test]
async fn a_declined_card_rejects_the_order_and_restores_the_stock() {
    let mut stack = Stack::start().await;
    let request = order_request("req-1", "cus-1", &[("SKU-002", 5)], "tok_declined");
    let order = stack.place(request).await.unwrap();

    assert_eq!(status(&order), OrderStatus::Rejected);
    assert!(
        order.status_reason.contains("declined"),
        "{}",
        order.status_reason
    );
    assert_eq!(order.payment_id, "");
    assert_eq!(stack.stock("SKU-002").await, (25, 0, 0));
    let declined = stack.payments_of(&order.order_id).await;
    assert_eq!(declined.len(), 1);
    assert_eq!(declined[0].status(), PaymentStatus::Declined);

    assert!(matches!(
        stack.next_event().await.kind,
        Some(Kind::Placed(_))
    ));
    let rejected = stack.next_event().await;
    let Some(Kind::Rejected(rejected)) = rejected.kind else {
        panic!("{rejected:?}")
    };
    assert_eq!(rejected.reason, order.status_reason);
}

#[tokio::test]
async fn too_little_stock_rejects_the_order_and_charges_nothing() {
    let stack = Stack::start().await;
    let request = order_request(
        "req-1",
        "cus-1",
        &[("SKU-001", 1), ("SKU-008", 4)],
        "tok_visa",
    );
    let order = stack.place(request).await.unwrap();

    assert_eq!(status(&order), OrderStatus::Rejected);
    assert!(
        order.status_reason.contains("SKU-008"),
        "{}",
        order.status_reason
    );
    assert!(stack.payments_of(&order.order_id).await.is_empty());
    assert_eq!(stack.stock("SKU-008").await, (3, 0, 0));
    assert_eq!(stack.stock("SKU-001").await, (100, 0, 0));
}

#[tokio::test]
async fn a_failure_after_the_charge_refunds_releases_and_fails_the_order() {
    let mut stack = Stack::start_with(Some(Commit::Fail), &[]).await;
    let request = order_request("req-1", "cus-1", &[("SKU-004", 2)], "tok_visa");
    let order = stack.place(request).await.unwrap();

    assert_eq!(status(&order), OrderStatus::Failed);
    assert_eq!(order.status_reason, "inventory failed");
    let payment = stack.payment(&order.payment_id).await;
    assert_eq!(payment.status(), PaymentStatus::Refunded);
    assert_eq!(stack.stock("SKU-004").await, (10, 0, 0));

    assert!(matches!(
        stack.next_event().await.kind,
        Some(Kind::Placed(_))
    ));
    assert!(matches!(
        stack.next_event().await.kind,
        Some(Kind::Failed(_))
    ));
}

#[tokio::test]
async fn an_unreachable_payments_fails_the_order_and_restores_the_stock() {
    let payments = ClosedPort::new();
    let stack = Stack::start_with(None, &[("PAYMENTS_ADDR", &payments.url())]).await;
    let order = stack
        .place(order_request(
            "req-1",
            "cus-1",
            &[("SKU-005", 7)],
            "tok_visa",
        ))
        .await
        .unwrap();

    assert_eq!(status(&order), OrderStatus::Failed);
    assert_eq!(order.status_reason, "payments is unavailable");
    assert_eq!(stack.stock("SKU-005").await, (500, 0, 0));
}

#[tokio::test]
async fn an_unreachable_inventory_is_unavailable_and_places_nothing() {
    let inventory = ClosedPort::new();
    let stack = Stack::start_with(None, &[("INVENTORY_ADDR", &inventory.url())]).await;
    let err = stack
        .place(order_request(
            "req-1",
            "cus-1",
            &[("SKU-001", 1)],
            "tok_visa",
        ))
        .await
        .unwrap_err();

    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("inventory"), "{err:?}");
    assert!(stack.list("cus-1", 0, "").await.unwrap().0.is_empty());
}

#[tokio::test]
async fn unknown_skus_are_invalid_and_place_nothing() {
    let stack = Stack::start().await;
    let request = order_request(
        "req-1",
        "cus-1",
        &[("SKU-001", 1), ("SKU-404", 1)],
        "tok_visa",
    );
    let err = stack.place(request).await.unwrap_err();

    assert_eq!(violated_fields(&err), ["items[1].sku"]);
    assert!(stack.list("cus-1", 0, "").await.unwrap().0.is_empty());
}

#[tokio::test]
async fn invalid_requests_name_every_bad_field() {
    let stack = Stack::start().await;
    let err = stack.place(PlaceOrderRequest::default()).await.unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["request_id", "customer_id", "items", "card_token"]
    );

    let request = order_request(
        "req-1",
        "cus-1",
        &[("SKU-001", 0), ("SKU-001", 10_001)],
        "tok_visa",
    );
    let err = stack.place(request).await.unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["items[0].quantity", "items[1].quantity", "items[1].sku"]
    );

    assert_eq!(
        violated_fields(&stack.get("").await.unwrap_err()),
        ["order_id"]
    );
    assert_eq!(
        violated_fields(&stack.watch("").await.unwrap_err()),
        ["order_id"]
    );
    let err = stack.list("", -1, "not-a-token").await.unwrap_err();
    assert_eq!(
        violated_fields(&err),
        ["customer_id", "page_size", "page_token"]
    );
}

#[tokio::test]
async fn identical_requests_racing_place_one_order_and_charge_once() {
    let stack = Stack::start().await;
    let request = order_request("same", "cus-1", &[("SKU-003", 1)], "tok_visa");
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (mut client, request) = (stack.client.clone(), request.clone());
            tokio::spawn(async move { client.place_order(request).await })
        })
        .collect();
    let mut orders = Vec::new();
    for call in calls {
        orders.push(call.await.unwrap().unwrap().into_inner().order.unwrap());
    }

    assert!(
        orders.iter().all(|o| *o == orders[0]),
        "every caller gets the same order"
    );
    assert_eq!(status(&orders[0]), OrderStatus::Confirmed);
    assert_eq!(stack.list("cus-1", 0, "").await.unwrap().0.len(), 1);
    assert_eq!(stack.payments_of(&orders[0].order_id).await.len(), 1);
    assert_eq!(stack.stock("SKU-003").await, (199, 0, 1));
}

#[tokio::test]
async fn a_request_id_is_the_same_order_for_a_retry_and_already_exists_for_another() {
    let stack = Stack::start().await;
    let order = stack
        .place(order_request(
            "req-1",
            "cus-1",
            &[("SKU-006", 1)],
            "tok_visa",
        ))
        .await
        .unwrap();
    let retried = stack
        .place(order_request(
            "req-1",
            "cus-1",
            &[("SKU-006", 1)],
            "tok_visa",
        ))
        .await
        .unwrap();
    assert_eq!(retried, order);

    let other = order_request("req-1", "cus-1", &[("SKU-006", 2)], "tok_visa");
    let err = stack.place(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(
        err.get_details_resource_info().unwrap().resource_name,
        "req-1"
    );
    assert_eq!(stack.payments_of(&order.order_id).await.len(), 1);
}

#[tokio::test]
async fn get_and_watch_of_an_unknown_order_are_not_found() {
    let stack = Stack::start().await;
    let err = stack.get("ord_404").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.get_details_resource_info().unwrap().resource_name,
        "ord_404"
    );
    assert_eq!(
        stack.watch("ord_404").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn list_orders_pages_a_customers_orders_newest_first() {
    let stack = Stack::start().await;
    let mut placed = Vec::new();
    for i in 0..3 {
        let request = order_request(&format!("req-{i}"), "cus-1", &[("SKU-007", 1)], "tok_visa");
        placed.push(stack.place(request).await.unwrap().order_id);
    }
    stack
        .place(order_request(
            "req-other",
            "cus-2",
            &[("SKU-007", 1)],
            "tok_visa",
        ))
        .await
        .unwrap();

    let (first, token) = stack.list("cus-1", 2, "").await.unwrap();
    let ids: Vec<_> = first.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids, [placed[2].as_str(), placed[1].as_str()]);
    assert!(!token.is_empty());
    let (rest, token) = stack.list("cus-1", 2, &token).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].order_id, placed[0]);
    assert_eq!(token, "");
}

#[tokio::test]
async fn watch_order_sees_pending_then_confirmed_and_ends() {
    let gate = Arc::new(Semaphore::new(0));
    let stack = Stack::start_with(Some(Commit::Gated(gate.clone())), &[]).await;
    let mut client = stack.client.clone();
    let placing = tokio::spawn(async move {
        let request = order_request("req-1", "cus-1", &[("SKU-001", 1)], "tok_visa");
        client.place_order(request).await
    });
    let pending = stack.charged_order_of("cus-1").await;

    let mut watch = stack.watch(&pending.order_id).await.unwrap();
    let first = watch.message().await.unwrap().unwrap().order.unwrap();
    assert_eq!(status(&first), OrderStatus::Pending);
    gate.add_permits(1);
    let last = watch.message().await.unwrap().unwrap().order.unwrap();
    assert_eq!(status(&last), OrderStatus::Confirmed);
    assert!(
        watch.message().await.unwrap().is_none(),
        "the stream ends once the order is final"
    );

    let placed = placing.await.unwrap().unwrap().into_inner().order.unwrap();
    assert_eq!(placed, last);

    // A final order: its state, and the end.
    let mut watch = stack.watch(&placed.order_id).await.unwrap();
    assert_eq!(
        watch.message().await.unwrap().unwrap().order.unwrap(),
        placed
    );
    assert!(watch.message().await.unwrap().is_none());
}

#[tokio::test]
async fn the_saga_goes_on_when_the_call_is_dropped() {
    let gate = Arc::new(Semaphore::new(0));
    let stack = Stack::start_with(Some(Commit::Gated(gate.clone())), &[]).await;
    // The deadline runs out while the saga waits at the commit: the server drops the
    // call (DEADLINE_EXCEEDED) as the client gives up on it (CANCELLED), whichever comes
    // first, just as when a client hangs up.
    let mut request = Request::new(order_request(
        "req-1",
        "cus-1",
        &[("SKU-002", 3)],
        "tok_visa",
    ));
    request.set_timeout(Duration::from_millis(300));
    let err = stack.client.clone().place_order(request).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );

    let pending = stack.charged_order_of("cus-1").await;
    assert_eq!(status(&pending), OrderStatus::Pending);
    gate.add_permits(1);
    eventually("the order to be confirmed", || async {
        status(&stack.get(&pending.order_id).await.unwrap()) == OrderStatus::Confirmed
    })
    .await;
    assert_eq!(stack.stock("SKU-002").await, (22, 0, 3));
}

#[tokio::test]
async fn watch_order_ends_with_unavailable_when_the_server_shuts_down() {
    // A drain held by the watch would last a minute; the test allows it 5 seconds.
    let (stack, gate, pending) = a_saga_held_at_the_commit(&[]).await;
    // Only the watch is left open: the caller hung up (a PlaceOrder in flight rightly
    // holds the drain).
    let mut watch = stack.watch(&pending.order_id).await.unwrap();
    assert_eq!(
        status(&watch.message().await.unwrap().unwrap().order.unwrap()),
        OrderStatus::Pending
    );

    stack.orders.begin_shutdown();
    let err = watch.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // The saga still running rightly holds the drain too (the next test): let it end.
    gate.add_permits(1);
    let stopped = tokio::time::timeout(Duration::from_secs(5), stack.orders.join()).await;
    stopped
        .expect("the drain is not held by the watch")
        .unwrap();
}

#[tokio::test]
async fn a_saga_that_ends_during_the_drain_is_waited_for_and_its_events_published() {
    let (mut stack, gate, pending) = a_saga_held_at_the_commit(&[("SHUTDOWN_DELAY", "0s")]).await;
    // The caller hung up: no call holds the drain, only the saga, which goes on.
    let placed = stack.next_event().await;
    assert_eq!(placed.order.unwrap().order_id, pending.order_id);

    let Stack {
        orders,
        mut events,
        _upstreams,
        ..
    } = stack;
    orders.begin_shutdown();
    let mut stopping = tokio::spawn(orders.join());
    // The drain waits for the saga…
    let early = tokio::time::timeout(Duration::from_millis(300), &mut stopping).await;
    assert!(early.is_err(), "the server stopped with a saga running");
    gate.add_permits(1);
    // …and the relay's last pass publishes the order's outcome.
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops once the saga has ended")
        .unwrap()
        .unwrap();
    let last = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the outcome's event within 10 s")
        .expect("the bus is open");
    let order = OrderEvent::decode(last.payload).unwrap().order.unwrap();
    assert_eq!(order.order_id, pending.order_id);
    assert_eq!(status(&order), OrderStatus::Confirmed);
}

/// A stack (a 60 s grace period, `env` added) whose one order of cus-1 is charged and
/// held at the commit until the gate opens, its caller gone (it hung up).
async fn a_saga_held_at_the_commit(env: &[(&str, &str)]) -> (Stack, Arc<Semaphore>, Order) {
    let gate = Arc::new(Semaphore::new(0));
    let mut vars = vec![("SHUTDOWN_GRACE_PERIOD", "60s")];
    vars.extend_from_slice(env);
    let stack = Stack::start_with(Some(Commit::Gated(gate.clone())), &vars).await;
    let mut client = stack.client.clone();
    let placing = tokio::spawn(async move {
        let request = order_request("req-1", "cus-1", &[("SKU-001", 1)], "tok_visa");
        client.place_order(request).await
    });
    let pending = stack.charged_order_of("cus-1").await;
    placing.abort();
    (stack, gate, pending)
}

/// Serves the inventory API in front of `real`, with `commit` in place of its
/// `CommitReservation`.
async fn proxy(real: InventoryServiceClient<Channel>, commit: Commit) -> TestServer {
    let config = shared::ServerConfig::from_env(&env([]), 0, 0).unwrap();
    let service = InventoryServiceServer::new(InventoryProxy { real, commit });
    TestServer::start(
        shared::Server::builder("inventory-proxy", &config)
            .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET)
            .add_service(service)
            .bind()
            .await
            .unwrap(),
    )
}

struct InventoryProxy {
    real: InventoryServiceClient<Channel>,
    commit: Commit,
}

#[tonic::async_trait]
impl InventoryService for InventoryProxy {
    async fn get_product(
        &self,
        request: Request<inventory_pb::GetProductRequest>,
    ) -> Result<Response<inventory_pb::GetProductResponse>, Status> {
        self.real.clone().get_product(request.into_inner()).await
    }

    async fn list_products(
        &self,
        request: Request<inventory_pb::ListProductsRequest>,
    ) -> Result<Response<inventory_pb::ListProductsResponse>, Status> {
        self.real.clone().list_products(request.into_inner()).await
    }

    async fn reserve_stock(
        &self,
        request: Request<inventory_pb::ReserveStockRequest>,
    ) -> Result<Response<inventory_pb::ReserveStockResponse>, Status> {
        self.real.clone().reserve_stock(request.into_inner()).await
    }

    async fn commit_reservation(
        &self,
        request: Request<inventory_pb::CommitReservationRequest>,
    ) -> Result<Response<inventory_pb::CommitReservationResponse>, Status> {
        match &self.commit {
            Commit::Fail => Err(Status::internal("injected failure")),
            Commit::Gated(gate) => {
                gate.acquire().await.expect("the gate stays open").forget();
                self.real
                    .clone()
                    .commit_reservation(request.into_inner())
                    .await
            }
        }
    }

    async fn release_reservation(
        &self,
        request: Request<inventory_pb::ReleaseReservationRequest>,
    ) -> Result<Response<inventory_pb::ReleaseReservationResponse>, Status> {
        self.real
            .clone()
            .release_reservation(request.into_inner())
            .await
    }

    async fn restock_products(
        &self,
        _: Request<Streaming<inventory_pb::RestockProductsRequest>>,
    ) -> Result<Response<inventory_pb::RestockProductsResponse>, Status> {
        Err(Status::unimplemented("not proxied"))
    }
}
