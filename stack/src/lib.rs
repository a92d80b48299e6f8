//! The whole system in one process: every service on its own port, wired to the
//! others, with the embedded defaults (in-memory stores, in-process event bus).
//!
//! `cargo run -p stack` serves on the local ports (the same as running each binary);
//! [`Stack::bind`] with [`Ports::Ephemeral`] gives tests a private copy on free ports.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;

use shared::{Env, Server};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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

/// Every service, bound and ready to serve.
#[derive(Debug)]
pub struct Stack {
    servers: Vec<(&'static str, Server)>,
}

impl Stack {
    /// Builds and binds every service. Each reads its settings from `env`, except
    /// `LISTEN_ADDR`, which `ports` decides, and the upstream addresses, which point
    /// at the other services of this stack.
    pub async fn bind(env: &Env, ports: &Ports) -> Result<Self, shared::Error> {
        let service_env = |port| env.clone().with("LISTEN_ADDR", ports.listen_addr(port));

        let inventory =
            inventory::build(inventory::Config::from_env(&service_env(inventory::config::PORT))?).await?;
        let payments = payments::build(payments::Config::from_env(&service_env(payments::config::PORT))?).await?;

        Ok(Self {
            servers: vec![(inventory::NAME, inventory), (payments::NAME, payments)],
        })
    }

    /// The address of service `name` (e.g. `"inventory"`), if it is part of the stack.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.servers.iter().find(|(n, _)| *n == name).map(|(_, s)| s.local_addr())
    }

    /// What to print once the stack is up: each endpoint and commands to try.
    pub fn banner(&self) -> String {
        let mut out = String::from("\nThe stack is up:\n");
        for (name, server) in &self.servers {
            let _ = writeln!(out, "  {name:<14} grpc://{}", server.local_addr());
        }
        let inventory = self.addr(inventory::NAME).map_or(0, |a| a.port());
        let _ = write!(
            out,
            "\nTry:\n  grpcurl -plaintext localhost:{inventory} list\n  \
             grpcurl -plaintext -d '{{\"sku\": \"SKU-001\"}}' localhost:{inventory} \
             inventory.v1.InventoryService/GetProduct\n\nCtrl-C stops everything gracefully.\n"
        );
        out
    }

    /// Serves every service until `shutdown` resolves, then shuts them all down
    /// gracefully (each drains its own calls). Returns the first error, if any.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), shared::Error> {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (_, server) in self.servers {
            tasks.spawn(server.serve(token.clone().cancelled_owned()));
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
