//! The `orders` binary: the service alone, configured by environment variables.
//!
//! Its events go to an in-process bus that nothing in this process consumes: carrying
//! them to the notifications process needs the broker (NATS JetStream), a later issue.
//! The `stack` launcher runs both in one process, connected by one bus.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), shared::Error> {
    let env = shared::Env::from_process();
    let telemetry = shared::telemetry::init(orders::NAME, &env)?;
    let config = orders::Config::from_env(&env)?;
    let events = Arc::new(shared::events::InProcessBus::new());
    let server = orders::build(config, events).await?;
    server.serve(shared::shutdown::signal()).await?;
    telemetry.shutdown().await;
    Ok(())
}
