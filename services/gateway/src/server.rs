//! The HTTP server: binds, then serves the router with the life cycle every server of
//! the workspace shares (`shared::lifecycle`: not ready, delay, bounded drain, admin
//! port beside it).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;

use axum::Router;
use axum::serve::ListenerExt;
use shared::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A bound HTTP server, ready to [`serve`](Server::serve).
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    config: ServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
    router: Router,
    draining: CancellationToken,
}

impl Server {
    /// Binds `config.listen_addr` for `router`. `draining` is cancelled when shutdown
    /// begins, for the readiness route to turn 503.
    pub(crate) async fn bind(
        name: &'static str,
        config: &ServerConfig,
        router: Router,
        draining: CancellationToken,
    ) -> Result<Self, shared::Error> {
        let (listener, local_addr) = bind(config.listen_addr).await?;
        let (admin_listener, admin_addr) = bind(config.admin_addr).await?;
        Ok(Self {
            name,
            config: config.clone(),
            listener,
            local_addr,
            admin_listener,
            admin_addr,
            router,
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
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), shared::Error> {
        let Self {
            name,
            config,
            listener,
            local_addr: addr,
            admin_listener,
            admin_addr,
            router,
            draining,
        } = self;
        // Small JSON answers: send them now rather than wait to fill a TCP segment.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tracing::info!(service = name, %addr, %admin_addr, "serving HTTP");
        let hooks = shared::lifecycle::Hooks {
            // `/readyz` turns 503.
            not_ready: || draining.cancel(),
            draining: || {},
        };
        let serve = |drain: oneshot::Receiver<()>| {
            // The peer's address, for the rate limit of clients without a token.
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, service)
                .with_graceful_shutdown(async {
                    let _ = drain.await;
                })
                .into_future()
        };
        shared::lifecycle::run(name, &config, admin_listener, shutdown, serve, hooks)
            .await
            // axum retries failed accepts itself and documents that serving never
            // ends with an error; should one come anyway, it is the listening socket's.
            .map_err(|source| shared::Error::Bind { addr, source })
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), shared::Error> {
    let bind_error = |source| shared::Error::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}
