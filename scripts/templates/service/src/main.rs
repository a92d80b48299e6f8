//! The `{{name}}` binary: the service alone, configured by environment variables.

#[tokio::main]
async fn main() -> Result<(), shared::Error> {
    let env = shared::Env::from_process();
    let telemetry = shared::telemetry::init({{name}}::NAME, &env)?;
    let config = {{name}}::Config::from_env(&env)?;
    let server = {{name}}::build(config).await?;
    server.serve(shared::shutdown::signal()).await?;
    telemetry.shutdown().await;
    Ok(())
}
