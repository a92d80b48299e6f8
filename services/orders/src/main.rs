//! The `orders` binary: the service alone, configured by environment variables.
//!
//! Its events go to NATS JetStream when `NATS_URL` is set, where the notifications
//! process consumes them. Without it, they go to an in-process bus that nothing in this
//! process consumes; the `stack` launcher runs both in one process, on one bus.

fn main() -> Result<(), shared::Error> {
    shared::runtime::block_on(async {
        let env = shared::Env::from_process();
        let telemetry = shared::telemetry::init(orders::NAME, &env)?;
        let config = orders::Config::from_env(&env)?;
        let local = shared::events::InProcessBus::new();
        let server = orders::build(config, &local).await?;
        server.serve(shared::shutdown::signal()).await?;
        telemetry.shutdown().await;
        Ok(())
    })
}
