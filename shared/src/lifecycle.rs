//! The life of every server in the workspace, gRPC or HTTP, so that both kinds stop the
//! same way: serve until shutdown, stop being ready, wait `SHUTDOWN_DELAY`, stop
//! accepting and drain within `SHUTDOWN_GRACE_PERIOD`. The admin server (`/metrics`)
//! runs beside it to the end, so the last scrape sees the drain.

use std::future::Future;
use std::pin::pin;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::{ServerConfig, admin};

/// What a server does when its shutdown begins.
#[derive(Debug)]
pub struct Hooks<R, D> {
    /// Stop being ready (readiness NOT_SERVING, `/readyz` 503): load balancers and
    /// probes stop sending traffic, which still gets served.
    pub not_ready: R,
    /// The drain starts: end what would hold it open (health `Watch` streams,
    /// application streams).
    pub draining: D,
}

/// Serves what `serve` returns until `shutdown` resolves, then runs the shutdown
/// sequence. `serve` gets the drain signal: when it resolves, the server must stop
/// accepting and finish its in-flight requests. Returns the server's own error if it
/// stops by itself; a drain cut short by the grace period is a warning, not an error.
pub async fn run<S, E, R, D>(
    name: &'static str,
    config: &ServerConfig,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    serve: impl FnOnce(oneshot::Receiver<()>) -> S,
    hooks: Hooks<R, D>,
) -> Result<(), E>
where
    S: Future<Output = Result<(), E>>,
    R: FnOnce(),
    D: FnOnce(),
{
    let admin_stop = CancellationToken::new();
    let _stop_admin = admin_stop.clone().drop_guard();
    tokio::spawn(async move {
        let admin_addr = admin_listener.local_addr().ok();
        if let Err(error) = admin::serve(admin_listener, admin_stop.cancelled_owned()).await {
            tracing::error!(%error, ?admin_addr, "admin server failed");
        }
    });

    let (drain_tx, drain_rx) = oneshot::channel();
    let mut serving = pin!(serve(drain_rx));
    tokio::select! {
        biased;
        () = shutdown => {}
        result = &mut serving => return result,
    }
    tracing::info!(service = name, "shutting down: no longer ready");
    (hooks.not_ready)();
    if !config.shutdown_delay.is_zero() {
        tokio::select! {
            result = &mut serving => return result,
            () = tokio::time::sleep(config.shutdown_delay) => {}
        }
    }

    tracing::info!(service = name, "draining in-flight requests");
    (hooks.draining)();
    let _ = drain_tx.send(());
    match tokio::time::timeout(config.shutdown_grace_period, serving).await {
        Ok(result) => {
            tracing::info!(service = name, "stopped");
            result
        }
        Err(_) => {
            tracing::warn!(
                service = name,
                grace_period = ?config.shutdown_grace_period,
                "drain timed out: requests still running end with the process"
            );
            Ok(())
        }
    }
}
