//! A userspace TCP proxy that injects network faults between a client and a server,
//! switchable while connections are open: added latency, a bandwidth limit, resets
//! (RST, as from a crashed peer or a firewall) and a black hole (connections are
//! accepted and kept, nothing goes through — a hung peer or a partition). For
//! machines without `tc netem`, and for tests that need faults at an exact moment.
//!
//! ```ignore
//! let proxy = FaultProxy::start(server_addr).await;
//! let channel = shared::client::channel(proxy.addr(), &config, contracts::RETRY_SAFE_METHODS);
//! proxy.set(Faults::blackhole());   // calls now hang until their deadline
//! proxy.set(Faults::default());     // and go through again
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the proxy does to the traffic; [`Faults::default`] forwards it untouched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added before each chunk is passed on, in both directions.
    pub latency: Duration,
    /// Bytes per second in each direction of each connection; `None`: unlimited.
    pub bandwidth: Option<u64>,
    pub mode: Mode,
}

/// What happens to connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Bytes go through (after the latency and bandwidth limit).
    #[default]
    Forward,
    /// Connections are accepted and kept open, but nothing is read from them or
    /// passed on (the peers' kernels buffer, then TCP backpressure holds the
    /// senders); back in [`Mode::Forward`], the traffic resumes.
    Blackhole,
    /// Every open connection, and every new one, is reset (RST) on both sides.
    Reset,
}

impl Faults {
    pub fn latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    pub fn bandwidth(bytes_per_second: u64) -> Self {
        Self {
            bandwidth: Some(bytes_per_second.max(1)),
            ..Self::default()
        }
    }

    pub fn blackhole() -> Self {
        Self {
            mode: Mode::Blackhole,
            ..Self::default()
        }
    }

    pub fn reset() -> Self {
        Self {
            mode: Mode::Reset,
            ..Self::default()
        }
    }
}

/// See the module documentation. Stops (and resets its connections) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    target: Mutex<SocketAddr>,
    accepted: AtomicUsize,
    /// Bytes passed on from clients to the target.
    sent: AtomicU64,
}

impl FaultProxy {
    /// A proxy on `127.0.0.1:<free port>` to `target`, forwarding untouched.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy binds a free port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let faults = watch::Sender::new(Faults::default());
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            accepted: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, faults.subscribe(), shared.clone()));
        Self {
            addr,
            faults,
            shared,
            task,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `faults` to open and new connections at once.
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    /// New connections go to `target` (a restarted server on another port).
    pub fn retarget(&self, target: SocketAddr) {
        *self
            .shared
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = target;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes passed on from clients to the target so far: a test waits on it to know
    /// that a request is on its way.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.faults.send_replace(Faults::reset());
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, faults: watch::Receiver<Faults>, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(connection(client, faults.clone(), shared.clone()));
    }
}

/// Waits while the proxy is a black hole; `false` if it resets.
async fn forwarding(faults: &mut watch::Receiver<Faults>) -> bool {
    match faults.wait_for(|f| f.mode != Mode::Blackhole).await {
        Ok(f) => f.mode == Mode::Forward,
        Err(_) => false,
    }
}

async fn connection(client: TcpStream, mut faults: watch::Receiver<Faults>, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    // A connection that arrives in a black hole waits there before it is passed on.
    if !forwarding(&mut faults).await {
        return reset(client);
    }
    let target = *shared.target.lock().unwrap_or_else(PoisonError::into_inner);
    let Ok(server) = TcpStream::connect(target).await else {
        // As a refused connection looks to the client: closed at once.
        return reset(client);
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // A reset of either side (or by the proxy) resets both at once.
    let broken = CancellationToken::new();
    let up = pump(
        client_read,
        server_write,
        faults.clone(),
        &broken,
        Some(shared.clone()),
    );
    let down = pump(server_read, client_write, faults, &broken, None);
    let ((client_read, server_write, up_end), (server_read, client_write, down_end)) =
        tokio::join!(up, down);
    if up_end == End::Reset || down_end == End::Reset {
        if let Ok(client) = client_read.reunite(client_write) {
            reset(client);
        }
        if let Ok(server) = server_read.reunite(server_write) {
            reset(server);
        }
    }
}

/// Closes `stream` with an RST rather than a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The sender closed its side (FIN), which was passed on.
    Closed,
    /// Reset by the proxy, or the sender's connection failed: reset both sides.
    Reset,
}

