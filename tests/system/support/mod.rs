//! What the cross-service tests share: the running system with a client of each
//! service, and a proxy that puts faults between orders and inventory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use contracts::inventory::v1::{self as inventory_pb, GetProductRequest};
use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::{ListOrdersRequest, Order, OrderItem, PlaceOrderRequest};
use contracts::payments::v1::payment_service_client::PaymentServiceClient;
use contracts::payments::v1::{ListPaymentsRequest, Payment};
use gateway::testing::HttpClient;
use http::StatusCode;
use shared::client::Channel;
use shared::testing::{NatsServer, TestServer, fresh_database};
use stack::Wiring;
use stack::testing::TestStack;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// A `PlaceOrder` of one `sku` for `customer_id`, paid with the card that always goes
/// through.
pub(crate) fn place_order(request_id: &str, customer_id: &str, sku: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        request_id: request_id.into(),
        customer_id: customer_id.into(),
        items: vec![OrderItem {
            sku: sku.into(),
            quantity: 1,
            ..Default::default()
        }],
        card_token: "tok_visa".into(),
    }
}

/// What the services keep their state and pass their events in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The defaults: in-memory stores, the in-process bus.
    Embedded,
    /// NATS JetStream (a private `nats-server`) and PostgreSQL (a fresh database).
    Durable,
}

/// Defines each listed test, an `async fn(Backend)` of the file, twice: as
/// `embedded::<name>` on the defaults and as `durable::<name>` on NATS and PostgreSQL,
/// so the same flow holds on both.
///
/// ```ignore
/// on_both_backends! {
///     #[tokio::test] a_confirmed_order_sells_the_stock,
/// }
/// ```
macro_rules! on_both_backends {
    ($(#[$attribute:meta] $test:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[$attribute]
                async fn $test() {
                    super::$test($crate::support::Backend::Embedded).await
                }
            )+
        }
        mod durable {
            $(
                #[$attribute]
                async fn $test() {
                    super::$test($crate::support::Backend::Durable).await
                }
            )+
        }
    };
}
pub(crate) use on_both_backends;

/// The whole system on free ports, with a client of each service that the order flow
/// goes through (`stack.channel(name)` for others).
#[derive(Debug)]
pub(crate) struct System {
    pub(crate) stack: TestStack,
    pub(crate) http: HttpClient,
    pub(crate) inventory: InventoryServiceClient<Channel>,
    pub(crate) payments: PaymentServiceClient<Channel>,
    pub(crate) orders: OrderServiceClient<Channel>,
    /// The broker of a [`Backend::Durable`] system, stopped with it.
    #[allow(dead_code, reason = "held for its drop, which stops the broker")]
    nats: Option<NatsServer>,
}

/// One sku's stock buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stock {
    pub(crate) available: i64,
    pub(crate) reserved: i64,
    pub(crate) sold: i64,
}

impl System {
    pub(crate) async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &shared::Env::default(), &Wiring::default()).await
    }

    pub(crate) async fn start_with(backend: Backend, env: &shared::Env, wiring: &Wiring) -> Self {
        let (env, nats) = match backend {
            Backend::Embedded => (env.clone(), None),
            Backend::Durable => {
                let nats = NatsServer::start().await;
                let env = env
                    .clone()
                    .with("NATS_URL", nats.url())
                    .with("DATABASE_URL", fresh_database().await);
                (env, Some(nats))
            }
        };
        let stack = TestStack::start(&env, wiring).await;
        Self {
            http: stack.http(),
            inventory: InventoryServiceClient::new(stack.channel("inventory")),
            payments: PaymentServiceClient::new(stack.channel("payments")),
            orders: OrderServiceClient::new(stack.channel("orders")),
            stack,
            nats,
        }
    }

    /// The system with orders calling inventory through `proxy`, which is then pointed
    /// at the system's inventory.
    pub(crate) async fn start_behind(backend: Backend, proxy: &InventoryProxy) -> Self {
        let wiring = Wiring {
            inventory_for_orders: Some(proxy.addr()),
        };
        let system = Self::start_with(backend, &shared::Env::default(), &wiring).await;
        proxy.forward_to(system.stack.channel("inventory"));
        system
    }

    /// Places an order through the gateway; returns the created order.
    pub(crate) async fn place(
        &self,
        idempotency_key: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        let headers = [("Idempotency-Key", idempotency_key)];
        let response = self.http.post_json("/v1/orders", &headers, body).await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        response.json()
    }

    /// Every order of a customer, newest first.
    pub(crate) async fn orders_of(&self, customer_id: &str) -> Vec<Order> {
        let mut orders = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListOrdersRequest {
                customer_id: customer_id.into(),
                page_size: 100,
                page_token,
            };
            let page = self
                .orders
                .clone()
                .list_orders(request)
                .await
                .unwrap()
                .into_inner();
            orders.extend(page.orders);
            if page.next_page_token.is_empty() {
                return orders;
            }
            page_token = page.next_page_token;
        }
    }

    pub(crate) async fn stock(&self, sku: &str) -> Stock {
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
        Stock {
            available: product.available,
            reserved: product.reserved,
            sold: product.sold,
        }
    }

    /// Every payment of `order_id` (every payment when empty), oldest first.
    pub(crate) async fn payments_of(&self, order_id: &str) -> Vec<Payment> {
        let mut payments = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListPaymentsRequest {
                order_id: order_id.into(),
                page_size: 100,
                page_token,
            };
            let page = self
                .payments
                .clone()
                .list_payments(request)
                .await
                .unwrap()
                .into_inner();
            payments.extend(page.payments);
            if page.next_page_token.is_empty() {
                return payments;
            }
            page_token = page.next_page_token;
        }
    }
}

