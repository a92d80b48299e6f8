//! The `notifications` binary: the service alone, configured by environment variables.
//!
//! It subscribes to an in-process bus that nothing in this process publishes to: order
//! events reach it from the orders process once the broker (NATS JetStream, a later
//! issue) carries them. The `stack` launcher runs both in one process, on one bus.

use shared::events::{InProcessBus, ORDER_EVENTS};

#[tokio::main]
async fn main() -> Result<(), shared::Error> {
    let env = shared::Env::from_process();
    let telemetry = shared::telemetry::init(notifications::NAME, &env)?;
    let config = notifications::Config::from_env(&env)?;
    let bus = InProcessBus::new();
    let server = notifications::build(config, bus.subscribe(ORDER_EVENTS)).await?;
    server.serve(shared::shutdown::signal()).await?;
    telemetry.shutdown().await;
    Ok(())
}
