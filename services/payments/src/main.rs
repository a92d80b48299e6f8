//! The `payments` binary: the service alone, configured by environment variables.

#[tokio::main]
async fn main() -> Result<(), shared::Error> {
    let env = shared::Env::from_process();
    let telemetry = shared::telemetry::init(payments::NAME, &env)?;
    let config = payments::Config::from_env(&env)?;
    let server = payments::build(config).await?;
    server.serve(shared::shutdown::signal()).await?;
    telemetry.shutdown().await;
    Ok(())
}
