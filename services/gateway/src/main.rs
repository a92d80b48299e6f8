//! The `gateway` binary: the service alone, configured by environment variables.

fn main() -> Result<(), shared::Error> {
    shared::runtime::block_on(async {
        let env = shared::Env::from_process();
        let telemetry = shared::telemetry::init(gateway::NAME, &env)?;
        let config = gateway::Config::from_env(&env)?;
        let server = gateway::build(config).await?;
        server.serve(shared::shutdown::signal()).await?;
        telemetry.shutdown().await;
        Ok(())
    })
}
