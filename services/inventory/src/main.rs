//! The `inventory` binary: the service alone, configured by environment variables.

fn main() -> Result<(), shared::Error> {
    shared::runtime::block_on(async {
        let env = shared::Env::from_process();
        let telemetry = shared::telemetry::init(inventory::NAME, &env)?;
        let config = inventory::Config::from_env(&env)?;
        let server = inventory::build(config).await?;
        server.serve(shared::shutdown::signal()).await?;
        telemetry.shutdown().await;
        Ok(())
    })
}
