//! TLS and mutual TLS between services (issue 8, test 7). A server built through
//! `shared::Server` with mutual TLS refuses every client without a valid certificate
//! (none, another CA, expired, plaintext) before any handler runs; probes get their
//! answer on the plaintext health-only port, which serves nothing else and stops with
//! the server; a client that never finishes its handshake is dropped after
//! `GRPC_TLS_HANDSHAKE_TIMEOUT`; and the whole system calls itself over mutual TLS.
//!
//! The certificates are made here, in a temporary folder, by a CA of the test.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use contracts::inventory::v1 as pb;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use contracts::orders::v1::OrderStatus;
use contracts::orders::v1::order_service_client::OrderServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use shared::client::Upstream;
use shared::testing::TestServer;
use shared::{ClientConfig, Env, ServerConfig};
use tokio::io::AsyncReadExt;
use tonic::transport::Endpoint;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_valid_certificate_before_any_handler_runs() {
    let pki = Pki::new("matrix");
    let server = MtlsServer::start(&pki).await;

    let valid = pki.issue("client", &[], Validity::Current);
    let expired = pki.issue("expired-client", &[], Validity::Expired);
    let other = Pki::new("other");
    let other_ca_client = other.issue("other-client", &[], Validity::Current);

    // A valid certificate of the CA: the call goes through.
    let reply = server.call(client_env(&pki, Some(&valid))).await;
    assert!(reply.is_ok(), "valid certificate: {reply:?}");
    assert_eq!(server.calls(), 1);

    let refused = [
        ("no client certificate", client_env(&pki, None)),
        (
            "a certificate of another CA",
            client_env(&pki, Some(&other_ca_client)),
        ),
        ("an expired certificate", client_env(&pki, Some(&expired))),
        // The client distrusts the server, too: its certificate is of another CA.
        (
            "a client trusting another CA",
            client_env(&other, Some(&other_ca_client)),
        ),
    ];
    for (case, env) in refused {
        let status = server.call(env).await.expect_err(case);
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown),
            "{case}: {status:?}"
        );
    }
    let plaintext = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_lazy();
    let status = InventoryServiceClient::new(plaintext)
        .list_products(pb::ListProductsRequest::default())
        .await
        .expect_err("plaintext client");
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "plaintext: {status:?}"
    );

    assert_eq!(server.calls(), 1, "no refused client reached the handler");
    server.stop().await;
}

