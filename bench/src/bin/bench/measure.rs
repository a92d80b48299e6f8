//! One scenario: its closed-loop throughput (h2load, or the harness's own loop), then
//! its latencies at fixed rates, with the servers' CPU time per call and errors seen
//! on either side.

use std::net::SocketAddr;
use std::time::Duration;

use bench::loadgen::{self, Outcome, Target};
use bench::report::{Latency, Row};
use bench::{h2load, procfs};

use crate::calls::{scrape_metrics, server_errors};
use crate::servers::Server;
use crate::{Error, LOAD_FRACTIONS, WARMUP};

/// The fixed rates of a scenario's latency runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rates<'a> {
    /// These (the baseline's [`LOAD_FRACTIONS`]).
    Given(&'a [f64]),
    /// [`LOAD_FRACTIONS`] of the scenario's own closed-loop throughput.
    Own,
}

/// How a scenario's closed-loop throughput is measured.
#[derive(Debug)]
pub(crate) enum Closed {
    /// h2load with these arguments (the duration and URL are added).
    H2load(Vec<String>),
    /// The harness's own closed loop (unique idempotency keys).
    Loadgen(usize),
}

#[derive(Debug)]
pub(crate) struct Scenario<'a> {
    pub(crate) name: &'a str,
    pub(crate) servers: Vec<&'a Server>,
    pub(crate) closed: Closed,
    pub(crate) url: String,
    pub(crate) target: Target,
}

pub(crate) fn cpu_seconds(servers: &[&Server]) -> Result<f64, Error> {
    servers
        .iter()
        .map(|s| procfs::cpu_seconds(s.pid()).map_err(Error::from))
        .sum()
}

/// Runs the closed loop, then the open loop at each of `rates`.
pub(crate) async fn measure(
    scenario: Scenario<'_>,
    rates: Rates<'_>,
    measure: Duration,
) -> Result<Row, Error> {
    let name = scenario.name;
    println!("bench: {name}");
    // Fails on any grpc-status but 0 or an unexpected HTTP status.
    scenario
        .target
        .call()
        .await
        .map_err(|e| format!("{name}: the sample call failed: {e}"))?;
    let admins: Vec<SocketAddr> = scenario.servers.iter().filter_map(|s| s.admin).collect();
    let scraper = scrape_metrics(admins.clone());
    let errors_before = server_errors(&admins).await;

    let (rps, calls, mut errors) = match &scenario.closed {
        Closed::H2load(args) => {
            let run = |secs: Duration| {
                let mut all = args.clone();
                all.extend([
                    "-D".into(),
                    secs.as_secs().to_string(),
                    scenario.url.clone(),
                ]);
                all
            };
            // Warm-up apart, so that the CPU time below covers the measured run only.
            let warm = run(WARMUP);
            tokio::task::spawn_blocking(move || h2load::run(&warm)).await??;
            let cpu = cpu_seconds(&scenario.servers)?;
            let measured = run(measure);
            let summary = tokio::task::spawn_blocking(move || h2load::run(&measured)).await??;
            let cpu = cpu_seconds(&scenario.servers)? - cpu;
            (
                summary.requests_per_second,
                (summary.succeeded, cpu),
                summary.failed,
            )
        }
        Closed::Loadgen(concurrency) => {
            loadgen::closed_loop(&scenario.target, *concurrency, Duration::ZERO, WARMUP).await;
            let cpu = cpu_seconds(&scenario.servers)?;
            let outcome =
                loadgen::closed_loop(&scenario.target, *concurrency, Duration::ZERO, measure).await;
            let cpu = cpu_seconds(&scenario.servers)? - cpu;
            report_first_error(name, "closed loop", &outcome);
            (outcome.rate, (outcome.ok, cpu), outcome.errors)
        }
    };
    let (ok_calls, cpu) = calls;
    let rates: Vec<f64> = match rates {
        Rates::Given(rates) => rates.to_vec(),
        Rates::Own => LOAD_FRACTIONS.iter().map(|f| f * rps).collect(),
    };
    let mut latencies = Vec::new();
    let mut not_sent = 0;
    for rate in rates {
        let driver_cpu = procfs::cpu_seconds(std::process::id())?;
        let outcome = loadgen::open_loop(&scenario.target, rate, WARMUP, measure).await;
        // The load core's share this process used: near 100%, the generator (not
        // the server) limits the run, and its latencies say so.
        let driver_busy = (procfs::cpu_seconds(std::process::id())? - driver_cpu)
            / (WARMUP + measure).as_secs_f64();
        report_first_error(name, &format!("{rate:.0}/s"), &outcome);
        println!(
            "bench:   {rate:.0}/s: p50/p99 {} / {} µs, {} errors, {} not sent (in flight \
             bound), load generator {:.0}% of its core",
            outcome.quantile_us(0.5),
            outcome.quantile_us(0.99),
            outcome.errors,
            outcome.not_sent,
            driver_busy * 100.0
        );
        errors += outcome.errors;
        not_sent += outcome.not_sent;
        latencies.push(Latency {
            rate,
            p50: outcome.quantile_us(0.5),
            p90: outcome.quantile_us(0.9),
            p99: outcome.quantile_us(0.99),
            overloaded: rate > rps,
        });
    }
    scraper.abort();
    // Saturating: a scrape that failed (an overloaded admin port) reads as 0.
    errors += server_errors(&admins).await.saturating_sub(errors_before);
    let peak_rss_kib = scenario
        .servers
        .iter()
        .map(|s| procfs::status_kib(s.pid(), "VmHWM"))
        .sum::<Result<u64, _>>()?;
    let row = Row {
        name: name.to_owned(),
        rps,
        latencies,
        cpu_us_per_call: cpu * 1e6 / ok_calls.max(1) as f64,
        peak_rss_kib,
        errors,
        not_sent,
    };
    println!(
        "bench:   {:.0} req/s, {:.1} µs CPU/req, p50/p99 at 50%: {} / {} µs",
        row.rps, row.cpu_us_per_call, row.latencies[1].p50, row.latencies[1].p99
    );
    Ok(row)
}

pub(crate) fn report_first_error(name: &str, run: &str, outcome: &Outcome) {
    if let Some(error) = &outcome.first_error {
        eprintln!(
            "bench: {name}, {run}: {} errors, the first: {error}",
            outcome.errors
        );
    }
}
