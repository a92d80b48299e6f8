//! The gateway: the HTTP/JSON entry point for clients outside the cluster. Each REST
//! route calls one service through its generated gRPC client; the routes, JSON shapes
//! and error mapping are documented in `http.rs`, `dto.rs` and `error.rs`.
//!
//! - `config.rs`: settings from the environment.
//! - `http.rs`: the routes and their handlers (the only axum routing code).
//! - `auth.rs`: bearer JWTs, scopes per route, and the admission of each request.
//! - `rate_limit.rs`: the rate limit per client (GCRA).
//! - `routes.rs`: the HTTP routes, read from the protos' `google.api.http` and
//!   `gateway.v1.route` options (a public model: the OpenAPI document reads it too).
//! - `openapi.rs`: the OpenAPI document of the routes, served at `/openapi.json`;
//!   `explorer.rs`: the API explorer page at `/docs` (Swagger UI, embedded).
//! - `dto.rs`: the JSON shapes of requests and responses, and their proto conversions.
//! - `error.rs`: the one mapping from gRPC statuses to HTTP errors, and the JSON error.
//! - `upstream.rs`: a channel to each upstream service, and readiness over all of them.
//! - `<upstream>.rs`: the routes that only one upstream backs, with their JSON shapes
//!   and its client (`mod` lines marked for `make remove-service`).
//! - `server.rs`: bind, serve, drain.
//! - `connections.rs`: each connection, with its timeouts, and the connection cap.
//! - `testing.rs`: an HTTP client for tests of the REST API.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
mod connections;
mod dto;
mod error;
mod explorer;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod limits;
mod notifications; // remove-service: notifications
pub mod openapi;
mod rate_limit;
pub mod routes;
mod server;
pub mod testing;
mod upstream;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use server::Server;

/// The service's name: binary, package, image and Kubernetes name.
pub const NAME: &str = "gateway";

/// Builds the gateway on lazily connected upstream channels and binds it.
pub async fn build(config: Config) -> Result<Server, shared::Error> {
    let draining = CancellationToken::new();
    let upstreams = upstream::Upstreams::new(&config.upstreams, &config.client);
    match &config.auth {
        Some(auth) => tracing::info!(
            keys_file = %auth.keys_file.display(),
            keys = auth.authenticator.key_count(),
            "authentication on: bearer JWTs required on every route but /healthz and /readyz"
        ),
        None => tracing::warn!(
            "authentication OFF: GATEWAY_JWT_KEYS_FILE is not set, so every route is open \
             to anyone; set it (with GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE) anywhere \
             but on your own machine"
        ),
    }
    let admission = auth::Admission {
        authenticator: config.auth.map(|auth| auth.authenticator),
        limiter: config
            .rate_limit
            .map(|limit| Arc::new(rate_limit::RateLimiter::new(limit.per_second, limit.burst))),
    };
    let readiness = upstream::Readiness::new(upstreams.clone());
    let router = http::router(
        upstreams,
        readiness.clone(),
        draining.clone(),
        config.max_body_bytes,
        limits::Limits::new(config.concurrency_limit, config.request_timeout),
        admission,
    );
    Server::bind(
        NAME,
        &config.server,
        config.connections,
        router,
        readiness,
        draining,
    )
    .await
}
