//! `bench`: the driver of `make bench` (`scripts/bench.sh` builds, then runs it pinned
//! to the load core). In one run, side by side, it measures:
//!
//! 1. the bare tonic baseline (`baseline`), the ceiling;
//! 2. inventory's GetProduct with everything `shared` adds, tracing sampled out, then
//!    100% sampled and exported to the OTLP sink, `/metrics` scraped every second;
//! 3. the gateway's reads (→ inventory, → orders) and PlaceOrder end to end, and with
//!    `--old-bin-dir` the first read through the old build's gateway too;
//! 4. a Python grpc.aio server of the same GetProduct (`bench/peer.py`);
//!
//! then each service's start-up time to SERVING, idle RSS and binary size. Servers
//! run on [`SERVER_CPU`]; this process, h2load and the sink on the core it was
//! started on. Results go to stdout and, with `--doc`, between the markers of
//! `docs/benchmarks.md`.
//!
//! This file is the sequence of scenarios; `servers.rs` starts and stops the
//! processes, `measure.rs` runs one scenario, `calls.rs` holds the single calls
//! (readiness, set-up, scrapes) and `render.rs` the report.
//!
//! Options: `--bin-dir DIR` (release binaries), `--python PATH`, `--peer PATH`,
//! `--doc PATH`, `--logs DIR` (server output and `pids`), `--seconds N` (per run).

use std::path::PathBuf;
use std::time::Duration;

use bench::loadgen::{self, Target};
use bench::{baseline, frame, procfs, sink::Sink};
use contracts::inventory::v1::GetProductRequest;

use bench::report::Latency;
use calls::{get_product_size, place_one_order, restock, server_calls};
use measure::{Closed, Rates, Scenario, measure, report_first_error};
use render::{ClientRun, Hops, Results, headline, render, update_doc};
use servers::{Launcher, Server, free_addr, services, startups, upstreams, wait_ready};

mod calls;
mod measure;
mod render;
mod servers;

type Error = Box<dyn std::error::Error>;

/// The core the servers run on; the load generators use the core this process runs on.
const SERVER_CPU: &str = "0";

/// Fixed rates, as fractions of a closed-loop throughput: the baseline's for every
/// GetProduct server (issue 19 compares latencies at the bare server's load), each
/// route's own for the chain and the Python peer (at the bare server's rates they
/// would only measure a queue growing to the in-flight bound).
const LOAD_FRACTIONS: [f64; 3] = [0.25, 0.5, 0.75];

const WARMUP: Duration = Duration::from_secs(1);

/// Bounds every wait for a server to come up.
const PATIENCE: Duration = Duration::from_secs(20);

/// gRPC closed loop: 10 connections × 10 streams in flight, the same for every server.
/// (It was 4 × 16, under which issue 19 saw bare tonic at 54k req/s where it did
/// 98–103k under 10 × 10 on the same core; docs/benchmarks.md.)
const H2LOAD_GRPC: [&str; 4] = ["-c", "10", "-m", "10"];

/// Calls in flight in the client-channel comparison (one connection each way).
const CLIENT_CONCURRENCY: usize = 16;

/// HTTP/1.1 closed loop: 32 keep-alive connections, one request in flight each.
const H2LOAD_HTTP1: [&str; 3] = ["--h1", "-c", "32"];

/// PlaceOrder closed loop: calls in flight.
const PLACE_ORDER_CONCURRENCY: usize = 32;

/// The scenarios the headline compares with the baseline.
const SAMPLED_OUT: &str = "inventory GetProduct, default config (text logs, sampled out)";

const JSON_LOGS: &str = "inventory GetProduct, LOG_FORMAT=json, sampled out";

const SAMPLED: &str = "inventory GetProduct, 100% sampled, OTLP export";

/// The gateway's reads, and the first through the old build's gateway (`--old-bin-dir`).
const GATEWAY_PRODUCT: &str = "gateway → inventory: GET /v1/products/{sku}";
const GATEWAY_ORDER: &str = "gateway → orders: GET /v1/orders/{id}";
const OLD_GATEWAY_PRODUCT: &str = "OLD BUILD: gateway → inventory: GET /v1/products/{sku}";
/// Instead of a sampler: `OTEL_SDK_DISABLED=true`, no tracing layer at all.
const SDK_DISABLED: &str = "sdk_disabled";

