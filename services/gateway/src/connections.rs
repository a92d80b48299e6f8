//! The gateway's connections: accepted, served by hyper with a timer, and cut off when
//! a client holds one without using it, so that slow or idle clients cost a bounded
//! number of sockets and tasks:
//!
//! - **Header read timeout** (`GATEWAY_HEADER_READ_TIMEOUT`): an HTTP/1.1 request head
//!   must be complete within it, counted from its first byte, or, on a kept-alive
//!   connection, from the end of the previous answer. A client that sends a head a
//!   byte at a time (slowloris) is closed.
//! - **Idle timeout** (`GATEWAY_IDLE_TIMEOUT`): a connection on which nothing was read
//!   or written for that long is closed gracefully: a request in flight still gets
//!   its answer. It is what bounds a silent HTTP/2 connection.
//! - **Connection cap** (`GATEWAY_MAX_CONNECTIONS`): one more connection than that is
//!   closed as soon as it is accepted, before a byte is read.
//!
//! `gateway_connections_open` counts the connections being served and
//! `gateway_connections_cut_total{reason}` those the gateway cut (`over_limit`,
//! `header_read_timeout`, `idle_timeout`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use shared::metrics::{IntCounterVec, IntGaugeVec};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service as _;

/// `gateway_connections_open`: connections being served.
static OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    shared::metrics::gauge(
        "gateway_connections_open",
        "HTTP connections the gateway is serving.",
        &[],
    )
});

/// `gateway_connections_cut_total{reason}`: connections the gateway closed itself.
static CUT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    shared::metrics::counter(
        "gateway_connections_cut_total",
        "HTTP connections the gateway closed itself, by reason (over_limit: past \
         GATEWAY_MAX_CONNECTIONS; header_read_timeout; idle_timeout).",
        &["reason"],
    )
});

/// What bounds each connection; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
}

/// The connections of one server.
pub(crate) struct Connections {
    limits: ConnectionLimits,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// One permit per connection being served.
    open: Arc<Semaphore>,
}

impl Connections {
    pub(crate) fn new(limits: ConnectionLimits, router: Router) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        // Touch the metrics so that `/metrics` lists them from the start (at 0; never
        // set: another server of the same process may count already).
        OPEN.with_label_values(&[] as &[&str]);
        for reason in ["over_limit", "header_read_timeout", "idle_timeout"] {
            CUT.with_label_values(&[reason]);
        }
        Self {
            limits,
            router,
            builder: Arc::new(builder),
            open: Arc::new(Semaphore::new(limits.max_connections as usize)),
        }
    }

    /// Accepts and serves connections until `drain` resolves; then stops accepting,
    /// closes idle connections, and returns once every connection's requests are
    /// answered.
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        drain: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let draining = CancellationToken::new();
        let mut drain = pin!(drain);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut drain => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        accept_failed(&error).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() else {
                CUT.with_label_values(&["over_limit"]).inc();
                tracing::debug!(%peer, "connection over GATEWAY_MAX_CONNECTIONS closed");
                continue;
            };
            // Small JSON answers: send them now rather than wait to fill a TCP segment.
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve_connection(
                Arc::clone(&self.builder),
                tcp,
                peer,
                self.router.clone(),
                self.limits.idle_timeout,
                draining.clone(),
                permit,
            ));
        }
        drop(listener);
        draining.cancel();
        // Every connection holds a permit until it ends.
        let _all = self.open.acquire_many(self.limits.max_connections).await;
        Ok(())
    }
}

/// A failed accept: the connection's own trouble (it was reset before it was
/// accepted) is retried at once; anything else (no file descriptors left) after a
/// second, as axum does, rather than spinning.
async fn accept_failed(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    idle_timeout: Duration,
    draining: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let open = OPEN.with_label_values(&[] as &[&str]);
    open.inc();
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        io: tcp,
        activity: Arc::clone(&activity),
    });
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        // The peer's address, for the rate limit of clients without a token.
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(request)
    });
    let mut connection = pin!(builder.serve_connection_with_upgrades(io, service));
    let idle = tokio::time::sleep(idle_timeout);
    let mut idle = pin!(idle);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = draining.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = idle.as_mut(), if !closing => {
                let silent = activity.silent_for();
                if silent >= idle_timeout {
                    CUT.with_label_values(&["idle_timeout"]).inc();
                    tracing::debug!(%peer, ?silent, "idle connection closed");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                } else {
                    idle.as_mut().reset(Instant::now() + (idle_timeout - silent));
                }
            }
        }
    };
    open.dec();
    if let Err(error) = result {
        let timed_out = error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timed_out {
            CUT.with_label_values(&["header_read_timeout"]).inc();
            tracing::debug!(%peer, "request head not read in time: connection closed");
        } else {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

/// When a connection last moved a byte, as milliseconds since it was accepted.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream that notes in [`Activity`] each read or write that moved bytes.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
