//! The `inventory` binary: the service alone, configured by environment variables.

#[tokio::main]
async fn main() -> Result<(), shared::Error> {
    let env = shared::Env::from_process();
    let telemetry = shared::telemetry::init(inventory::NAME, &env)?;
    let config = inventory::Config::from_env(&env)?;
    let server = inventory::build(config).await?;
    server.serve(shared::shutdown::signal()).await?;
    telemetry.shutdown().await;
    Ok(())
}
