//! The payments service: charges cards, refunds, and keeps a record of every payment.
//!
//! - `config.rs`: settings from the environment.
//! - `grpc.rs`: the `payments.v1.PaymentService` handlers (the only tonic code).
//! - `domain.rs`: payments, how a charge is authorized (at most once, resumed if its
//!   process dies), the rules requests must follow, and the `Store` trait it needs
//!   (what a database must do).
//! - `authorizer.rs`: the port where a card provider plugs in, and the test network.
//! - `store.rs`: the in-memory `Store`; `store/postgres.rs` the PostgreSQL one
//!   (`migrations/`).
//! - `error.rs`: the one mapping from domain errors to gRPC statuses.
#![forbid(unsafe_code)]

pub mod authorizer;
pub mod config;
mod domain;
mod error;
mod grpc;
mod store;

use std::sync::Arc;

pub use config::Config;

/// The service's name: binary, package, image and Kubernetes name.
pub const NAME: &str = "payments";

/// Builds the server over the test card network and binds it: [`build_with`].
pub async fn build(config: Config) -> Result<shared::Server, shared::Error> {
    build_with(config, Arc::new(authorizer::TestCardNetwork::default())).await
}

/// Builds the server and binds it, authorizing cards with `authorizer` (where a real
/// provider plugs in). The store is PostgreSQL when `config.database` is set (schema
/// `payments`, migrated at start-up), else in memory. Authorizations that a dead
/// process left pending are resumed periodically until the server drains.
pub async fn build_with(
    config: Config,
    authorizer: Arc<dyn authorizer::Authorizer>,
) -> Result<shared::Server, shared::Error> {
    let store: Arc<dyn domain::Store> = match &config.database {
        Some(database) => Arc::new(store::PgStore::connect(database).await?),
        None => Arc::new(store::MemoryStore::default()),
    };
    let payments = Arc::new(domain::Payments::new(
        store,
        authorizer,
        config.authorization,
    ));
    let server = shared::Server::builder(NAME, &config.server)
        .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET);
    let draining = server.draining();
    server
        .add_service(grpc::service(payments.clone(), &config.server))
        .spawn(
            "authorization resumption",
            payments.resume_stalled(draining),
        )
        .bind()
        .await
}