/// Passes bytes from `from` to `to` under the current faults, until the sender closes
/// or the connection is reset. Returns the halves, to reset them together.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    broken: &CancellationToken,
    count: Option<Arc<Shared>>,
) -> (OwnedReadHalf, OwnedWriteHalf, End) {
    let mut buffer = vec![0; 16 * 1024];
    let end = loop {
        if broken.is_cancelled() {
            break End::Reset;
        }
        if !forwarding(&mut faults).await {
            break End::Reset;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // A change of faults is applied even to an idle connection.
            _ = faults.changed() => continue,
            () = broken.cancelled() => break End::Reset,
        };
        let n = match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                break End::Closed;
            }
            Ok(n) => n,
            Err(_) => break End::Reset,
        };
        let current = *faults.borrow();
        let send = async {
            tokio::time::sleep(current.latency).await;
            to.write_all(&buffer[..n]).await?;
            if let Some(rate) = current.bandwidth {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            std::io::Result::Ok(())
        };
        let sent = tokio::select! {
            sent = send => sent,
            _ = faults.wait_for(|f| f.mode == Mode::Reset) => break End::Reset,
            () = broken.cancelled() => break End::Reset,
        };
        if sent.is_err() {
            break End::Reset;
        }
        if let Some(shared) = &count {
            shared.sent.fetch_add(n as u64, Ordering::SeqCst);
        }
    };
    if end == End::Reset {
        broken.cancel();
    }
    (from, to, end)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut answer = vec![0; message.len()];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn forwards_untouched_by_default() {
        let proxy = FaultProxy::start(echo().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.accepted(), 1);
        assert_eq!(proxy.sent(), 5);
    }

    #[tokio::test]
    async fn latency_delays_each_direction() {
        let proxy = FaultProxy::start(echo().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut stream, b"warm").await.unwrap();
        proxy.set(Faults::latency(Duration::from_millis(100)));
        let start = Instant::now();
        round_trip(&mut stream, b"slow").await.unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
    }

    #[tokio::test]
    async fn the_bandwidth_limit_paces_the_bytes() {
        let proxy = FaultProxy::start(echo().await).await;
        proxy.set(Faults::bandwidth(100_000));
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let start = Instant::now();
        // 50 kB each way at 100 kB/s: at least half a second, there and back.
        round_trip(&mut stream, &[7; 50_000]).await.unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
    }

    #[tokio::test]
    async fn a_reset_ends_open_connections_with_an_rst() {
        let proxy = FaultProxy::start(echo().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut stream, b"before").await.unwrap();
        proxy.set(Faults::reset());
        let mut buffer = [0; 1];
        let read = stream.read(&mut buffer).await;
        let error = read.expect_err("a reset connection fails, it does not end cleanly");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
        // New connections are reset too.
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut again, b"x").await.is_err());
    }

    #[tokio::test]
    async fn a_server_that_dies_resets_its_clients() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy::start(listener.local_addr().unwrap()).await;
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(b"unread").await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Closed with unread data: the kernel sends an RST, as when a process dies.
        while proxy.sent() < 6 {
            tokio::task::yield_now().await;
        }
        drop(server);
        let mut buffer = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer)).await;
        let read = read.expect("the client is told, it does not hang");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[tokio::test]
    async fn a_black_hole_holds_traffic_until_it_is_lifted() {
        let proxy = FaultProxy::start(echo().await).await;
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut stream, b"before").await.unwrap();
        proxy.set(Faults::blackhole());
        stream.write_all(b"held").await.unwrap();
        let mut answer = [0; 4];
        let waited =
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut answer)).await;
        assert!(waited.is_err(), "nothing comes back from a black hole");
        // A new connection is accepted and held as well.
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        held.write_all(b"late").await.unwrap();
        proxy.set(Faults::default());
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"held");
        held.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"late");
    }

    #[tokio::test]
    async fn retargeting_sends_new_connections_elsewhere() {
        let proxy = FaultProxy::start("127.0.0.1:1".parse().unwrap()).await;
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut refused, b"x").await.is_err());
        proxy.retarget(echo().await);
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"ok").await.unwrap(), b"ok");
    }
}
