//! `loadgen URI RATE [SECONDS]`: one fixed-rate (open-loop) run of GetProduct against
//! the gRPC server at URI, e.g. `loadgen http://127.0.0.1:50052 5000 10`, printing
//! the latency percentiles (timed from each call's intended send time) and errors.
//! Run it with `taskset` on a core the server does not use.

use std::time::Duration;

use bench::baseline::SKU;
use bench::loadgen::{Target, open_loop};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: loadgen URI RATE [SECONDS]";
    let uri = args.next().ok_or(usage)?;
    let rate: f64 = args.next().ok_or(usage)?.parse()?;
    let seconds: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let target = Target::grpc_get_product(&uri, SKU).await?;
    let outcome = open_loop(
        &target,
        rate,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
    )
    .await;
    println!(
        "{:.0} calls/s sent, {} ok, {} errors; p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        outcome.rate,
        outcome.ok,
        outcome.errors,
        outcome.quantile_us(0.5),
        outcome.quantile_us(0.9),
        outcome.quantile_us(0.99),
        outcome.quantile_us(0.999),
        outcome.histogram.max(),
    );
    if let Some(error) = outcome.first_error {
        println!("first error: {error}");
    }
    Ok(())
}
