//! `cargo run -p stack`: the whole system in one process on the local ports.

fn main() -> Result<(), shared::Error> {
    shared::runtime::block_on(async {
        let env = shared::Env::from_process();
        let telemetry = shared::telemetry::init("stack", &env)?;
        let stack = stack::Stack::bind(&env, &stack::Ports::local(&env)).await?;
        println!("{}", stack.banner());
        stack.serve(shared::shutdown::signal()).await?;
        telemetry.shutdown().await;
        Ok(())
    })
}
