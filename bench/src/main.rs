//! `bench`: the driver of `make bench` (`scripts/bench.sh` builds, then runs it pinned
//! to the load core). In one run, side by side, it measures:
//!
//! 1. the bare tonic baseline (`baseline`), the ceiling;
//! 2. inventory's GetProduct with everything `shared` adds, tracing sampled out, then
//!    100% sampled and exported to the OTLP sink, `/metrics` scraped every second;
//! 3. the gateway's reads (→ inventory, → orders) and PlaceOrder end to end;
//! 4. a Python grpc.aio server of the same GetProduct (`bench/peer.py`);
//!
//! then each service's start-up time to SERVING, idle RSS and binary size. Servers
//! run on [`SERVER_CPU`]; this process, h2load and the sink on the core it was
//! started on. Results go to stdout and, with `--doc`, between the markers of
//! `docs/benchmarks.md`.
//!
//! Options: `--bin-dir DIR` (release binaries), `--python PATH`, `--peer PATH`,
//! `--doc PATH`, `--logs DIR` (server output and `pids`), `--seconds N` (per run).

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::loadgen::{self, Outcome, Target};
use bench::report::{self, Latency, Row};
use bench::{baseline, frame, h2load, procfs, sink::Sink};
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::inventory::v1::{GetProductRequest, RestockProductsRequest};
use http_body_util::{BodyExt as _, Full};
use prost::Message as _;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

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
/// Instead of a sampler: `OTEL_SDK_DISABLED=true`, no tracing layer at all.
const SDK_DISABLED: &str = "sdk_disabled";
/// The services: every folder of `services/` (the driver runs at the repository's
/// root), upstreams first: orders calls the others, the gateway calls orders.
fn services() -> Result<Vec<String>, Error> {
    let mut names: Vec<String> = std::fs::read_dir("services")?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort_by_key(|name| {
        let rank = match name.as_str() {
            "orders" => 1,
            "gateway" => 2,
            _ => 0,
        };
        (rank, name.clone())
    });
    Ok(names)
}

/// `<NAME>_ADDR` of every running service: the upstream variables of the next one
/// (each service reads those it needs).
fn upstreams(running: &[Server]) -> Vec<(String, String)> {
    running
        .iter()
        .map(|s| (format!("{}_ADDR", s.name.to_uppercase()), s.uri()))
        .collect()
}

#[derive(Debug)]
struct Args {
    bin_dir: PathBuf,
    /// An older build of the services (`--old-bin-dir`): its inventory is measured
    /// in the same run, right after the current one, for a before/after comparison.
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

/// A server process on [`SERVER_CPU`], killed when dropped (also on error or panic).
#[derive(Debug)]
struct Server {
    name: String,
    child: Child,
    started: Instant,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> Result<SocketAddr, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts processes and remembers their ids in `<logs>/pids`, so that the script
/// can kill what is left should this process die without unwinding.
#[derive(Clone, Debug)]
struct Launcher {
    logs: PathBuf,
    bin_dir: PathBuf,
    otlp: String,
}

impl Launcher {
    fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        addr: SocketAddr,
        admin: Option<SocketAddr>,
    ) -> Result<Server, Error> {
        let log = std::fs::File::create(self.logs.join(format!("{name}.log")))?;
        let started = Instant::now();
        let child = Command::new("taskset")
            .args(["-c", SERVER_CPU])
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut pids = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join("pids"))?;
        std::io::Write::write_all(&mut pids, format!("{}\n", child.id()).as_bytes())?;
        Ok(Server {
            name: name.to_owned(),
            child,
            started,
            addr,
            admin,
        })
    }