#[tokio::test]
async fn the_server_certificate_is_checked_against_the_upstream_name_not_the_dialled_address() {
    let pki = Pki::new("names");
    let server = MtlsServer::start(&pki).await;
    let client = pki.issue("client", &[], Validity::Current);
    let config = ClientConfig::from_env(&client_env(&pki, Some(&client))).unwrap();
    // An address, as a load balancer over resolved endpoints dials; the certificate
    // names localhost only.
    let dialled = Endpoint::from_shared(format!("https://{}", server.addr)).unwrap();
    let call = |name: &'static str| {
        let tls = config.tls.as_ref();
        let endpoint =
            shared::tls::client_endpoint(dialled.clone(), name, tls, config.connect_timeout);
        async move {
            InventoryServiceClient::new(endpoint.connect_lazy())
                .list_products(pb::ListProductsRequest::default())
                .await
        }
    };
    assert!(call("localhost").await.is_ok());
    let status = call("inventory")
        .await
        .expect_err("a name the certificate lacks");
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "{status:?}"
    );
    assert_eq!(server.calls(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_plaintext_health_port_serves_health_and_nothing_else() {
    let pki = Pki::new("health");
    let server = MtlsServer::start(&pki).await;
    let health_port = plaintext(server.health_addr);

    for name in ["", "readiness", "liveness", "inventory.v1.InventoryService"] {
        let status = check(health_port.clone(), name).await.unwrap();
        assert_eq!(status, ServingStatus::Serving, "{name:?}");
    }
    // The TLS port refuses the same plaintext call.
    let refused = check(plaintext(server.addr), "").await;
    assert!(refused.is_err(), "{refused:?}");
    // Anything but Health is UNIMPLEMENTED on the health port, and runs no handler.
    let status = InventoryServiceClient::new(health_port.clone())
        .list_products(pb::ListProductsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(server.calls(), 0);

    // The health port shares the registry and stops with the server: a Watch stream
    // open on it sees the drain and ends, and the server stops.
    let mut watch = HealthClient::new(health_port)
        .watch(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    server.server.begin_shutdown();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    tokio::time::timeout(Duration::from_secs(10), server.server.join())
        .await
        .expect("the server stops within its grace period")
        .unwrap();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped_after_the_timeout() {
    let pki = Pki::new("handshake");
    let server = MtlsServer::start(&pki).await;

    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let opened = Instant::now();

    // The silent client holds no one up: handshakes run beside the accept loop.
    let valid = pki.issue("client", &[], Validity::Current);
    let reply = server.call(client_env(&pki, Some(&valid))).await;
    assert!(reply.is_ok(), "{reply:?}");

    let mut buf = [0; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the server drops the silent client");
    let elapsed = opened.elapsed();
    // Closed (EOF), or reset: either way, nothing was ever sent to it.
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        elapsed >= HANDSHAKE_TIMEOUT.mul_f32(0.8),
        "dropped after {elapsed:?}, before the handshake timeout"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_tls_files_stop_start_up_naming_the_variable() {
    let pki = Pki::new("config");
    let server = pki.issue("server", &["localhost"], Validity::Current);
    let other = pki.issue("other", &["localhost"], Validity::Current);
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file").unwrap();
    let missing = pki.dir.join("missing.pem");
    let ca = pki.ca_file.to_str().unwrap();
    let (cert, key) = (path(&server.cert), path(&server.key));

    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("GRPC_TLS_CERT_FILE", cert)], "GRPC_TLS_CERT_FILE"),
        (&[("GRPC_TLS_KEY_FILE", key)], "GRPC_TLS_KEY_FILE"),
        (
            &[
                ("GRPC_TLS_CERT_FILE", path(&missing)),
                ("GRPC_TLS_KEY_FILE", key),
            ],
            "GRPC_TLS_CERT_FILE",
        ),
        (
            &[
                ("GRPC_TLS_CERT_FILE", path(&garbage)),
                ("GRPC_TLS_KEY_FILE", key),
            ],
            "GRPC_TLS_CERT_FILE",
        ),
        (
            &[
                ("GRPC_TLS_CERT_FILE", cert),
                ("GRPC_TLS_KEY_FILE", path(&garbage)),
            ],
            "GRPC_TLS_KEY_FILE",
        ),
        // A key that is not the certificate's.
        (
            &[
                ("GRPC_TLS_CERT_FILE", cert),
                ("GRPC_TLS_KEY_FILE", path(&other.key)),
            ],
            "GRPC_TLS_CERT_FILE",
        ),
        (
            &[("GRPC_TLS_CLIENT_CA_FILE", ca)],
            "GRPC_TLS_CLIENT_CA_FILE",
        ),
    ];
    for (vars, named) in cases {
        let env: Env = vars.iter().copied().collect();
        let error = ServerConfig::from_env(&env, 1, 2).unwrap_err();
        assert_eq!(error.var, named, "{vars:?}: {error}");
    }

    let client_cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("GRPC_CLIENT_TLS_CA_FILE", path(&garbage))],
            "GRPC_CLIENT_TLS_CA_FILE",
        ),
        (
            &[
                ("GRPC_CLIENT_TLS_CERT_FILE", cert),
                ("GRPC_CLIENT_TLS_KEY_FILE", key),
            ],
            "GRPC_CLIENT_TLS_CERT_FILE",
        ),
        (
            &[
                ("GRPC_CLIENT_TLS_CA_FILE", ca),
                ("GRPC_CLIENT_TLS_CERT_FILE", cert),
            ],
            "GRPC_CLIENT_TLS_CERT_FILE",
        ),
    ];
    for (vars, named) in client_cases {
        let env: Env = vars.iter().copied().collect();
        let error = ClientConfig::from_env(&env).unwrap_err();
        assert_eq!(error.var, named, "{vars:?}: {error}");
    }

    // https:// upstreams need a CA to check the server against.
    let env: Env = [("INVENTORY_ADDR", "https://inventory:50052")]
        .into_iter()
        .collect();
    let error = env
        .upstream("INVENTORY_ADDR", "http://127.0.0.1:50052")
        .unwrap_err();
    assert!(
        error.to_string().contains("GRPC_CLIENT_TLS_CA_FILE"),
        "{error}"
    );
    let env = env.with("GRPC_CLIENT_TLS_CA_FILE", ca);
    let uri = env
        .upstream("INVENTORY_ADDR", "http://127.0.0.1:50052")
        .unwrap();
    assert!(uri.uses_tls());
}

#[tokio::test]
async fn the_services_call_each_other_over_mutual_tls() {
    let pki = Pki::new("stack");
    // One identity for every service of the stack: a server and a client certificate
    // for the names they reach each other by here.
    let service = pki.issue("service", &["localhost", "127.0.0.1"], Validity::Current);
    let ca = path(&pki.ca_file);
    let env = Env::default()
        .with("GRPC_TLS_CERT_FILE", path(&service.cert))
        .with("GRPC_TLS_KEY_FILE", path(&service.key))
        .with("GRPC_TLS_CLIENT_CA_FILE", ca)
        .with("GRPC_CLIENT_TLS_CA_FILE", ca)
        .with("GRPC_CLIENT_TLS_CERT_FILE", path(&service.cert))
        .with("GRPC_CLIENT_TLS_KEY_FILE", path(&service.key));
    let stack = stack::testing::TestStack::start(&env, &stack::Wiring::default()).await;

    // Orders reserve at inventory and charge at payments: both over mutual TLS.
    let orders_uri = Upstream::parse(&format!("https://{}", stack.addr("orders"))).unwrap();
    let channel = shared::client::channel(
        orders_uri,
        &ClientConfig::from_env(&env).unwrap(),
        contracts::RETRY_SAFE_METHODS,
    );
    let placed = OrderServiceClient::new(channel)
        .place_order(support::place_order("mtls-1", "cus_mtls", "SKU-001"))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(placed.status(), OrderStatus::Confirmed, "{placed:?}");

    // The gateway (plain HTTP for its callers) reaches inventory over mutual TLS too.
    let product = stack.http().get("/v1/products/SKU-001").await;
    assert_eq!(product.status, http::StatusCode::OK, "{product:?}");

    stack.stop().await.unwrap();
}

/// A server of the test's InventoryService, which counts the calls that reach it, built
/// through `shared::Server` with mutual TLS.
struct MtlsServer {
    server: TestServer,
    addr: SocketAddr,
    health_addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl MtlsServer {
    async fn start(pki: &Pki) -> Self {
        let cert = pki.issue("server", &["localhost"], Validity::Current);
        let timeout = format!("{}ms", HANDSHAKE_TIMEOUT.as_millis());
        let env = shared::testing::env([
            ("GRPC_TLS_CERT_FILE", path(&cert.cert)),
            ("GRPC_TLS_KEY_FILE", path(&cert.key)),
            ("GRPC_TLS_CLIENT_CA_FILE", path(&pki.ca_file)),
            ("GRPC_TLS_HANDSHAKE_TIMEOUT", timeout.as_str()),
        ]);
        let config = ServerConfig::from_env(&env, 0, 0).unwrap();
        assert!(config.tls.as_ref().is_some_and(|tls| tls.is_mutual()));
        let calls = Arc::new(AtomicUsize::new(0));
        let server = shared::Server::builder("mtls-test", &config)
            .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET)
            .add_service(InventoryServiceServer::new(Counting {
                calls: calls.clone(),
            }))
            .bind()
            .await
            .unwrap();
        let health_addr = server.health_addr().expect("TLS brings the health port");
        let server = TestServer::start(server);
        Self {
            addr: server.addr,
            server,
            health_addr,
            calls,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// One call over `https://localhost`, as configured by `env`.
    async fn call(&self, env: Env) -> Result<Response<pb::ListProductsResponse>, Status> {
        let uri = format!("https://localhost:{}", self.addr.port());
        let config = ClientConfig::from_env(&env).unwrap();
        let channel = shared::client::channel(
            Upstream::parse(&uri).unwrap(),
            &config,
            contracts::RETRY_SAFE_METHODS,
        );
        InventoryServiceClient::new(channel)
            .list_products(pb::ListProductsRequest::default())
            .await
    }

    async fn stop(self) {
        self.server.stop().await.unwrap();
    }
}

/// Counts every call that reaches a handler; only `ListProducts` answers.
struct Counting {
    calls: Arc<AtomicUsize>,
}

impl Counting {
    fn reached<T>(&self) -> Result<Response<T>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(Status::unimplemented("not part of the test"))
    }
}

#[tonic::async_trait]
impl InventoryService for Counting {
    async fn list_products(
        &self,
        _: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::ListProductsResponse::default()))
    }

    async fn get_product(
        &self,
        _: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        self.reached()
    }

    async fn reserve_stock(
        &self,
        _: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        self.reached()
    }

    async fn commit_reservation(
        &self,
        _: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        self.reached()
    }

    async fn release_reservation(
        &self,
        _: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        self.reached()
    }

    async fn restock_products(
        &self,
        _: Request<tonic::Streaming<pb::RestockProductsRequest>>,
    ) -> Result<Response<pb::RestockProductsResponse>, Status> {
        self.reached()
    }
}

