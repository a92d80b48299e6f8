//! The HTTP server: binds, serves a router until shutdown, then drains within a grace
//! period, with the life cycle and settings of the gRPC servers in `shared::server`.
//! Nothing here is specific to the gateway: it moves to `shared` when a second HTTP
//! server appears.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::pin;

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
        // The admin server outlives the drain, so the last scrape sees it.
        let admin_stop = CancellationToken::new();
        let _stop_admin = admin_stop.clone().drop_guard();
        tokio::spawn(async move {
            if let Err(error) =
                shared::admin::serve(admin_listener, admin_stop.cancelled_owned()).await
            {
                tracing::error!(%error, %admin_addr, "admin server failed");
            }
        });
        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        // Small JSON answers: send them now rather than wait to fill a TCP segment.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serving = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = drain_rx.await;
            })
            .into_future();
        let mut serving = pin!(serving);
        // axum retries failed accepts itself and documents that serving never ends with
        // an error; should one come anyway, it is the listening socket's.
        let serve_error = |source| shared::Error::Bind { addr, source };

        tracing::info!(service = name, %addr, %admin_addr, "serving HTTP");
        tokio::select! {
            // `shutdown` first: polling it is what installs the signal handlers of
            // `shared::shutdown::signal`, and they must be in place before the first
            // request is answered, or an early SIGTERM kills the process undrained.
            biased;
            () = shutdown => {}
            result = &mut serving => return result.map_err(serve_error),
        }
        tracing::info!(service = name, "shutting down: /readyz answers 503");
        draining.cancel();
        if !config.shutdown_delay.is_zero() {
            tokio::select! {
                result = &mut serving => return result.map_err(serve_error),
                () = tokio::time::sleep(config.shutdown_delay) => {}
            }
        }

        tracing::info!(service = name, "draining in-flight requests");
        let _ = drain_tx.send(());
        match tokio::time::timeout(config.shutdown_grace_period, serving).await {
            Ok(result) => {
                tracing::info!(service = name, "stopped");
                result.map_err(serve_error)
            }
            Err(_) => {
                tracing::warn!(
                    service = name,
                    grace_period = ?config.shutdown_grace_period,
                    "drain timed out: requests still running are left to end with the process"
                );
                Ok(())
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), shared::Error> {
    let bind_error = |source| shared::Error::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}
