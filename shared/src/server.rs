//! The gRPC server every service runs: one builder registers the cross-cutting
//! services and layers, binds, and serves until shutdown with a bounded drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tower::Service;

use crate::conformance::ConformanceLayer;
use crate::deadline::DeadlineLayer;
use crate::load_shed::LoadShedLayer;
use crate::observe::ServerLayer;
use crate::tasks::{Signals, Tasks};
use crate::web::WebLayer;
use crate::{Error, Health, ServerConfig, health, lifecycle};

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Collects a service's gRPC services before [`ServerBuilder::bind`].
#[derive(Debug)]
pub struct ServerBuilder {
    name: &'static str,
    config: ServerConfig,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    /// Encoded `FileDescriptorSet`s of the services' contracts.
    descriptors: Vec<&'static [u8]>,
    signals: Signals,
    tasks: Tasks,
}

impl ServerBuilder {
    /// Adds an encoded `FileDescriptorSet` declaring the services to add (the
    /// service's contracts: `contracts::FILE_DESCRIPTOR_SET`). Reflection serves it, so
    /// `grpcurl describe` knows every method and message, and the per-call metrics name
    /// the methods it declares. Health's and reflection's own are always there.
    pub fn file_descriptor_set(mut self, set: &'static [u8]) -> Self {
        self.descriptors.push(set);
        self
    }

    /// A token cancelled when the server starts draining (when health `Watch` streams
    /// end) or stops. Long-lived response streams end on it: the drain waits for every
    /// call still open, so a stream that never ends would hold it until the grace period
    /// runs out. Background tasks of the service (an event consumer) stop on it too.
    pub fn draining(&self) -> CancellationToken {
        self.signals.draining().clone()
    }

    /// The signals background tasks stop on: the drain began, and every call ended.
    pub fn signals(&self) -> Signals {
        self.signals.clone()
    }

    /// Runs `task` in the background while the server serves (see [`crate::tasks`]):
    /// it starts with serving, must run until one of [`signals`](Self::signals) tells it
    /// to stop, and the drain waits for it. One that ends or panics before the drain
    /// turns the server's health NOT_SERVING.
    pub fn spawn(
        mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.tasks.add(name, task);
        self
    }

