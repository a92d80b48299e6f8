//! The `notifications` binary: the service alone, configured by environment variables.
//!
//! Order events reach it from the orders process through NATS JetStream (`NATS_URL`).
//! Without it, it consumes an in-process bus that nothing in this process publishes
//! to; the `stack` launcher runs orders and notifications in one process, on one bus.

fn main() -> Result<(), shared::Error> {
    shared::runtime::block_on(async {
        let env = shared::Env::from_process();
        let telemetry = shared::telemetry::init(notifications::NAME, &env)?;
        let config = notifications::Config::from_env(&env)?;
        let local = shared::events::InProcessBus::new();
        let server = notifications::build(config, &local).await?;
        server.serve(shared::shutdown::signal()).await?;
        telemetry.shutdown().await;
        Ok(())
    })
}
