//! The whole system in one process: every service on its own port, wired to the
//! others, with the embedded defaults (in-memory stores, in-process event bus). With
//! `NATS_URL` set, orders and notifications use NATS JetStream instead of the bus.
//!
//! `cargo run -p stack` serves on the local ports (the same as running each binary);
//! [`Stack::bind`] with [`Ports::Ephemeral`] gives tests a private copy on free ports,
//! and [`testing::TestStack`] serves that copy in the background.

use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use shared::events::InProcessBus;
use shared::{Env, Server};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub mod testing;

/// Where the services listen.
#[derive(Clone, Debug)]
pub enum Ports {
    /// Each service on its local port (inventory 50052, …) on `host`.
    Local { host: String },
    /// Each service on a free port of 127.0.0.1, for tests.
    Ephemeral,
}

impl Ports {
    /// The local ports on `STACK_HOST` (default `127.0.0.1`; `0.0.0.0` to be reachable
    /// from other machines).
    pub fn local(env: &Env) -> Self {
        Self::Local {
            host: env.get("STACK_HOST").unwrap_or("127.0.0.1").to_owned(),
        }
    }

    fn listen_addr(&self, port: u16) -> String {
        match self {
            Self::Local { host } if host.contains(':') => format!("[{host}]:{port}"),
            Self::Local { host } => format!("{host}:{port}"),
            Self::Ephemeral => "127.0.0.1:0".to_owned(),
        }
    }
}

/// Changes to how the services of the stack reach each other, for tests that put
/// something in between. The default is the plain wiring of [`Stack::bind`].
#[derive(Clone, Debug, Default)]
pub struct Wiring {
    /// Where orders call inventory, instead of the stack's inventory: e.g. a proxy
    /// that forwards to [`Stack::addr`]`("inventory")` but delays or fails some calls.
    pub inventory_for_orders: Option<SocketAddr>,
}

/// Every service, bound and ready to serve.
#[derive(Debug)]
pub struct Stack {
    /// In the order they were bound: upstreams first.
    services: Vec<(&'static str, Bound)>,
    /// The NATS servers the events go through (`NATS_URL`); `None`: the in-process bus.
    nats: Option<shared::events::NatsUrls>,
}

/// A bound server of one of the two kinds.
#[derive(Debug)]
enum Bound {
    Grpc(Server),
    Http(gateway::Server),
}

impl Bound {
    fn local_addr(&self) -> SocketAddr {
        match self {
            Self::Grpc(server) => server.local_addr(),
            Self::Http(server) => server.local_addr(),
        }
    }

    async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), shared::Error> {
        match self {
            Self::Grpc(server) => server.serve(shutdown).await,
            Self::Http(server) => server.serve(shutdown).await,
        }
    }
}

impl Stack {
    /// Builds and binds every service. Each reads its settings from `env`, except
    /// `LISTEN_ADDR`, which `ports` decides, and the upstream addresses
    /// (`INVENTORY_ADDR`, …), which point at the services of this stack. Orders publish
    /// their events on an in-process bus, which its consumers subscribe to first, or on
    /// NATS JetStream when `env` sets `NATS_URL`.
    pub async fn bind(env: &Env, ports: &Ports) -> Result<Self, shared::Error> {
        Self::bind_with(env, ports, &Wiring::default()).await
    }

    /// [`Stack::bind`] with the changes of `wiring`.
    pub async fn bind_with(
        env: &Env,
        ports: &Ports,
        wiring: &Wiring,
    ) -> Result<Self, shared::Error> {
        let nats = shared::events::EventsConfig::from_env(env)?
            .nats
            .map(|nats| nats.urls);
        let listen = |port, admin_port| {
            env.clone()
                .with("LISTEN_ADDR", ports.listen_addr(port))
                .with("ADMIN_LISTEN_ADDR", ports.listen_addr(admin_port))
                // Served with TLS only: the plaintext health-only port.
                .with("HEALTH_LISTEN_ADDR", ports.listen_addr(admin_port + 100))
        };

        // Upstreams first: a service's upstream addresses are the bound ones.
        let config = inventory::Config::from_env(&listen(
            inventory::config::PORT,
            inventory::config::ADMIN_PORT,
        ))?;
        let inventory = inventory::build(config).await?;
        let config = payments::Config::from_env(&listen(
            payments::config::PORT,
            payments::config::ADMIN_PORT,
        ))?;
        let payments = payments::build(config).await?;
        // new-service: `make new-service` binds each new service above this line.

        // Consumers subscribe before orders can publish: the in-process bus keeps no
        // events for subscribers to come (and drops those that nobody subscribed to).
        // With NATS_URL, each service connects to JetStream instead, in `build`.
        let bus = InProcessBus::new();
        // remove-service: notifications {
        let config = notifications::Config::from_env(&listen(
            notifications::config::PORT,
            notifications::config::ADMIN_PORT,
        ))?;
        let notifications = notifications::build(config, &bus).await?;
        // remove-service: notifications }

        // The services' upstream URIs: https:// when they call each other over TLS.
        let uri = |addr| upstream(env, addr);
        let inventory_for_orders = wiring
            .inventory_for_orders
            .unwrap_or(inventory.local_addr());
        let orders_env = listen(orders::config::PORT, orders::config::ADMIN_PORT)
            .with("INVENTORY_ADDR", uri(inventory_for_orders))
            .with("PAYMENTS_ADDR", uri(payments.local_addr()));
        let orders = orders::build(orders::Config::from_env(&orders_env)?, &bus).await?;

        // The gateway calls every service it has routes to (`google.api.http`).
        let gateway_env = listen(gateway::config::PORT, gateway::config::ADMIN_PORT)
            .with("ORDERS_ADDR", uri(orders.local_addr()))
            .with("NOTIFICATIONS_ADDR", uri(notifications.local_addr())) // remove-service: notifications
            .with("INVENTORY_ADDR", uri(inventory.local_addr()));
        // new-service: and the gateway reaches it above this line.
        let gateway = gateway::build(gateway::Config::from_env(&gateway_env)?).await?;

        Ok(Self {
            services: vec![
                (inventory::NAME, Bound::Grpc(inventory)),
                (payments::NAME, Bound::Grpc(payments)),
                // new-service: and serves it above this line.
                (notifications::NAME, Bound::Grpc(notifications)),
                (orders::NAME, Bound::Grpc(orders)),
                (gateway::NAME, Bound::Http(gateway)),
            ],
            nats,
        })
    }

