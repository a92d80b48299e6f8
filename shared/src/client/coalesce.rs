//! A call's request in one write to the socket instead of two.
//!
//! hyper's HTTP/2 client queues a request's HEADERS frame when the call is made, but
//! its body cannot be queued yet: h2 gives a new stream no room to send until the
//! connection's task opens it, so hyper leaves the body to a task of its own that waits
//! for that room. The connection's task opens the stream, which wakes the body's task,
//! and writes the HEADERS alone; the DATA follows in a second write once the body's
//! task has run: two `writev`s per call (seen with `strace` on the gateway, and the same
//! with a bare tonic `Channel`). The server then wakes twice for one call, reads a
//! request it cannot serve yet, and sleeps again; on a virtual machine each wake-up
//! costs more than the call's own work.
//!
//! [`Coalescing`] lets the first write of each batch wait one turn of the scheduler:
//! the connection's task wakes itself, which puts it behind the tasks already due (on
//! both of tokio's schedulers: a task that wakes itself while it runs is queued as one
//! that yields), the body's task queues the DATA, and the next attempt writes everything
//! queued by then, the HEADERS and DATA of the call (and of the other calls made in
//! that turn) together. The wait is a turn of the scheduler, not a timer: nothing is
//! held back past work that is already due. It measured no cost in instructions
//! (callgrind, gateway GetProduct under load: 170.4k per request with two writes,
//! 169.8k–170.2k with one). On the multi-threaded scheduler another worker may take one
//! of the two tasks meanwhile, and the two writes can still happen: gathering is
//! certain on one thread (one CPU, as in the pods of `k8s/`) and likely on more.
//!
//! Over TLS the writes reach the connection from rustls' own flush, after the wait, so
//! there is nothing to gather: `https://` connections are left as they are.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::HttpConnector;

/// A connection whose writes are gathered per turn of the scheduler (module doc).
#[derive(Debug)]
pub(crate) struct Coalescing<Io> {
    io: Io,
    /// Whether writes are gathered at all (not under TLS).
    gather: bool,
    /// This batch's first write has already waited its turn: the next ones go through
    /// until the batch is flushed.
    waited: bool,
}

impl<Io> Coalescing<Io> {
    pub(crate) fn new(io: Io) -> Self {
        Self {
            io,
            gather: true,
            waited: false,
        }
    }

    /// Writes go through as they come.
    fn as_is(io: Io) -> Self {
        Self {
            io,
            gather: false,
            waited: false,
        }
    }

    /// Whether this write may go now; if not, the task is woken to try again after the
    /// tasks already due.
    fn may_write(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.gather || self.waited {
            return true;
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        false
    }
}

impl<Io: Read + Unpin> Read for Coalescing<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: Write + Unpin> Write for Coalescing<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.may_write(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.may_write(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if flushed.is_ready() {
            // The batch is out: the next write starts another.
            self.waited = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Dials TCP within `connect_timeout` (no Nagle: each write leaves at once) and wraps
/// the connection in [`Coalescing`]; TLS, when configured, goes on top (tonic adds
/// it). The settings are those of tonic's own connector for our endpoints. The timeout
/// is the connector's own, as in tonic's, so that a connection not made in time
/// fails as one that could not be made (`tonic::ConnectError`): the channel then sends
/// the call at once to another address (`outcome::classify`), where a timeout around
/// the connector would make it a broken connection.
#[derive(Clone, Debug)]
pub(crate) struct Connector(HttpConnector);

impl Connector {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        // An `https://` address is TLS over TCP.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        Self(http)
    }
}

impl tower::Service<Uri> for Connector {
    type Response = Coalescing<<HttpConnector as tower::Service<Uri>>::Response>;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let wrap = match uri.scheme_str() {
            Some("https") => Coalescing::as_is,
            _ => Coalescing::new,
        };
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(wrap) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper_util::rt::TokioIo;
    use tonic::transport::{Endpoint, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    /// A connection that counts the writes that went through.
    struct Counted<Io> {
        io: Io,
        writes: Arc<AtomicUsize>,
    }

    impl<Io> Counted<Io> {
        fn count(&self, written: &Poll<io::Result<usize>>) {
            if let Poll::Ready(Ok(_)) = written {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    impl<Io: Read + Unpin> Read for Counted<Io> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<Io: Write + Unpin> Write for Counted<Io> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.io).poll_write(cx, buf);
            self.count(&written);
            written
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            self.count(&written);
            written
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

    #[tokio::test]
    async fn only_plaintext_connections_gather_their_writes() {
        use tower::Service as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connector = Connector::new(Duration::from_secs(5));
        for (scheme, gathers) in [("http", true), ("https", false)] {
            let uri: Uri = format!("{scheme}://{addr}").parse().unwrap();
            std::future::poll_fn(|cx| connector.poll_ready(cx))
                .await
                .unwrap();
            let connection = connector.call(uri).await.unwrap();
            assert_eq!(connection.gather, gathers, "{scheme}");
        }
    }

    #[tokio::test]
    async fn a_unary_call_is_written_to_the_connection_at_once() {
        // A tonic server and a tonic channel over an in-memory pipe, the channel's end
        // wrapped as the connector wraps a TCP connection, its writes counted.
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::once(Ok::<_, io::Error>(server_end))),
        );
        let writes = Arc::new(AtomicUsize::new(0));
        let mut client_end = Some(Coalescing::new(Counted {
            io: TokioIo::new(client_end),
            writes: writes.clone(),
        }));
        let connector = tower::service_fn(move |_: Uri| {
            let io = client_end.take().ok_or(io::Error::other("connected once"));
            async move { io }
        });
        let channel = Endpoint::from_static("http://in-memory")
            .connect_with_connector(connector)
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        // The first call also carries the connection's preface and settings.
        client.check(HealthCheckRequest::default()).await.unwrap();

        for _ in 0..3 {
            let before = writes.load(Ordering::Relaxed);
            client.check(HealthCheckRequest::default()).await.unwrap();
            // HEADERS and DATA in one write; hyper's client alone makes two.
            assert_eq!(writes.load(Ordering::Relaxed) - before, 1);
        }
    }
}