/// Stands between orders and inventory: forwards every call, but can hold the
/// `ReserveStock` calls (keeping orders PENDING until the test lets them through) and
/// fail the `CommitReservation` calls (a failure after the charge). Test code only.
pub(crate) struct InventoryProxy {
    control: Arc<Control>,
    server: TestServer,
}

struct Control {
    inventory: OnceLock<InventoryServiceClient<Channel>>,
    fail_commits: AtomicBool,
    /// Whether `ReserveStock` calls go through.
    reservations_open: watch::Sender<bool>,
    /// `ReserveStock` calls waiting to go through.
    reservations_held: watch::Sender<usize>,
}

impl InventoryProxy {
    /// A proxy serving on a free port, forwarding nowhere until [`Self::forward_to`].
    pub(crate) async fn start() -> Self {
        let control = Arc::new(Control {
            inventory: OnceLock::new(),
            fail_commits: AtomicBool::new(false),
            reservations_open: watch::Sender::new(true),
            reservations_held: watch::Sender::new(0),
        });
        let config = shared::ServerConfig::from_env(&shared::testing::env([]), 0, 0)
            .expect("valid test config");
        let server = shared::Server::builder("inventory-proxy", &config)
            .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET)
            .add_service(InventoryServiceServer::new(Proxy {
                control: control.clone(),
            }))
            .bind()
            .await
            .expect("the proxy binds");
        Self {
            control,
            server: TestServer::start(server),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub(crate) fn forward_to(&self, inventory: Channel) {
        let set = self
            .control
            .inventory
            .set(InventoryServiceClient::new(inventory));
        set.unwrap_or_else(|_| panic!("the proxy forwards to one inventory"));
    }

    /// From now on, `CommitReservation` fails with INTERNAL without reaching inventory.
    pub(crate) fn fail_commits(&self) {
        self.control.fail_commits.store(true, Ordering::SeqCst);
    }

    /// From now on, `ReserveStock` calls wait for [`Self::open_reservations`].
    pub(crate) fn hold_reservations(&self) {
        self.control.reservations_open.send_replace(false);
    }

    pub(crate) fn open_reservations(&self) {
        self.control.reservations_open.send_replace(true);
    }

    /// Waits until `n` `ReserveStock` calls are being held.
    pub(crate) async fn reservations_held(&self, n: usize) {
        let mut held = self.control.reservations_held.subscribe();
        held.wait_for(|held| *held >= n)
            .await
            .expect("the proxy is alive");
    }
}

struct Proxy {
    control: Arc<Control>,
}

impl Proxy {
    fn inventory(&self) -> Result<InventoryServiceClient<Channel>, Status> {
        let inventory = self.control.inventory.get().cloned();
        inventory.ok_or_else(|| Status::unavailable("the proxy does not forward yet"))
    }
}

#[tonic::async_trait]
impl InventoryService for Proxy {
    async fn get_product(
        &self,
        request: Request<inventory_pb::GetProductRequest>,
    ) -> Result<Response<inventory_pb::GetProductResponse>, Status> {
        self.inventory()?.get_product(request.into_inner()).await
    }

    async fn list_products(
        &self,
        request: Request<inventory_pb::ListProductsRequest>,
    ) -> Result<Response<inventory_pb::ListProductsResponse>, Status> {
        self.inventory()?.list_products(request.into_inner()).await
    }

    async fn reserve_stock(
        &self,
        request: Request<inventory_pb::ReserveStockRequest>,
    ) -> Result<Response<inventory_pb::ReserveStockResponse>, Status> {
        let mut open = self.control.reservations_open.subscribe();
        if !*open.borrow_and_update() {
            self.control
                .reservations_held
                .send_modify(|held| *held += 1);
            let opened = open.wait_for(|open| *open).await.map(|_| ());
            self.control
                .reservations_held
                .send_modify(|held| *held -= 1);
            opened.map_err(|_| Status::unavailable("the proxy is gone"))?;
        }
        self.inventory()?.reserve_stock(request.into_inner()).await
    }

    async fn commit_reservation(
        &self,
        request: Request<inventory_pb::CommitReservationRequest>,
    ) -> Result<Response<inventory_pb::CommitReservationResponse>, Status> {
        if self.control.fail_commits.load(Ordering::SeqCst) {
            return Err(Status::internal("injected fault: CommitReservation fails"));
        }
        self.inventory()?
            .commit_reservation(request.into_inner())
            .await
    }

    async fn release_reservation(
        &self,
        request: Request<inventory_pb::ReleaseReservationRequest>,
    ) -> Result<Response<inventory_pb::ReleaseReservationResponse>, Status> {
        self.inventory()?
            .release_reservation(request.into_inner())
            .await
    }

    async fn restock_products(
        &self,
        _request: Request<Streaming<inventory_pb::RestockProductsRequest>>,
    ) -> Result<Response<inventory_pb::RestockProductsResponse>, Status> {
        Err(Status::unimplemented("orders never restocks"))
    }
}
