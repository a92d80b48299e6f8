//! The results in Markdown: the headline (issue 19's targets) first, then every
//! table, written between the markers of `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bench::report::{self, Latency, Row};

use crate::servers::Startup;
use crate::{
    CLIENT_CONCURRENCY, Error, GATEWAY_PRODUCT, JSON_LOGS, OLD_GATEWAY_PRODUCT, SAMPLED,
    SAMPLED_OUT, SERVER_CPU,
};

/// One client's closed loop against the baseline server.
#[derive(Debug)]
pub(crate) struct ClientRun {
    pub(crate) name: &'static str,
    pub(crate) rps: f64,
    /// The driver's CPU (user + system) per call: the client's cost.
    pub(crate) cpu_us_per_call: f64,
    pub(crate) errors: u64,
}

/// Everything measured, for the report.
#[derive(Debug)]
pub(crate) struct Results {
    pub(crate) rows: Vec<Row>,
    /// The bare tonic Channel, then shared::client::channel.
    pub(crate) clients: Vec<ClientRun>,
    pub(crate) startups: Vec<Startup>,
    pub(crate) sizes: (usize, usize),
    pub(crate) spans: (u64, f64),
    pub(crate) baseline_binary: u64,
    /// The same read direct and through the gateway, at a rate every route sustains.
    pub(crate) hops: Hops,
}

/// p50 / p90 / p99 of each route of the chain at one fixed rate.
#[derive(Debug, Default)]
pub(crate) struct Hops {
    pub(crate) rate: f64,
    pub(crate) routes: Vec<(&'static str, Latency)>,
}

pub(crate) fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| format!("({program} unavailable)"))
}

pub(crate) fn machine() -> String {
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
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// The figures of issue 19's targets, first: ratios to the bare server (and the bare
/// client) measured in this run.
pub(crate) fn headline(results: &Results) -> String {
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
    let hop_p50 = |route: &str| results.hops.routes.iter().find(|(r, _)| *r == route);
    if let (Some((_, direct)), Some((_, via))) =
        (results.hops.routes.first(), hop_p50(GATEWAY_PRODUCT))
    {
        let hop = via.p50 as i64 - direct.p50 as i64;
        let mut measured = format!("{hop} µs");
        if let Some((_, old)) = hop_p50(OLD_GATEWAY_PRODUCT) {
            let _ = write!(
                measured,
                " (old build {} µs)",
                old.p50 as i64 - direct.p50 as i64
            );
        }
        line(
            &format!(
                "gateway hop (HTTP/JSON → gRPC), p50 added at 25% load ({:.0}/s)",
                results.hops.rate
            ),
            measured,
            "< 150 µs",
            hop < 150,
        );
    }
    if let (Some(new), Some(old)) = (row(GATEWAY_PRODUCT), row(OLD_GATEWAY_PRODUCT)) {
        let ratio = new.rps / old.rps;
        line(
            "gateway GET /v1/products/{sku} ÷ the old build's hand-written gateway, req/s",
            format!("{ratio:.2}× ({:.0} / {:.0})", new.rps, old.rps),
            "≥ 1.00×",
            ratio >= 1.0,
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

pub(crate) fn render(results: &Results) -> String {
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

pub(crate) const BEGIN: &str = "<!-- bench:results:begin -->";

pub(crate) const END: &str = "<!-- bench:results:end -->";

/// Replaces what lies between the markers of `doc` with `results`.
pub(crate) fn update_doc(doc: &Path, results: &str) -> Result<(), Error> {
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