#[derive(Debug)]
struct Args {
    bin_dir: PathBuf,
    /// An older build of the services (`--old-bin-dir`): its inventory and gateway are
    /// measured in the same run, right after the current ones, for a before/after comparison.
    old_bin_dir: Option<PathBuf>,
    python: PathBuf,
    peer: PathBuf,
    doc: Option<PathBuf>,
    logs: PathBuf,
    measure: Duration,
}

impl Args {
    fn parse() -> Result<Self, Error> {
        let mut args = Self {
            bin_dir: "target/release".into(),
            old_bin_dir: None,
            python: ".tools/venv/bin/python".into(),
            peer: "bench/peer.py".into(),
            doc: None,
            logs: "target/bench".into(),
            measure: Duration::from_secs(5),
        };
        let mut given = std::env::args().skip(1);
        while let Some(flag) = given.next() {
            let value = given.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--bin-dir" => args.bin_dir = value.into(),
                "--old-bin-dir" => args.old_bin_dir = Some(value.into()),
                "--python" => args.python = value.into(),
                "--peer" => args.peer = value.into(),
                "--doc" => args.doc = Some(value.into()),
                "--logs" => args.logs = value.into(),
                "--seconds" => args.measure = Duration::from_secs(value.parse()?),
                _ => return Err(format!("unknown option {flag}").into()),
            }
        }
        Ok(args)
    }
}