    /// The address of service `name` (e.g. `"inventory"`), if it is part of the stack.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.local_addr())
    }

    /// The address of the gateway, the stack's HTTP/JSON entry point (every other
    /// service speaks gRPC).
    pub fn http_addr(&self) -> SocketAddr {
        self.addr(gateway::NAME)
            .expect("the gateway is part of every stack")
    }

    /// What to print once the stack is up: each endpoint, then commands to try the
    /// order flow with curl (through the gateway) and grpcurl (on the services).
    pub fn banner(&self) -> String {
        let mut out = String::from("\nThe stack is up:\n");
        for (name, service) in &self.services {
            let scheme = match service {
                Bound::Grpc(_) => "grpc",
                Bound::Http(_) => "http",
            };
            let _ = writeln!(out, "  {name:<14} {scheme}://{}", service.local_addr());
        }
        let _ = match &self.nats {
            Some(urls) => writeln!(out, "  {:<14} NATS JetStream at {urls}", "events"),
            None => writeln!(
                out,
                "  {:<14} in-process bus (NATS_URL=nats://… for NATS JetStream)",
                "events"
            ),
        };
        let http = uri(self.http_addr());
        let grpc = |name| dial(self.addr(name).expect("every stack runs every service"));
        let (orders, inventory) = (grpc(orders::NAME), grpc(inventory::NAME));
        let _ = write!(
            out,
            r#"
Browse the catalog:
  curl -s {http}/v1/products/SKU-001

Read and try every HTTP route in a browser (the OpenAPI document: {http}/openapi.json):
  {http}/docs

Place an order (run it again: same Idempotency-Key, same order, one charge):
  curl -s -X POST {http}/v1/orders \
    -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-order-1' \
    -d '{{"customerId": "cus_demo", "items": [{{"sku": "SKU-001", "quantity": 2}}], "cardToken": "tok_visa"}}'

Read it back (ORDER_ID: the orderId it answered):
  curl -s {http}/v1/orders/ORDER_ID
"#
        );
        let _ = writeln!(out, "  curl -s {http}/v1/customers/cus_demo/notifications"); // remove-service: notifications
        let _ = write!(
            out,
            r#"
Watch an order over gRPC: its state, each change, and the end once it is final:
  grpcurl -plaintext -d '{{"order_id": "ORDER_ID"}}' {orders} orders.v1.OrderService/WatchOrder

Explore any service with reflection:
  grpcurl -plaintext {inventory} list
  grpcurl -plaintext -d '{{"sku": "SKU-001"}}' {inventory} inventory.v1.InventoryService/GetProduct

Ctrl-C stops everything gracefully.
"#
        );
        out
    }

    /// Serves every service until `shutdown` resolves, then shuts them all down
    /// gracefully (each drains its own calls). Returns the first error, if any.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), shared::Error> {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (_, service) in self.services {
            tasks.spawn(service.serve(token.clone().cancelled_owned()));
        }
        let mut result = Ok(());
        tokio::select! {
            () = shutdown => {}
            // A server that stops on its own (it failed) takes the stack down with it.
            Some(joined) = tasks.join_next() => result = joined.expect("server task panicked"),
        }
        token.cancel();
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.expect("server task panicked");
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

/// An address to connect to `addr`: the loopback address when it listens on all
/// interfaces (`0.0.0.0` and `::` are not addresses to dial).
fn dial(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// The URI of a bound service.
fn uri(addr: SocketAddr) -> String {
    format!("http://{}", dial(addr))
}

/// The upstream URI of a bound gRPC service, for `*_ADDR` variables: `https://` when
/// the services call each other over TLS (`GRPC_CLIENT_TLS_CA_FILE` is set).
fn upstream(env: &Env, addr: SocketAddr) -> String {
    let scheme = match env.get("GRPC_CLIENT_TLS_CA_FILE") {
        Some(_) => "https",
        None => "http",
    };
    format!("{scheme}://{}", dial(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_on_all_interfaces_are_dialled_on_loopback() {
        assert_eq!(
            uri("0.0.0.0:50052".parse().unwrap()),
            "http://127.0.0.1:50052"
        );
        assert_eq!(uri("[::]:50052".parse().unwrap()), "http://[::1]:50052");
        assert_eq!(
            uri("10.1.2.3:50052".parse().unwrap()),
            "http://10.1.2.3:50052"
        );
    }
}
