//! The `payments` binary: the service alone, configured by environment variables.

fn main() -> Result<(), shared::Error> {
    shared::runtime::block_on(async {
        let env = shared::Env::from_process();
        let telemetry = shared::telemetry::init(payments::NAME, &env)?;
        let config = payments::Config::from_env(&env)?;
        let server = payments::build(config).await?;
        server.serve(shared::shutdown::signal()).await?;
        telemetry.shutdown().await;
        Ok(())
    })
}
