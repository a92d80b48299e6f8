//! The gateway: the HTTP/JSON entry point for clients outside the cluster. Its routes
//! are the RPCs the protos annotate with `google.api.http`: each HTTP request is
//! transcoded into one gRPC call, by the rules of that annotation and the proto3 JSON
//! mapping; no route has code of its own here.
//!
//! - `config.rs`: settings from the environment.
//! - `http.rs`: the router: the API's routes, the probes, and the layers around them.
//! - `edge.rs`: what every API request goes through: span, limits, admission.
//! - `auth/`: bearer JWTs, scopes per route, and the admission of each request.
//! - `rate_limit.rs`: the rate limit per client (GCRA).
//! - `routes.rs`: the HTTP routes, read from the protos' `google.api.http` and
//!   `gateway.v1.route` options (a public model: the OpenAPI document reads it too).
//! - `transcode/`: HTTP request → request message → gRPC call → JSON or Server-Sent
//!   Events, for every route.
//! - `openapi.rs`: the OpenAPI document of the routes, served at `/openapi.json`;
//!   `explorer.rs`: the API explorer page at `/docs` (Swagger UI, embedded).
//! - `error.rs`: the one mapping from gRPC statuses to HTTP errors, and the JSON error.
//! - `upstream.rs`: a channel to each upstream service, and readiness over all of them.
//! - `server.rs`: bind, serve, drain.
//! - `connections.rs`: each connection, with its timeouts, and the connection cap.
//! - `testing.rs`: an HTTP client for tests of the REST API.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
mod connections;
mod edge;
mod error;
mod explorer;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod limits;
pub mod openapi;
mod rate_limit;
pub mod routes;
mod server;
pub mod testing;
mod transcode;
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
        &config.routes,
        &upstreams,
        readiness.clone(),
        draining.clone(),
        config.max_body_bytes,
        limits::Limits::new(config.concurrency_limit, config.request_timeout),
        admission,
    )
    .map_err(|problem| {
        route_error(routes::RouteError {
            method: String::new(),
            problem,
        })
    })?;
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

/// A route the gateway cannot serve, as a start-up error.
pub(crate) fn route_error(error: routes::RouteError) -> shared::ConfigError {
    shared::ConfigError {
        var: "google.api.http".to_owned(),
        value: error.method,
        expected: error.problem,
    }
}
