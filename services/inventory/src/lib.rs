//! The inventory service: the product catalog, stock levels and stock reservations.
//!
//! - `config.rs`: settings from the environment.
//! - `grpc.rs`: the `inventory.v1.InventoryService` handlers (the only tonic code).
//! - `domain.rs`: products, reservations and the rules requests must follow.
//! - `store.rs`: the `Store` trait (what a database must do) and its in-memory version;
//!   `store/postgres.rs` the PostgreSQL one (`migrations/`).
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
pub const NAME: &str = "inventory";

/// Builds the server and binds it. The store is PostgreSQL when `config.database` is
/// set (schema `inventory`, migrated, the demo catalog added where missing), else in
/// memory, seeded with the demo catalog.
pub async fn build(config: Config) -> Result<shared::Server, shared::Error> {
    let store: Arc<dyn store::Store> = match &config.database {
        Some(database) => {
            Arc::new(store::PgStore::connect(database, domain::demo_catalog()).await?)
        }
        None => Arc::new(store::MemoryStore::new(domain::demo_catalog())),
    };
    shared::Server::builder(NAME, &config.server)
        .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET)
        .add_service(grpc::service(store, &config.server))
        .bind()
        .await
}
