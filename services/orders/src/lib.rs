//! The orders service: places orders through a saga over inventory and payments, and
//! answers what became of them.
//!
//! - `config.rs`: settings from the environment.
//! - `grpc.rs`: the `orders.v1.OrderService` handlers; `grpc/clients.rs` the inventory
//!   and payments clients behind the saga's ports (the only tonic code).
//! - `saga.rs`: the order flow: reserve stock, charge, commit, and what undoes each step;
//!   `saga/resume.rs` resumes the sagas a dead process left, `saga/retry.rs` how its
//!   calls are retried.
//! - `domain.rs`: orders, their states, and the rules requests must follow.
//! - `events.rs`: the `orders.v1.OrderEvent` published for each state an order reaches.
//! - `outbox.rs`: the relay that publishes the events the store recorded with each
//!   state change (the transactional outbox), and the `Outbox` trait it needs.
//! - `store.rs`: the `Store` trait (orders, their changes, saga claims) and its
//!   in-memory version; `store/postgres.rs` the PostgreSQL one (`migrations/`); both
//!   implement `Outbox`; `store/tests.rs` holds both to one contract.
//! - `error.rs`: the one mapping from domain errors to gRPC statuses.
#![forbid(unsafe_code)]

pub mod config;
mod domain;
mod error;
pub mod events;
mod grpc;
mod outbox;
mod saga;
mod store;

use std::sync::Arc;

use shared::events::{Bus, InProcessBus};

pub use config::Config;

/// The service's name: binary, package, image and Kubernetes name.
pub const NAME: &str = "orders";

/// Builds the server and binds it. The store is PostgreSQL when `config.database` is
/// set (schema `orders`, migrated at start-up), else in memory. Calls to inventory and
/// payments connect lazily, so it starts before they do. Every order state change is
/// recorded with its event, which the outbox relay publishes on
/// [`events::ORDER_EVENTS`] (starting with whatever an earlier process left
/// pending): to JetStream when `NATS_URL` is set (connecting first), otherwise to
/// `local`, the in-process bus. Orders whose saga a dead process left unfinished are
/// resumed, at start-up and then periodically. The relay and the resumption are the
/// server's background tasks: resumption stops when the drain begins, the relay after
/// its last pass, once every call and every saga of this process has ended.
pub async fn build(config: Config, local: &InProcessBus) -> Result<shared::Server, shared::Error> {
    let store: Arc<dyn store::Store> = match &config.database {
        Some(database) => Arc::new(store::PgStore::connect(database).await?),
        None => Arc::new(store::MemoryStore::default()),
    };
    let streams = [events::ORDER_EVENTS_STREAM];
    let events = Bus::connect(&config.events, NAME, &streams, local)
        .await?
        .publisher();
    let inventory = grpc::InventoryClient::new(config.inventory_addr, &config.client);
    let payments = grpc::PaymentsClient::new(config.payments_addr, &config.client);
    let saga = Arc::new(saga::Saga::new(
        store.clone(),
        Arc::new(inventory),
        Arc::new(payments),
        config.saga,
    ));
    let server = shared::Server::builder(NAME, &config.server)
        .file_descriptor_set(contracts::FILE_DESCRIPTOR_SET);
    let signals = server.signals();
    let draining = server.draining();
    // The relay's last pass waits until no saga of this process can record more.
    let sagas_ended = {
        let saga = saga.clone();
        async move {
            signals.drained().cancelled().await;
            saga.ended().await;
        }
    };
    server
        .add_service(grpc::service(
            saga.clone(),
            store.clone(),
            draining.clone(),
            &config.server,
        ))
        .spawn("saga resumption", saga.resume_stranded(draining))
        .spawn(
            "outbox relay",
            outbox::run(store, events, config.outbox, sagas_ended),
        )
        .bind()
        .await
}