async fn run(args: &Args) -> Result<Results, Error> {
    std::fs::create_dir_all(&args.logs)?;
    let _ = std::fs::remove_file(args.logs.join("pids"));
    let sink = Sink::start()?;
    let launcher = Launcher {
        logs: args.logs.clone(),
        bin_dir: args.bin_dir.clone(),
        otlp: sink.endpoint(),
        old: false,
    };
    let body = args.logs.join("get-product.bin");
    std::fs::write(
        &body,
        frame::frame(&GetProductRequest {
            sku: baseline::SKU.into(),
        }),
    )?;
    let grpc_args = |extra: &[&str]| -> Vec<String> {
        H2LOAD_GRPC
            .iter()
            .chain(&[
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-d",
            ])
            .map(|s| (*s).to_owned())
            .chain([body.display().to_string()])
            .chain(extra.iter().map(|s| (*s).to_owned()))
            .collect()
    };
    let get_product_url =
        |server: &Server| format!("{}/inventory.v1.InventoryService/GetProduct", server.uri());
    let mut rows = Vec::new();

    // 1. The ceiling.
    let addr = free_addr()?;
    let base = launcher.spawn(
        "baseline",
        &args.bin_dir.join("baseline"),
        &[addr.to_string()],
        &[],
        addr,
        None,
    )?;
    wait_ready(&base).await?;
    let base_size = get_product_size(&base.uri()).await?;
    rows.push(
        measure(
            Scenario {
                name: "baseline: bare tonic GetProduct",
                servers: vec![&base],
                closed: Closed::H2load(grpc_args(&[])),
                url: get_product_url(&base),
                target: Target::grpc_get_product(&base.uri(), baseline::SKU).await?,
            },
            Rates::Own,
            args.measure,
        )
        .await?,
    );
    // 1b. The client side, against the same bare server: the driver (alone on its
    // core) keeps the same number of calls in flight through a bare tonic Channel and
    // through shared::client::channel, and measures its own CPU per call.
    let mut clients = Vec::new();
    for (name, target) in [
        (
            "bare tonic Channel",
            Target::get_product(&base.uri(), baseline::SKU).await?,
        ),
        (
            "shared::client::channel",
            Target::get_product_shared(&base.uri(), baseline::SKU)?,
        ),
    ] {
        println!("bench: client: {name}");
        loadgen::closed_loop(&target, CLIENT_CONCURRENCY, Duration::ZERO, WARMUP).await;
        let cpu = procfs::cpu_seconds(std::process::id())?;
        let outcome =
            loadgen::closed_loop(&target, CLIENT_CONCURRENCY, Duration::ZERO, args.measure).await;
        let cpu = procfs::cpu_seconds(std::process::id())? - cpu;
        report_first_error(name, "closed loop", &outcome);
        clients.push(ClientRun {
            name,
            rps: outcome.rate,
            cpu_us_per_call: cpu * 1e6 / outcome.ok.max(1) as f64,
            errors: outcome.errors,
        });
    }
    drop(base);
    let rates: Vec<f64> = rows[0].latencies.iter().map(|l| l.rate).collect();

    // 2. Inventory with everything shared adds, sampled out, then 100% exported.
    let mut real_size = 0;
    let mut spans = (0, 0.0);
    let scenarios = [
        (SAMPLED_OUT, "always_off", "text"),
        (JSON_LOGS, "always_off", "json"),
        (SAMPLED, "always_on", "text"),
        // Diagnostic: how much of 2a is the tracing layer itself.
        (
            "(inventory GetProduct, OTEL_SDK_DISABLED=true)",
            SDK_DISABLED,
            "text",
        ),
    ];
    let old_names: Vec<String> = scenarios
        .iter()
        .map(|(name, ..)| format!("OLD BUILD: {name}"))
        .collect();
    let old_runs = args.old_bin_dir.iter().flat_map(|dir| {
        scenarios
            .iter()
            .zip(&old_names)
            .map(move |(&(_, sampler, log_format), name)| {
                (name.as_str(), sampler, log_format, Some(dir))
            })
    });
    let runs: Vec<_> = scenarios
        .iter()
        .map(|&(name, sampler, log_format)| (name, sampler, log_format, None))
        .chain(old_runs)
        .collect();
    for (name, sampler, log_format, bin_dir) in runs {
        let launcher = Launcher {
            bin_dir: bin_dir.cloned().unwrap_or_else(|| launcher.bin_dir.clone()),
            old: bin_dir.is_some(),
            ..launcher.clone()
        };
        let inventory = launcher.service("inventory", sampler, log_format, &[])?;
        wait_ready(&inventory).await?;
        real_size = get_product_size(&inventory.uri()).await?;
        let spans_before = sink.spans();
        let row = measure(
            Scenario {
                name,
                servers: vec![&inventory],
                closed: Closed::H2load(grpc_args(&[])),
                url: get_product_url(&inventory),
                target: Target::grpc_get_product(&inventory.uri(), baseline::SKU).await?,
            },
            Rates::Given(&rates),
            args.measure,
        )
        .await?;
        if sampler == "always_on" && bin_dir.is_none() {
            // SIGKILL on drop would lose the last batch: wait for the exporter's
            // schedule (5 s) instead; the count is of spans received, not sent.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let received = sink.spans() - spans_before;
            // Every call of the scenario: the closed loop (h2load warm-up and run,
            // from the service's own counter) and the fixed-rate runs.
            let calls = server_calls(inventory.admin.expect("a service has an admin port")).await;
            spans = (received, received as f64 / calls.max(1) as f64);
        }
        rows.push(row);
    }

    // 3. The chain: every service, tracing sampled out as in 2a.
    let mut chain: Vec<Server> = Vec::new();
    for name in services()? {
        let server = launcher.service(&name, "always_off", "json", &upstreams(&chain))?;
        wait_ready(&server).await?;
        chain.push(server);
    }
    let find = |name: &str| {
        chain
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("no {name} in services/"))
    };
    let (inventory, orders, gateway) = (find("inventory")?, find("orders")?, find("gateway")?);
    restock(&inventory.uri()).await?;
    let order_path = place_one_order(&gateway.uri()).await?;
    let http1 = || H2LOAD_HTTP1.iter().map(|s| (*s).to_owned()).collect();
    let product_url = format!("{}/v1/products/{}", gateway.uri(), baseline::SKU);
    let order_url = format!("{}{order_path}", gateway.uri());
    let orders_url = format!("{}/v1/orders", gateway.uri());
    for scenario in [
        Scenario {
            name: GATEWAY_PRODUCT,
            servers: vec![gateway, inventory],
            closed: Closed::H2load(http1()),
            target: Target::http_get(product_url.parse()?),
            url: product_url,
        },
        Scenario {
            name: GATEWAY_ORDER,
            servers: vec![gateway, orders],
            closed: Closed::H2load(http1()),
            target: Target::http_get(order_url.parse()?),
            url: order_url,
        },
        Scenario {
            name: "PlaceOrder: gateway → orders → inventory, payments",
            servers: chain.iter().collect(),
            closed: Closed::Loadgen(PLACE_ORDER_CONCURRENCY),
            target: Target::place_order(orders_url.parse()?, baseline::SKU),
            url: orders_url,
        },
    ] {
        rows.push(measure(scenario, Rates::Own, args.measure).await?);
    }
    // The old build's gateway (its routes written by hand before issue 16) in front of
    // the same upstreams, the same read, right after.
    let old_gateway = match &args.old_bin_dir {
        Some(dir) => {
            let launcher = Launcher {
                bin_dir: dir.clone(),
                old: true,
                ..launcher.clone()
            };
            let old = launcher.service("gateway", "always_off", "json", &upstreams(&chain))?;
            wait_ready(&old).await?;
            let url = format!("{}/v1/products/{}", old.uri(), baseline::SKU);
            let scenario = Scenario {
                name: OLD_GATEWAY_PRODUCT,
                servers: vec![&old, inventory],
                closed: Closed::H2load(http1()),
                target: Target::http_get(url.parse()?),
                url,
            };
            rows.push(measure(scenario, Rates::Own, args.measure).await?);
            Some(old)
        }
        None => None,
    };
    // 25% of baseline can overload the gateway on a busy machine: the hops are also
    // compared at 25% of the slowest gateway route's own throughput.
    let slowest = rows
        .iter()
        .filter(|r| {
            [GATEWAY_PRODUCT, GATEWAY_ORDER, OLD_GATEWAY_PRODUCT].contains(&r.name.as_str())
        })
        .map(|r| r.rps)
        .fold(f64::INFINITY, f64::min);
    let hop_rate = (0.25 * slowest).max(1.0);
    println!("bench: the hops at {hop_rate:.0}/s");
    let mut hops = Hops {
        rate: hop_rate,
        routes: Vec::new(),
    };
    for (route, target) in [
        (
            "inventory GetProduct (gRPC, direct)",
            Target::grpc_get_product(&inventory.uri(), baseline::SKU).await?,
        ),
        (
            GATEWAY_PRODUCT,
            Target::http_get(format!("{}/v1/products/{}", gateway.uri(), baseline::SKU).parse()?),
        ),
        (
            GATEWAY_ORDER,
            Target::http_get(format!("{}{order_path}", gateway.uri()).parse()?),
        ),
    ]
    .into_iter()
    .chain(old_gateway.iter().map(|old| {
        let url = format!("{}/v1/products/{}", old.uri(), baseline::SKU);
        (
            OLD_GATEWAY_PRODUCT,
            Target::http_get(url.parse().expect("a URI")),
        )
    })) {
        let outcome = loadgen::open_loop(&target, hop_rate, WARMUP, args.measure).await;
        report_first_error(route, &format!("{hop_rate:.0}/s"), &outcome);
        hops.routes.push((
            route,
            Latency {
                rate: hop_rate,
                p50: outcome.quantile_us(0.5),
                p90: outcome.quantile_us(0.9),
                p99: outcome.quantile_us(0.99),
                overloaded: false,
            },
        ));
    }
    drop(old_gateway);
    drop(chain);

    // 4. The Python peer on the same core.
    let descriptors = args.logs.join("descriptors.bin");
    std::fs::write(&descriptors, contracts::FILE_DESCRIPTOR_SET)?;
    let addr = free_addr()?;
    let python = launcher.spawn(
        "python",
        &args.python,
        &[
            args.peer.display().to_string(),
            "--port".into(),
            addr.port().to_string(),
            "--descriptor-set".into(),
            descriptors.display().to_string(),
        ],
        &[],
        addr,
        None,
    )?;
    wait_ready(&python).await?;
    let python_size = get_product_size(&python.uri()).await?;
    if python_size.abs_diff(real_size) > 2 {
        return Err(
            format!("the Python peer answers {python_size} bytes, inventory {real_size}").into(),
        );
    }
    rows.push(
        measure(
            Scenario {
                name: "Python grpc.aio GetProduct (peer)",
                servers: vec![&python],
                closed: Closed::H2load(grpc_args(&[])),
                url: get_product_url(&python),
                target: Target::grpc_get_product(&python.uri(), baseline::SKU).await?,
            },
            Rates::Own,
            args.measure,
        )
        .await?,
    );
    drop(python);

    println!("bench: start-up and idle memory");
    let startups = startups(&launcher).await?;
    Ok(Results {
        rows,
        clients,
        startups,
        sizes: (base_size, real_size),
        spans,
        hops,
        baseline_binary: std::fs::metadata(args.bin_dir.join("baseline"))?.len(),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args = Args::parse()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // On a signal, `run` is dropped: every server is killed by its Drop.
    let results = tokio::select! {
        results = run(&args) => results?,
        _ = tokio::signal::ctrl_c() => return Err("interrupted".into()),
        _ = terminate.recv() => return Err("terminated".into()),
    };
    // The headline first, then everything (the headline again at its top).
    println!("\n{}", headline(&results));
    let rendered = render(&results);
    println!("{rendered}");
    if let Some(doc) = &args.doc {
        update_doc(doc, &rendered)?;
        println!("bench: results written to {}", doc.display());
    }
    Ok(())
}
