//! The notifications service: turns order events into customer notifications, lists
//! them, and pushes new ones to the customers who are watching.
//!
//! - `config.rs`: settings from the environment.
//! - `grpc.rs`: the `notifications.v1.NotificationService` handlers (the only tonic code).
//! - `consumer.rs`: the handler of order events, run by the shared consume loop.
//! - `domain.rs`: notifications, and what each order event says to the customer.
//! - `store.rs`: the `Store` trait (what a database must do) and its in-memory version;
//!   `store/postgres.rs` the PostgreSQL one (`migrations/`).
//! - `error.rs`: the one mapping from domain errors to gRPC statuses.
#![forbid(unsafe_code)]

pub mod config;
mod consumer;
mod domain;
mod error;
mod grpc;
mod store;

#[cfg(test)]
mod jetstream_tests;

use std::sync::Arc;

use orders::events::{ORDER_EVENTS, ORDER_EVENTS_STREAM};
use shared::events::{Bus, InProcessBus};

pub use config::Config;

/// The service's name: binary, package, image and Kubernetes name.
pub const NAME: &str = "notifications";

/// Builds the server and binds it (the store is PostgreSQL when `config.database` is
/// set, schema `notifications`, else in memory), and starts consuming [`ORDER_EVENTS`]
/// as the durable consumer `notifications`: from JetStream when `NATS_URL` is set
/// (connecting first), otherwise from `local`, the in-process bus. Consuming is a
/// background task of the server: it starts when the server serves and stops when it
/// drains or stops.
pub async fn build(config: Config, local: &InProcessBus) -> Result<shared::Server, shared::Error> {
    let store: Arc<dyn store::Store> = match &config.database {
        Some(database) => Arc::new(store::PgStore::connect(database).await?),
        None => Arc::new(store::MemoryStore::default()),
    };
    let bus = Bus::connect(&config.events, NAME, &[ORDER_EVENTS_STREAM], local).await?;
    let events = bus.consumer(NAME, ORDER_EVENTS).await?;
    let server = shared::Server::builder(NAME, &config.server)
        .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET);
    let draining = server.draining();
    let handler = consumer::OrderEvents {
        store: store.clone(),
    };
    server
        .add_service(grpc::service(store, draining.clone(), &config.server))
        .spawn(
            "order events consumer",
            shared::events::consume(NAME, events, draining, handler),
        )
        .bind()
        .await
}
