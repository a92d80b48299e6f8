//! The admin HTTP server every service runs next to its main port: `/metrics` in the
//! Prometheus text format, for scraping. It stays up while the service drains, so the
//! last scrape sees the drain.

use std::future::Future;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics;

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                metrics::render(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
