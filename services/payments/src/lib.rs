//! The payments service: charges cards, refunds, and keeps a record of every payment.
//!
//! - `config.rs`: settings from the environment.
//! - `grpc.rs`: the `payments.v1.PaymentService` handlers (the only tonic code).
//! - `domain.rs`: payments, the test card network, and the rules requests must follow.
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
pub const NAME: &str = "payments";

/// Builds the server and binds it. The store is PostgreSQL when `config.database` is
/// set (schema `payments`, migrated at start-up), else in memory.
pub async fn build(config: Config) -> Result<shared::Server, shared::Error> {
    let store: Arc<dyn store::Store> = match &config.database {
        Some(database) => Arc::new(store::PgStore::connect(database).await?),
        None => Arc::new(store::MemoryStore::default()),
    };
    shared::Server::builder(NAME, &config.server)
        .add_service(grpc::service(store, &config.server))
        .bind()
        .await
}