/// A client's settings: trusting `pki`'s CA, presenting `identity` if any.
fn client_env(pki: &Pki, identity: Option<&Issued>) -> Env {
    let mut env = Env::default().with("GRPC_CLIENT_TLS_CA_FILE", path(&pki.ca_file));
    if let Some(identity) = identity {
        env = env
            .with("GRPC_CLIENT_TLS_CERT_FILE", path(&identity.cert))
            .with("GRPC_CLIENT_TLS_KEY_FILE", path(&identity.key));
    }
    env
}

fn plaintext(addr: SocketAddr) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

async fn check(channel: tonic::transport::Channel, service: &str) -> Result<ServingStatus, Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?
        .into_inner();
    Ok(response.status())
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// A CA of the test, writing the certificates it issues into a folder of its own.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
}

/// The PEM files of an issued certificate.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Clone, Copy)]
enum Validity {
    Current,
    /// Valid in 2020 only.
    Expired,
}

impl Pki {
    fn new(name: &str) -> Self {
        // Each test names its CAs differently, and runs in a process of its own.
        let dir = std::env::temp_dir().join(format!("tls-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Self { dir, ca, ca_file }
    }

    /// A certificate for `names` (server names; none for a client only), good for both
    /// server and client authentication.
    fn issue(&self, stem: &str, names: &[&str], validity: Validity) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if let Validity::Expired = validity {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}-key.pem")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
