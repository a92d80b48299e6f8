//! The runtime every service uses, so that a service's `main.rs` stays a few lines
//! and every service behaves the same way.
//!
//! - [`env`], [`config`]: typed settings from environment variables ([`Env`],
//!   [`ServerConfig`], [`ClientConfig`]).
//! - [`telemetry`]: logs and traces (`RUST_LOG`, `LOG_FORMAT`, `OTEL_*`).
//! - [`observe`], [`metrics`], [`admin`]: a span and a metric sample per call, on both
//!   ends, W3C trace context propagation, and `/metrics` on the admin port.
//! - [`server`]: the gRPC server: health, reflection, limits, deadlines, a span per
//!   call, and graceful shutdown ([`Server`]); [`conformance`]: the statuses the gRPC
//!   spec asks for where tonic's differ; [`load_shed`]: a server-wide limit on calls
//!   at once; [`panic`]: a panicking handler costs one call or one delivery, and is
//!   logged; [`web`]: gRPC-Web for browsers and Node programs, CORS off unless
//!   configured.
//! - [`client`]: channels for calling other services: deadline propagation, retries
//!   under a budget, circuit breaker, bulkhead and load balancing, per downstream.
//! - [`tls`]: TLS and mutual TLS between services (`GRPC_TLS_*`, `GRPC_CLIENT_TLS_*`).
//! - [`db`]: PostgreSQL when `DATABASE_URL` is set: a pool in the service's schema,
//!   migrated at start-up.
//! - [`events`]: publishing and consuming events: NATS JetStream when `NATS_URL` is
//!   set, an in-process bus otherwise.
//! - [`validation`], [`status`], [`pagination`], [`money`], [`id`]: request rules and
//!   error statuses that every service shares.
//! - [`identity`]: the authenticated caller a call is made for, as gRPC metadata.
//! - [`testing`]: in-process test servers, and a fault-injection TCP proxy.
#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod config;
pub mod conformance;
pub mod db;
pub mod deadline;
pub mod env;
mod error;
pub mod events;
mod headers;
pub mod health;
pub mod id;
pub mod identity;
pub mod lifecycle;
pub mod load_shed;
pub mod metrics;
pub mod money;
pub mod observe;
pub mod pagination;
pub mod panic;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod storage;
pub mod tasks;
pub mod telemetry;
pub mod testing;
pub mod tls;
pub mod validation;
pub mod web;

pub use config::{ClientConfig, ServerConfig};
pub use env::{ConfigError, Env};
pub use error::Error;
pub use health::Health;
pub use money::Money;
pub use pagination::PageRequest;
pub use server::Server;
pub use validation::{FieldViolation, ValidationError, Violations};

#[cfg(test)]
mod tests {
    /// The names a manifest's dependency lines give in the sections named `sections`.
    fn dependencies<'a>(manifest: &'a str, sections: &[&str]) -> Vec<(&'a str, &'a str)> {
        let mut section = "";
        let mut found = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.trim_matches(['[', ']']);
            } else if sections.contains(&section)
                && !line.starts_with('#')
                && let Some((name, _)) = line.split_once(['.', ' ', '='])
            {
                found.push((name, line));
            }
        }
        found
    }

    /// A runtime knows no service: `shared` depends on no crate of the workspace (the
    /// contracts, a service), so that a service hands it what it needs (its descriptor
    /// set, its retry-safe methods, its event streams) and every clone can keep it.
    #[test]
    fn shared_depends_on_no_crate_of_the_workspace() {
        let root = include_str!("../../Cargo.toml");
        let members: Vec<&str> = dependencies(root, &["workspace.dependencies"])
            .into_iter()
            .filter(|(_, line)| line.contains("path = "))
            .map(|(name, _)| name)
            .collect();
        assert!(members.contains(&"contracts"), "{members:?}");
        let sections = ["dependencies", "dev-dependencies", "build-dependencies"];
        let ours = dependencies(include_str!("../Cargo.toml"), &sections);
        assert!(ours.len() > 10, "{ours:?}");
        for (name, line) in ours {
            assert!(!members.contains(&name), "shared depends on {name}: {line}");
        }
    }
}
