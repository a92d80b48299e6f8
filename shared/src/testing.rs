//! Helpers for tests that run real servers in-process.
//!
//! ```ignore
//! let server = TestServer::start(inventory::build(config).await?);
//! let mut client = InventoryServiceClient::new(server.channel.clone());
//! // … calls …
//! server.stop().await?;
//! ```
//!
//! [`NatsServer`] runs a real `nats-server` with JetStream for the event tests;
//! [`proxy::FaultProxy`] puts network faults (latency, bandwidth, resets, a black
//! hole) between a client and a server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

use crate::{Env, Error, Server};

mod nats;
pub mod proxy;

pub use nats::NatsServer;

/// A server serving on `127.0.0.1:<free port>` in a background task.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A channel to it, for the generated clients.
    pub channel: Channel,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl TestServer {
    /// Serves an already bound `server`. Bound first, spawned second: the address
    /// accepts connections before this returns, so no test ever sleeps.
    pub fn start(server: Server) -> Self {
        init_logs();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(server.serve(signal));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a socket address makes a valid URI")
            .connect_lazy();
        Self {
            addr,
            channel,
            shutdown,
            task,
        }
    }

    /// A health client on the server's channel.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Starts the shutdown sequence, as SIGTERM would, without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the server to stop by itself, after [`TestServer::begin_shutdown`].
    pub async fn join(self) -> Result<(), Error> {
        self.task.await.expect("server task panicked")
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(self) -> Result<(), Error> {
        self.begin_shutdown();
        self.join().await
    }
}

/// An environment for a test server: free ports on 127.0.0.1 (`LISTEN_ADDR`,
/// `ADMIN_LISTEN_ADDR`, and `HEALTH_LISTEN_ADDR` used with TLS) plus `pairs`.
pub fn env<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
    [
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        ("HEALTH_LISTEN_ADDR", "127.0.0.1:0"),
    ]
    .into_iter()
    .chain(pairs)
    .collect()
}

/// An address on 127.0.0.1 where nothing listens, for as long as this lives:
/// a connection to it is refused.
///
/// The port stays bound (but not listening) meanwhile. A port that was merely
/// free a moment ago can be handed by the kernel to another test's server,
/// in this process or a parallel one, and a call meant to be refused then
/// reaches that server and fails some other way.
#[derive(Debug)]
pub struct ClosedPort {
    /// The address.
    pub addr: SocketAddr,
    _bound: tokio::net::TcpSocket,
}

impl ClosedPort {
    /// Binds a free port on 127.0.0.1, without listening on it.
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("a free port on 127.0.0.1");
        let addr = socket.local_addr().expect("the bound address");
        Self {
            addr,
            _bound: socket,
        }
    }

    /// `http://127.0.0.1:<port>`, for an `*_ADDR` variable.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `condition` every 10 ms until it holds; panics naming `what` after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Test logs are silent unless `TEST_LOG=1` (then filtered by `RUST_LOG`).
pub fn init_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into());
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// What server reflection told: the services it lists and every file it served.
#[derive(Debug, Default)]
pub struct ReflectionReport {
    /// Sorted by name.
    pub services: Vec<String>,
    pub files: std::collections::BTreeSet<String>,
}

macro_rules! reflection_report {
    ($name:ident, $pb:path) => {
        /// Lists the services over this reflection version, then fetches the file of
        /// each service and of the google.rpc error details, following every import.
        /// Panics naming whatever does not resolve.
        pub async fn $name(channel: Channel) -> ReflectionReport {
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use prost::Message as _;
            use $pb as pb;

            let mut client = pb::server_reflection_client::ServerReflectionClient::new(channel);
            let mut ask = async |request: MessageRequest| {
                let message = pb::ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request.clone()),
                };
                let mut responses = client
                    .server_reflection_info(tokio_stream::iter([message]))
                    .await
                    .unwrap_or_else(|e| panic!("reflection call for {request:?}: {e}"))
                    .into_inner();
                let response = responses
                    .message()
                    .await
                    .unwrap_or_else(|e| panic!("reflection answer for {request:?}: {e}"))
                    .and_then(|r| r.message_response)
                    .unwrap_or_else(|| panic!("no reflection answer for {request:?}"));
                match response {
                    MessageResponse::ErrorResponse(e) => {
                        panic!("reflection cannot resolve {request:?}: {e:?}")
                    }
                    other => other,
                }
            };

            let mut report = ReflectionReport::default();
            let MessageResponse::ListServicesResponse(list) =
                ask(MessageRequest::ListServices(String::new())).await
            else {
                panic!("ListServices answered something else");
            };
            report.services = list.service.into_iter().map(|s| s.name).collect();
            report.services.sort();

            let mut pending: Vec<MessageRequest> = report
                .services
                .iter()
                .chain(&["google.rpc.BadRequest".to_owned()])
                .map(|s| MessageRequest::FileContainingSymbol(s.clone()))
                .collect();
            while let Some(request) = pending.pop() {
                let MessageResponse::FileDescriptorResponse(files) = ask(request).await else {
                    panic!("a file request answered something else");
                };
                for bytes in files.file_descriptor_proto {
                    let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())
                        .expect("reflection serves valid descriptors");
                    report.files.insert(file.name().to_owned());
                    for dependency in file.dependency {
                        if !report.files.contains(&dependency) {
                            pending.push(MessageRequest::FileByFilename(dependency));
                        }
                    }
                }
            }
            report
        }
    };
}

