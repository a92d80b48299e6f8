//! What bounds every API request at the edge, before admission (`auth/admission.rs`), so that a
//! flood or a slow upstream costs the gateway a bounded amount:
//!
//! - **Load shedding**: past `GATEWAY_CONCURRENCY_LIMIT` requests in flight, the next
//!   one is answered 503 with `Retry-After: 1` at once, rather than queued behind the
//!   others. The probes (`/healthz`, `/readyz`) are never refused.
//! - **A deadline per request**: `GATEWAY_REQUEST_TIMEOUT` bounds each request up to
//!   the head of its answer, reading its body included; past it, 504, or 408 when the
//!   client had not finished sending its body (its own slowness). The gRPC calls
//!   the handler makes get what is left as their deadline (`shared::deadline`), so
//!   none outlives the request.
//! - **Panics**: a handler that panics gets 500, logged; the connection and its other
//!   requests live on (`shared::panic`).
//!
//! A streamed answer (`StreamNotifications`) counts, and is bounded, until its head is
//! sent: the stream itself runs as long as the client reads it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use shared::metrics::IntCounterVec;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::ApiError;

/// `gateway_requests_refused_total{reason}`: API requests the limits answered for.
static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    shared::metrics::counter(
        "gateway_requests_refused_total",
        "API requests the gateway answered without its handler finishing, by reason \
         (overloaded: 503, timeout: 504, slow_body: 408, panic: 500).",
        &["reason"],
    )
});

/// The limits of every API request; see the module documentation.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl Limits {
    pub(crate) fn new(concurrency_limit: usize, timeout: Duration) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(concurrency_limit)),
            timeout,
        }
    }

    /// `handle(request)` within the limits, on every route but the health probes
    /// (`http.rs`).
    pub(crate) async fn run<F, Fut>(&self, request: Request, handle: F) -> Response
    where
        F: FnOnce(Request) -> Fut,
        Fut: Future<Output = Response>,
    {
        let Ok(_in_flight) = self.in_flight.try_acquire() else {
            REFUSED.with_label_values(&["overloaded"]).inc();
            return ApiError::overloaded().into_response();
        };
        let deadline = Instant::now() + self.timeout;
        // A request without a body (most GETs) has none to wait for.
        let (request, awaiting_body) = if request.body().is_end_stream() {
            (request, None)
        } else {
            let (request, awaiting) = watch_body(request);
            (request, Some(awaiting))
        };
        let handled = shared::deadline::scope(
            deadline,
            shared::panic::catch_unwind(async move { handle(request).await }),
        );
        match tokio::time::timeout_at(deadline, handled).await {
            Ok(Ok(response)) => response,
            Ok(Err(panic)) => {
                REFUSED.with_label_values(&["panic"]).inc();
                ApiError::internal(&format!("handler {panic}")).into_response()
            }
            Err(_) if awaiting_body.is_some_and(|waiting| waiting.load(Ordering::Relaxed)) => {
                REFUSED.with_label_values(&["slow_body"]).inc();
                ApiError::body_timed_out().into_response()
            }
            Err(_) => {
                REFUSED.with_label_values(&["timeout"]).inc();
                tracing::warn!(timeout = ?self.timeout, "request over GATEWAY_REQUEST_TIMEOUT");
                ApiError::timed_out().into_response()
            }
        }
    }
}

/// `request` with a body that tells, through the flag returned, whether the handler
/// is waiting for the client's next bytes of it.
fn watch_body(request: Request) -> (Request, Arc<AtomicBool>) {
    let (parts, body) = request.into_parts();
    let waiting = Arc::new(AtomicBool::new(false));
    let body = Body::new(WatchedBody {
        inner: body,
        waiting: Arc::clone(&waiting),
    });
    (Request::from_parts(parts, body), waiting)
}

struct WatchedBody {
    inner: Body,
    waiting: Arc<AtomicBool>,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.waiting.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
