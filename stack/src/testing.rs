//! The whole system serving in the background, for tests that go through several
//! services.
//!
//! ```ignore
//! let stack = TestStack::start(&shared::Env::default(), &Wiring::default()).await;
//! let response = stack.http().get("/v1/products/SKU-001").await;
//! let mut orders = OrderServiceClient::new(stack.channel("orders"));
//! // … calls …
//! stack.stop().await?;
//! ```

use std::net::SocketAddr;

use gateway::testing::HttpClient;
use shared::client::{self, Channel};
use shared::{ClientConfig, Env};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Ports, Stack, Wiring};

/// A [`Stack`] on free ports of 127.0.0.1, serving in a background task.
#[derive(Debug)]
pub struct TestStack {
    addrs: Vec<(&'static str, SocketAddr)>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), shared::Error>>,
}

impl TestStack {
    /// Binds every service with `env` and `wiring`, then serves them. Bound first,
    /// spawned second: every address accepts connections before this returns.
    pub async fn start(env: &Env, wiring: &Wiring) -> Self {
        shared::testing::init_logs();
        let stack = Stack::bind_with(env, &Ports::Ephemeral, wiring)
            .await
            .expect("the stack binds on free ports");
        let addrs = stack
            .services
            .iter()
            .map(|(name, s)| (*name, s.local_addr()))
            .collect();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(stack.serve(shutdown.clone().cancelled_owned()));
        Self {
            addrs,
            shutdown,
            task,
        }
    }

    /// Every service the stack runs, by name, with its address (the gateway's is HTTP).
    pub fn services(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> + '_ {
        self.addrs.iter().copied()
    }

    /// The address of service `name`; panics if the stack does not run it.
    pub fn addr(&self, name: &str) -> SocketAddr {
        let found = self.addrs.iter().find(|(n, _)| *n == name);
        found
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("the stack runs no {name:?}"))
    }

    /// A channel to gRPC service `name`, for its generated client.
    pub fn channel(&self, name: &str) -> Channel {
        client::channel(
            self.addr(name),
            &ClientConfig::from_env(&Env::default()).expect("the defaults are valid"),
            contracts::RETRY_SAFE_METHODS,
        )
    }

    /// An HTTP client of the gateway.
    pub fn http(&self) -> HttpClient {
        HttpClient::new(self.addr(gateway::NAME))
    }

    /// Shuts every service down gracefully and waits until all have stopped.
    pub async fn stop(self) -> Result<(), shared::Error> {
        self.shutdown.cancel();
        self.task.await.expect("the stack task panicked")
    }
}