reflection_report!(reflection_v1, tonic_reflection::pb::v1);
reflection_report!(reflection_v1alpha, tonic_reflection::pb::v1alpha);

/// The fields named by an INVALID_ARGUMENT's `BadRequest` detail, in order. Panics if
/// `status` is anything else.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status
        .get_details_bad_request()
        .expect("a BadRequest detail");
    details
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// A service binary (`env!("CARGO_BIN_EXE_<name>")`) configured with exactly `env`
/// (nothing inherited), its output piped, as Kubernetes would start it.
pub fn service_command(binary: &str, env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .env_clear()
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Waits for `child` to exit, at most `limit`, polling every 10 ms while the runtime
/// keeps serving the test's own connections (a graceful HTTP/2 GOAWAY needs its PING
/// answered). Kills the process and panics past the limit.
pub async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be polled") {
            return status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The variable naming the PostgreSQL server that tests create their databases on: a
/// URL like `postgres://postgres@127.0.0.1:5432/postgres` of a role that may create
/// databases. `make test` starts a private server and sets it
/// (`scripts/with-postgres.sh`); to run such tests by hand:
/// `scripts/with-postgres.sh cargo nextest run`.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// The URL of a new, empty database, for one test: tests never share one, so they run
/// in parallel and leave nothing behind that another could see.
///
/// Panics, saying how to get one, when `TEST_DATABASE_URL` is unset.
pub async fn fresh_database() -> String {
    use sqlx::{Connection as _, Executor as _};

    let Ok(admin) = std::env::var(TEST_DATABASE_URL) else {
        panic!(
            "{TEST_DATABASE_URL} is not set: this test needs PostgreSQL. `make test` starts \
             one; by hand: scripts/with-postgres.sh cargo nextest run"
        );
    };
    let mut connection = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            let admin = crate::db::redact(&admin);
            panic!("cannot connect to {TEST_DATABASE_URL}={admin}: {e}")
        });
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    connection
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let _ = connection.close().await;
    with_database(&admin, &name)
}

/// `url` with its database (the last path segment) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

/// One store contract, two stores: for each listed `async fn test(store)`, a
/// `#[tokio::test]` in module `memory` that gives it `$memory().await` and one in
/// module `postgres` that gives it `$postgres().await` (a store on a
/// [`fresh_database`]). Both factories and tests are functions of the calling module.
///
/// ```ignore
/// shared::store_tests!(memory: memory_store, postgres: pg_store, tests: [reserve_is_all_or_nothing]);
/// ```
#[macro_export]
macro_rules! store_tests {
    (memory: $memory:ident, postgres: $postgres:ident, tests: [$($test:ident),+ $(,)?]) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::$memory().await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::$postgres().await).await;
                }
            )+
        }
    };
}

/// A new, empty database reached two ways: directly, and through a
/// [`proxy::FaultProxy`] whose faults cut one replica's link while another keeps its own.
pub async fn fresh_db_behind_proxy() -> (crate::db::DbConfig, proxy::FaultProxy, crate::db::DbConfig)
{
    let url = fresh_database().await;
    let at = url
        .rfind('@')
        .map_or(url.find("://").map_or(0, |i| i + 3), |at| at + 1);
    let end = url[at..].find('/').map_or(url.len(), |slash| at + slash);
    let target = url[at..end].replace("localhost", "127.0.0.1");
    let proxy =
        proxy::FaultProxy::start(target.parse().expect("host:port of TEST_DATABASE_URL")).await;
    let proxied = format!("{}{}{}", &url[..at], proxy.addr(), &url[end..]);
    let config = |url: &str| crate::db::DbConfig::from_url(url).expect("a valid database URL");
    (config(&url), proxy, config(&proxied))
}

/// A [`DbConfig`](crate::db::DbConfig) for a new, empty database ([`fresh_database`]).
pub async fn fresh_db_config() -> crate::db::DbConfig {
    crate::db::DbConfig::from_url(&fresh_database().await).expect("a valid database URL")
}

#[cfg(test)]
mod tests {
    use super::{ClosedPort, with_database};

    #[tokio::test]
    async fn a_closed_port_refuses_connections_and_no_server_can_take_it() {
        let closed = ClosedPort::new();
        let err = tokio::net::TcpStream::connect(closed.addr)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        // tokio binds with SO_REUSEADDR, as the servers under test do.
        let err = tokio::net::TcpListener::bind(closed.addr)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let err = std::net::TcpListener::bind(closed.addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "t"),
            "postgres://u@h:1/t"
        );
        assert_eq!(with_database("postgres://u@h:1", "t"), "postgres://u@h:1/t");
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "t"),
            "postgres://u@h/t?sslmode=disable"
        );
    }
}