    /// Service binary `name` on free ports, logs at info in `log_format` (`text`, the
    /// default, or `json` as in k8s/base), spans to the sink as `sampler` (an
    /// `OTEL_TRACES_SAMPLER`) decides, or no tracing at all with [`SDK_DISABLED`].
    fn service(
        &self,
        name: &str,
        sampler: &str,
        log_format: &str,
        upstreams: &[(String, String)],
    ) -> Result<Server, Error> {
        let (addr, admin) = (free_addr()?, free_addr()?);
        let mut env = vec![
            ("LISTEN_ADDR", addr.to_string()),
            ("ADMIN_LISTEN_ADDR", admin.to_string()),
            ("LOG_FORMAT", log_format.to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp.clone()),
            // The load generator is one client at thousands of requests per second:
            // the gateway's limit per client (read by it alone) would measure itself.
            ("GATEWAY_RATE_LIMIT", "0".to_owned()),
        ];
        if sampler == SDK_DISABLED {
            env.push(("OTEL_SDK_DISABLED", "true".to_owned()));
        } else {
            env.push(("OTEL_TRACES_SAMPLER", sampler.to_owned()));
        }
        env.extend(upstreams.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let program = self.bin_dir.join(name);
        self.spawn(name, &program, &[], &env, addr, Some(admin))
    }
}

/// Polls (every millisecond) until `server` answers as ready; returns the time since
/// it was spawned. gRPC services: health `Check` SERVING; the gateway: `/readyz` 200;
/// the baseline and the peer (no health service): a successful GetProduct.
async fn wait_ready(server: &Server) -> Result<Duration, Error> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = match server.name.as_str() {
            "gateway" => http_status(&format!("{}/readyz", server.uri()))
                .await
                .is_ok_and(|s| s == 200),
            "baseline" | "python" => get_product_size(&server.uri()).await.is_ok(),
            _ => serving(&server.uri()).await,
        };
        if ready {
            return Ok(server.started.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} not ready within {PATIENCE:?}; see its log in target/bench/",
                server.name
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serving(uri: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(uri.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32)
}

async fn http_status(uri: &str) -> Result<u16, Error> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let response = client.get(uri.parse()?).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

/// One GetProduct of [`baseline::SKU`]: the encoded size of the response, after
/// checking its grpc-status is 0 (tonic turns any other status into an error).
async fn get_product_size(uri: &str) -> Result<usize, Error> {
    let mut client = InventoryServiceClient::connect(uri.to_owned()).await?;
    let response = client
        .get_product(GetProductRequest {
            sku: baseline::SKU.into(),
        })
        .await?;
    Ok(response.get_ref().encoded_len())
}

/// Gives inventory stock for every order the run can place: 1000 deliveries of the
/// largest quantity allowed, through the client-streaming RestockProducts.
async fn restock(uri: &str) -> Result<(), Error> {
    let mut client = InventoryServiceClient::connect(uri.to_owned()).await?;
    let deliveries = (0..1000).map(|_| RestockProductsRequest {
        sku: baseline::SKU.into(),
        quantity: 10_000,
    });
    client
        .restock_products(tokio_stream::iter(deliveries))
        .await?;
    Ok(())
}

/// Places one order through the gateway; returns its path (`Location`).
async fn place_one_order(gateway: &str) -> Result<String, Error> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let body = serde_json::json!({
        "customerId": "bench",
        "items": [{ "sku": baseline::SKU, "quantity": 1 }],
        "cardToken": "tok_visa",
    });
    let request = http::Request::post(format!("{gateway}/v1/orders"))
        .header("content-type", "application/json")
        .header("idempotency-key", "bench-first-order")
        .body(Full::new(bytes::Bytes::from(body.to_string())))?;
    let response = client.request(request).await?;
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = response.status();
    response.into_body().collect().await?;
    location.ok_or_else(|| format!("POST /v1/orders answered {status} with no Location").into())
}

/// Scrapes `/metrics` of every admin address once a second, as Prometheus would
/// (more often than its usual 15 s), until aborted.
fn scrape_metrics(admins: Vec<SocketAddr>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            for admin in &admins {
                let _ = http_status(&format!("http://{admin}/metrics")).await;
            }
        }
    })
}