    /// Serves `service` and registers its name with health and reflection.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.services.push(S::NAME);
        self
    }

    /// Adds health and reflection, then binds the listening socket, so the caller
    /// knows the address (port 0 picks a free one) before anything is served.
    pub async fn bind(mut self) -> Result<Server, Error> {
        let health = Health::new(self.services.iter().copied());
        self.routes.add_service(health.service());
        let mut served = vec![HEALTH_SERVICE];
        if self.config.reflection {
            let v1 = reflection(&self.services, &self.descriptors).build_v1()?;
            let v1alpha = reflection(&self.services, &self.descriptors).build_v1alpha()?;
            self.routes.add_service(v1).add_service(v1alpha);
            served.extend([REFLECTION_V1, REFLECTION_V1ALPHA]);
        }
        self.services.extend(served);

        let (listener, local_addr) = bind(self.config.listen_addr).await?;
        let (admin_listener, admin_addr) = bind(self.config.admin_addr).await?;
        let health_listener = match self.config.health_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Server {
            name: self.name,
            config: self.config,
            listener,
            local_addr,
            admin_listener,
            admin_addr,
            health_listener,
            routes: self.routes.routes(),
            services: self.services,
            descriptors: self.descriptors,
            health,
            signals: self.signals,
            tasks: self.tasks,
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}

/// Reflection in both protocol versions: grpcurl 1.8 speaks only v1alpha, newer tools
/// (buf curl, grpcurl ≥ 1.9, Postman) prefer v1. Both list exactly the services this
/// server runs and resolve every file they refer to, well-known types included.
fn reflection(
    services: &[&'static str],
    descriptors: &[&'static [u8]],
) -> tonic_reflection::server::Builder<'static> {
    let names = services
        .iter()
        .copied()
        .chain([HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA]);
    let builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details, so grpcurl can print BadRequest & co. by name.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    let builder = descriptors.iter().fold(builder, |builder, set| {
        builder.register_encoded_file_descriptor_set(set)
    });
    names.fold(builder, |builder, name| builder.with_service_name(name))
}

/// The methods of each of `services`, from the descriptor sets reflection serves (a
/// service without a descriptor there has none: all its calls count as `_OTHER`).
fn methods(
    services: &[&'static str],
    descriptors: &[&'static [u8]],
) -> Vec<(&'static str, Vec<String>)> {
    use prost::Message as _;
    let sets = [
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    for &set in sets.iter().chain(descriptors) {
        let set = prost_types::FileDescriptorSet::decode(set).expect("built-in descriptors");
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let full = match package {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                let methods = service.method.iter().map(|m| m.name().to_owned());
                found.push((full, methods.collect()));
            }
        }
    }
    services
        .iter()
        .map(|&service| {
            let methods = found.iter().find(|(name, _)| name == service);
            let methods = methods.map(|(_, methods)| methods.clone());
            if methods.is_none() {
                tracing::warn!(
                    service,
                    "no descriptor set declares this service: reflection cannot describe it \
                     and its calls count as method _OTHER (ServerBuilder::file_descriptor_set)"
                );
            }
            (service, methods.unwrap_or_default())
        })
        .collect()
}

/// A bound server, ready to [`serve`](Server::serve).
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    config: ServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
    /// The plaintext health-only port (`HEALTH_LISTEN_ADDR`), when there is one.
    health_listener: Option<(TcpListener, SocketAddr)>,
    routes: Routes,
    /// Every service served (health and reflection included), by full name.
    services: Vec<&'static str>,
    descriptors: Vec<&'static [u8]>,
    health: Health,
    signals: Signals,
    tasks: Tasks,
}

impl Server {
    /// Starts building the server of service `name` (e.g. `"inventory"`).
    pub fn builder(name: &'static str, config: &ServerConfig) -> ServerBuilder {
        ServerBuilder {
            name,
            config: config.clone(),
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            descriptors: Vec::new(),
            signals: Signals::default(),
            tasks: Tasks::default(),
        }
    }

    /// The bound address: the actual port when the configuration asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound address of the admin server (`/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound address of the plaintext health-only port, if it is served.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// The gRPC services (health and reflection included) as one `tower::Service`, for
    /// the fuzz targets of `fuzz/`, which call them in-process: what
    /// [`serve`](Server::serve) serves, without HTTP/2 and the layers.
    #[doc(hidden)]
    pub fn routes(&self) -> Routes {
        self.routes.clone()
    }

    /// The health registry, e.g. for a test that watches the shutdown sequence.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully:
    /// 1. health turns NOT_SERVING (load balancers and probes stop sending calls);
    /// 2. after `SHUTDOWN_DELAY`, the server stops accepting connections, tells
    ///    clients with HTTP/2 GOAWAY, ends health `Watch` streams and cancels
    ///    [`ServerBuilder::draining`];
    /// 3. in-flight calls finish, then the background tasks ([`ServerBuilder::spawn`]),
    ///    all within `SHUTDOWN_GRACE_PERIOD`; whatever is still running then is dropped
    ///    with a warning.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            name,
            config,
            listener,
            local_addr: addr,
            admin_listener,
            admin_addr,
            health_listener,
            routes,
            services,
            descriptors,
            health,
            signals,
            tasks,
        } = self;
        let served = methods(&services, &descriptors);
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(config.tcp_keepalive);
        // TLS (or mutual TLS) when GRPC_TLS_CERT_FILE is set; handshakes are bounded.
        let mut server = crate::tls::server_builder(config.tls.as_ref())
            .map_err(|source| Error::Serve { addr, source })?
            // tonic advertises no limit by default: one client could open unbounded
            // streams on a single connection.
            .max_concurrent_streams(config.max_concurrent_streams)
            // h2 disables its limit on locally reset streams by default, so a client
            // sending malformed requests never gets a GOAWAY.
            .http2_max_local_error_reset_streams(Some(config.max_local_error_resets))
            // Metadata is held in memory while the call runs: bound it (HTTP 431 beyond).
            .http2_max_header_list_size(config.max_header_list_size)
            // Find dead clients (a node gone without a FIN) and free their streams.
            .http2_keepalive_interval(config.keepalive_interval)
            .http2_keepalive_timeout(Some(config.keepalive_timeout));
        if let Some(age) = config.max_connection_age {
            // No grace period on purpose: with one, tonic 0.14 sends no GOAWAY and drops
            // the connection at age + grace, failing its calls with UNKNOWN. Without
            // one, the connection gets a GOAWAY at `age`, finishes its calls, and the
            // client reconnects (long streams end with the drain at the latest).
            server = server.max_connection_age(age);
        }
        let server = server
            // Browsers speak gRPC-Web over HTTP/1.1 on plaintext: only for their origins.
            .accept_http1(config.grpc_web_cors.is_some())
            .layer(
                tower::ServiceBuilder::new()
                    // gRPC-Web calls become gRPC calls here, so every layer below sees them.
                    .layer(WebLayer::new(config.grpc_web_cors.as_ref()))
                    // One span (continuing the caller's trace) and one metric sample per
                    // call; every log line of the handler carries the span's fields.
                    .layer(ServerLayer::new(
                        name,
                        served.iter().map(|(service, methods)| {
                            (*service, methods.iter().map(String::as_str))
                        }),
                    ))
                    // Past `GRPC_CONCURRENCY_LIMIT` calls at once, refuse the next with
                    // RESOURCE_EXHAUSTED rather than queue it (health checks pass).
                    .layer(LoadShedLayer::new(config.concurrency_limit))
                    // The client's deadline, capped by ours, answered with DEADLINE_EXCEEDED.
                    .layer(DeadlineLayer::new(config.request_timeout))
                    // HTTP 415 for non-gRPC requests, RESOURCE_EXHAUSTED for size limits.
                    .layer(ConformanceLayer),
            )
            .add_routes(routes);

        health.serving();
        tracing::info!(
            service = name,
            %addr,
            %admin_addr,
            runtime = crate::runtime::flavor(),
            "serving gRPC"
        );
        // However serving ends, what waits for the drain is told.
        let _draining = signals.draining().clone().drop_guard();
        let _drained = signals.drained().clone().drop_guard();
        let hooks = lifecycle::Hooks {
            not_ready: || health.draining(),
            draining: || {
                health.close();
                signals.draining().cancel();
            },
        };
        let stopped = signals.clone();
        let background = tasks.supervise(name, signals.clone(), health.clone());
        let probes = health.clone();
        let serve = |drain: oneshot::Receiver<()>| async move {
            // One drain signal for the gRPC port and the health-only port.
            let stop = CancellationToken::new();
            let relay = async {
                let _ = drain.await;
                stop.cancel();
                Ok(())
            };
            let grpc = async {
                server
                    .serve_with_incoming_shutdown(incoming, stop.cancelled())
                    .await
                    .map_err(|source| Error::Serve { addr, source })
            };
            let health_port = async {
                let Some((listener, addr)) = health_listener else {
                    return Ok(());
                };
                tracing::info!(service = name, %addr, "serving plaintext health");
                health::serve_plaintext(listener, probes, stop.cancelled())
                    .await
                    .map_err(|source| Error::Serve { addr, source })
            };
            let calls = async {
                let served = tokio::try_join!(grpc, health_port, relay).map(|_| ());
                // Every call has ended (or the server failed): the background tasks'
                // turn to finish, within what is left of the grace period.
                stopped.draining().cancel();
                stopped.drained().cancel();
                served
            };
            tokio::join!(calls, background).0
        };
        lifecycle::run(name, &config, admin_listener, shutdown, serve, hooks).await
    }
}
