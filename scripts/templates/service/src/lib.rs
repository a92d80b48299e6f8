//! The {{name}} service: serves items from a store (scaffolded by `make new-service`;
//! replace the example with your own rules).
//!
//! - `config.rs`: settings from the environment.
//! - `grpc.rs`: the `{{name}}.v1.{{Name}}Service` handlers (the only tonic code).
//! - `domain.rs`: items and the rules requests must follow.
//! - `store.rs`: the `Store` trait (what a database must do) and its in-memory version.
//! - `error.rs`: the one mapping from domain errors to gRPC statuses.
#![forbid(unsafe_code)]

pub mod config;
mod domain;
mod error;
mod grpc;
mod store;

use std::sync::Arc;

pub use config::Config;

/// The service's name: binary, package, image and Kubernetes name.
pub const NAME: &str = "{{name}}";

/// Builds the server on the in-memory store (with its example item) and binds it.
pub async fn build(config: Config) -> Result<shared::Server, shared::Error> {
    let store = Arc::new(store::MemoryStore::with_examples());
    shared::Server::builder(NAME, &config.server)
        .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET)
        .add_service(grpc::service(store, &config.server))
        .bind()
        .await
}