/// Server calls that ended with a grpc-status other than 0, from the services' own
/// `rpc_server_call_duration_seconds_count` series.
async fn server_errors(admins: &[SocketAddr]) -> u64 {
    let mut errors = 0;
    for admin in admins {
        let Ok(text) = http_text(&format!("http://{admin}/metrics")).await else {
            continue;
        };
        errors += text
            .lines()
            .filter(|l| l.starts_with("rpc_server_call_duration_seconds_count{"))
            .filter(|l| !l.contains("rpc_grpc_status_code=\"0\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    errors
}

async fn http_text(uri: &str) -> Result<String, Error> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let body = client
        .get(uri.parse()?)
        .await?
        .into_body()
        .collect()
        .await?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// The fixed rates of a scenario's latency runs.
#[derive(Clone, Copy, Debug)]
enum Rates<'a> {
    /// These (the baseline's [`LOAD_FRACTIONS`]).
    Given(&'a [f64]),
    /// [`LOAD_FRACTIONS`] of the scenario's own closed-loop throughput.
    Own,
}

/// How a scenario's closed-loop throughput is measured.
#[derive(Debug)]
enum Closed {
    /// h2load with these arguments (the duration and URL are added).
    H2load(Vec<String>),
    /// The harness's own closed loop (unique idempotency keys).
    Loadgen(usize),
}

#[derive(Debug)]
struct Scenario<'a> {
    name: &'a str,
    servers: Vec<&'a Server>,
    closed: Closed,
    url: String,
    target: Target,
}

fn cpu_seconds(servers: &[&Server]) -> Result<f64, Error> {
    servers
        .iter()
        .map(|s| procfs::cpu_seconds(s.pid()).map_err(Error::from))
        .sum()
}

/// Runs the closed loop, then the open loop at each of `rates`.
async fn measure(
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

fn report_first_error(name: &str, run: &str, outcome: &Outcome) {
    if let Some(error) = &outcome.first_error {
        eprintln!(
            "bench: {name}, {run}: {} errors, the first: {error}",
            outcome.errors
        );
    }
}

/// What the start-up part measured of one service.
#[derive(Debug)]
struct Startup {
    name: String,
    to_serving: Duration,
    idle_rss_kib: u64,
    threads: u64,
    binary_bytes: u64,
}

/// Starts each service alone on the server core (upstreams first, so that the
/// gateway's `/readyz` can succeed), times it to SERVING, then reads its idle RSS.
async fn startups(launcher: &Launcher) -> Result<Vec<Startup>, Error> {
    let mut running: Vec<Server> = Vec::new();
    let mut results = Vec::new();
    for name in services()? {
        let server =
            launcher.service(&name, "parentbased_always_on", "json", &upstreams(&running))?;
        let to_serving = wait_ready(&server).await?;
        running.push(server);
        results.push((name, to_serving));
    }
    // Idle: started, served their readiness checks, nothing since.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut startups = Vec::new();
    for ((name, to_serving), server) in results.into_iter().zip(&running) {
        startups.push(Startup {
            binary_bytes: std::fs::metadata(launcher.bin_dir.join(&name))?.len(),
            name,
            to_serving,
            idle_rss_kib: procfs::status_kib(server.pid(), "VmRSS")?,
            threads: procfs::threads(server.pid())?,
        });
    }
    Ok(startups)
}

/// One client's closed loop against the baseline server.
#[derive(Debug)]
struct ClientRun {
    name: &'static str,
    rps: f64,
    /// The driver's CPU (user + system) per call: the client's cost.
    cpu_us_per_call: f64,
    errors: u64,
}

/// Everything measured, for the report.
#[derive(Debug)]
struct Results {
    rows: Vec<Row>,
    /// The bare tonic Channel, then shared::client::channel.
    clients: Vec<ClientRun>,
    startups: Vec<Startup>,
    sizes: (usize, usize),
    spans: (u64, f64),
    baseline_binary: u64,
    /// The same read direct and through the gateway, at a rate every route sustains.
    hops: Hops,
}

/// p50 / p90 / p99 of each route of the chain at one fixed rate.
#[derive(Debug, Default)]
struct Hops {
    rate: f64,
    routes: Vec<(&'static str, Latency)>,
}

async fn run(args: &Args) -> Result<Results, Error> {
    std::fs::create_dir_all(&args.logs)?;
    let _ = std::fs::remove_file(args.logs.join("pids"));
    let sink = Sink::start()?;
    let launcher = Launcher {
        logs: args.logs.clone(),
        bin_dir: args.bin_dir.clone(),
        otlp: sink.endpoint(),
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
            name: "gateway → inventory: GET /v1/products/{sku}",
            servers: vec![gateway, inventory],
            closed: Closed::H2load(http1()),
            target: Target::http_get(product_url.parse()?),
            url: product_url,
        },
        Scenario {
            name: "gateway → orders: GET /v1/orders/{id}",
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
    // 25% of baseline can overload the gateway on a busy machine: the hops are also
    // compared at 25% of the slower gateway route's own throughput.
    let slowest = rows[rows.len() - 3..rows.len() - 1]
        .iter()
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
            "gateway → inventory: GET /v1/products/{sku}",
            Target::http_get(format!("{}/v1/products/{}", gateway.uri(), baseline::SKU).parse()?),
        ),
        (
            "gateway → orders: GET /v1/orders/{id}",
            Target::http_get(format!("{}{order_path}", gateway.uri()).parse()?),
        ),
    ] {
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

/// Every server call the service counted (any method, any status).
async fn server_calls(admin: SocketAddr) -> u64 {
    let Ok(text) = http_text(&format!("http://{admin}/metrics")).await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("rpc_server_call_duration_seconds_count{"))
        .filter(|l| l.contains("GetProduct"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| format!("({program} unavailable)"))
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
    format!(
        "{cpus} CPUs (`nproc --all`: {}), {model}; Linux {}; {}",
        command_output("nproc", &["--all"]),
        command_output("uname", &["-r"]),
        command_output("rustc", &["-V"]),
    )
}

/// A `×` comparison against a target, with its verdict.
fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// The figures of issue 19's targets, first: ratios to the bare server (and the bare
/// client) measured in this run.
fn headline(results: &Results) -> String {
    let rows = &results.rows;
    let row = |name: &str| rows.iter().find(|r| r.name == name);
    let base = &rows[0];
    let mut out = String::from(
        "| headline, all from this run | measured | target | verdict |\n|---|--:|--:|---|\n",
    );
    let mut line = |what: &str, measured: String, target: &str, met: bool| {
        let _ = writeln!(out, "| {what} | {measured} | {target} | {} |", verdict(met));
    };
    for (name, what, target) in [
        (
            SAMPLED_OUT,
            "GetProduct, default config (sampled out) ÷ bare tonic, req/s",
            0.85,
        ),
        (
            JSON_LOGS,
            "GetProduct, LOG_FORMAT=json ÷ bare tonic, req/s",
            0.85,
        ),
        (
            SAMPLED,
            "GetProduct, 100% sampled, OTLP export ÷ bare tonic, req/s",
            0.75,
        ),
    ] {
        let ratio = row(name).map_or(0.0, |r| r.rps / base.rps);
        let mut measured = format!("{ratio:.2}×");
        if let Some(old) = row(&format!("OLD BUILD: {name}")) {
            let _ = write!(measured, " (old build {:.2}×)", old.rps / base.rps);
        }
        line(what, measured, &format!("≥ {target:.2}×"), ratio >= target);
    }
    if let (Some(p99), Some(base_p99)) = (
        row(SAMPLED_OUT).and_then(Row::p99_at_half),
        base.p99_at_half(),
    ) {
        let ratio = p99 as f64 / base_p99.max(1) as f64;
        let mut measured = format!("{ratio:.2}× ({p99} / {base_p99} µs)");
        if let Some(r) = row(SAMPLED_OUT).filter(|r| r.not_sent > 0) {
            let _ = write!(
                measured,
                "; {} calls not sent (in flight bound)",
                r.not_sent
            );
        }
        line(
            "p99 at 50% of bare saturation (default config) ÷ bare p99",
            measured,
            "≤ 1.30×",
            ratio <= 1.3,
        );
    }
    if let (Some((_, direct)), Some((_, via))) =
        (results.hops.routes.first(), results.hops.routes.get(1))
    {
        let hop = via.p50 as i64 - direct.p50 as i64;
        line(
            &format!(
                "gateway hop (HTTP/JSON → gRPC), p50 added at 25% load ({:.0}/s)",
                results.hops.rate
            ),
            format!("{hop} µs"),
            "< 150 µs",
            hop < 150,
        );
    }
    if let [bare, ours, ..] = &results.clients[..] {
        let ratio = ours.rps / bare.rps;
        line(
            "shared::client::channel ÷ bare tonic Channel, calls/s (client CPU/call)",
            format!(
                "{ratio:.2}× ({:.2}×)",
                ours.cpu_us_per_call / bare.cpu_us_per_call
            ),
            "≥ 0.85×",
            ratio >= 0.85,
        );
    }
    out.push('\n');
    out
}

fn render(results: &Results) -> String {
    let rows = &results.rows;
    let row = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    let mut out = headline(results);
    let _ = writeln!(out, "Machine: {}.", machine());
    let _ = writeln!(
        out,
        "Run: `make bench` ({}), servers on CPU {SERVER_CPU}, load generators on the other; \
         response sizes: baseline {} B, inventory {} B.\n",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        results.sizes.0,
        results.sizes.1,
    );
    out.push_str(&report::table(rows));
    let _ = writeln!(
        out,
        "\n† fixed rate above the scenario's closed-loop throughput: the queue grows for \
         the whole run, so these latencies measure the overload. The GetProduct rows \
         are loaded at 25, 50 and 75% of the baseline's throughput (the header's rates); \
         the chain and the peer at 25, 50 and 75% of their own (the rate in the cell). \
         Not sent: calls of a fixed-rate run not sent because 2000 were unanswered \
         already (the server could not keep up), not counted as errors.\n"
    );
    let _ = writeln!(
        out,
        "| client, {CLIENT_CONCURRENCY} calls in flight to the baseline | calls/s | × bare | client CPU µs/call | × bare | errors |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|");
    if let Some(bare) = results.clients.first() {
        for client in &results.clients {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.2}× | {:.1} | {:.2}× | {} |",
                client.name,
                client.rps,
                client.rps / bare.rps,
                client.cpu_us_per_call,
                client.cpu_us_per_call / bare.cpu_us_per_call,
                client.errors
            );
        }
    }
    out.push('\n');

    let base = &rows[0];
    let mut targets = Vec::new();
    if let (Some(out_row), Some(python)) = (row(SAMPLED_OUT), row("Python")) {
        let times = out_row.rps / python.rps;
        targets.push(format!(
            "≥ 12× the Python grpc.aio peer's throughput on the same core: instrumented \
             {times:.1}×, baseline {:.1}× — {}",
            base.rps / python.rps,
            verdict(times >= 12.0)
        ));
    }
    let max_rss = results
        .startups
        .iter()
        .map(|s| s.idle_rss_kib)
        .max()
        .unwrap_or(0);
    targets.push(format!(
        "Idle RSS < 15 MiB per service: at most {:.1} MiB — {}",
        max_rss as f64 / 1024.0,
        verdict(max_rss < 15 * 1024)
    ));
    let slowest = results
        .startups
        .iter()
        .map(|s| s.to_serving)
        .max()
        .unwrap_or_default();
    targets.push(format!(
        "Start to SERVING < 200 ms: at most {:.0} ms — {}",
        slowest.as_secs_f64() * 1e3,
        verdict(slowest < Duration::from_millis(200))
    ));
    let _ = writeln!(out, "Targets:\n");
    for target in targets {
        let _ = writeln!(out, "- {target}");
    }
    let (spans, per_call) = results.spans;
    let _ = writeln!(
        out,
        "\nThe 100%-sampled run delivered {spans} spans to the sink, {per_call:.2} per GetProduct \
         call counted by the service (the server span and the handler's span: 2.00 means \
         none was dropped).\n"
    );

    let _ = writeln!(
        out,
        "| route, at {:.0}/s (25% of the slower gateway route) | p50 µs | p90 µs | p99 µs | p50 − direct µs |",
        results.hops.rate
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|");
    let direct_p50 = results.hops.routes.first().map_or(0, |(_, l)| l.p50) as i64;
    for (route, l) in &results.hops.routes {
        let _ = writeln!(
            out,
            "| {route} | {} | {} | {} | {} |",
            l.p50,
            l.p90,
            l.p99,
            l.p50 as i64 - direct_p50
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "| service | start → SERVING ms | idle RSS MiB | threads | release binary MiB |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|");
    for s in &results.startups {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} | {:.1} |",
            s.name,
            s.to_serving.as_secs_f64() * 1e3,
            s.idle_rss_kib as f64 / 1024.0,
            s.threads,
            s.binary_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    let _ = writeln!(
        out,
        "| (baseline) | – | – | – | {:.1} |",
        results.baseline_binary as f64 / (1024.0 * 1024.0)
    );
    out
}

const BEGIN: &str = "<!-- bench:results:begin -->";
const END: &str = "<!-- bench:results:end -->";

/// Replaces what lies between the markers of `doc` with `results`.
fn update_doc(doc: &Path, results: &str) -> Result<(), Error> {
    let text = std::fs::read_to_string(doc)?;
    let (head, rest) = text
        .split_once(BEGIN)
        .ok_or(format!("no {BEGIN} in {}", doc.display()))?;
    let (_, tail) = rest
        .split_once(END)
        .ok_or(format!("no {END} in {}", doc.display()))?;
    std::fs::write(doc, format!("{head}{BEGIN}\n{results}{END}{tail}"))?;
    Ok(())
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
