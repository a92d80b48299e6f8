//! The HTTP server: binds, then serves the router with the life cycle every server of
//! the workspace shares (`shared::lifecycle`: not ready, delay, bounded drain, admin
//! port beside it).
//!
//! Connections are served by hyper with a timer, so that no client holds one for free
//! (`connections.rs`): a request head must arrive within `GATEWAY_HEADER_READ_TIMEOUT`,
//! a connection silent for `GATEWAY_IDLE_TIMEOUT` is closed, and past
//! `GATEWAY_MAX_CONNECTIONS` open connections a new one is closed at once. A request's
//! body and answer are bounded by `GATEWAY_REQUEST_TIMEOUT` (`limits.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use shared::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::connections::{ConnectionLimits, Connections};
use crate::upstream::Readiness;

/// How often the upstreams' health is asked for `/readyz`: a probe's answer is at
/// most this old, and a flood of probes costs the upstreams nothing more.
const READINESS_PERIOD: Duration = Duration::from_secs(1);

/// A bound HTTP server, ready to [`serve`](Server::serve).
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    config: ServerConfig,
    limits: ConnectionLimits,
    listener: TcpListener,
    local_addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
    router: Router,
    readiness: Readiness,
    draining: CancellationToken,
}

impl Server {
    /// Binds `config.listen_addr` for `router`. `draining` is cancelled when shutdown
    /// begins, for the readiness route to turn 503; `readiness` is refreshed while the
    /// server serves.
    pub(crate) async fn bind(
        name: &'static str,
        config: &ServerConfig,
        limits: ConnectionLimits,
        router: Router,
        readiness: Readiness,
        draining: CancellationToken,
    ) -> Result<Self, shared::Error> {
        let (listener, local_addr) = bind(config.listen_addr).await?;
        let (admin_listener, admin_addr) = bind(config.admin_addr).await?;
        Ok(Self {
            name,
            config: config.clone(),
            limits,
            listener,
            local_addr,
            admin_listener,
            admin_addr,
            router,
            readiness,
            draining,
        })
    }

    /// The bound address: the actual port when the configuration asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound address of the admin server (`/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully:
    /// 1. `/readyz` answers 503 (load balancers stop sending requests);
    /// 2. after `SHUTDOWN_DELAY`, the server stops accepting connections and closes
    ///    idle ones;
    /// 3. in-flight requests finish, within `SHUTDOWN_GRACE_PERIOD`; after it, this
    ///    returns with a warning and the requests still running end with the process.
    ///
    /// The upstreams' health for `/readyz` is asked every second meanwhile, by a task
    /// that ends with the server.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), shared::Error> {
        let Self {
            name,
            config,
            limits,
            listener,
            local_addr: addr,
            admin_listener,
            admin_addr,
            router,
            readiness,
            draining,
        } = self;
        tracing::info!(
            service = name,
            %addr,
            %admin_addr,
            runtime = shared::runtime::flavor(),
            "serving HTTP"
        );
        let hooks = shared::lifecycle::Hooks {
            // `/readyz` turns 503.
            not_ready: || draining.cancel(),
            draining: || {},
        };
        let serve = |drain: oneshot::Receiver<()>| async move {
            let connections = Connections::new(limits, router);
            let refresh = readiness.refresh_every(READINESS_PERIOD);
            tokio::select! {
                result = connections.serve(listener, async { let _ = drain.await; }) => result,
                never = refresh => match never {},
            }
        };
        shared::lifecycle::run(name, &config, admin_listener, shutdown, serve, hooks)
            .await
            // Failed accepts are retried (`connections.rs`); should serving end with an
            // error anyway, it is the listening socket's.
            .map_err(|source| shared::Error::Bind { addr, source })
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), shared::Error> {
    let bind_error = |source| shared::Error::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}
