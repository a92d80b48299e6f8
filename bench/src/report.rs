//! The results table, in Markdown, with each scenario's ratios to the baseline.

use std::fmt::Write as _;

/// Latencies of one fixed-rate run, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    /// The rate asked for, calls per second.
    pub rate: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    /// The rate is above the scenario's closed-loop throughput: the queue grows for
    /// the whole run and the latencies measure that, not the service.
    pub overloaded: bool,
}

/// One scenario's results.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    /// Closed-loop throughput, calls per second.
    pub rps: f64,
    /// At 25, 50 and 75% of the baseline's throughput.
    pub latencies: Vec<Latency>,
    /// Server CPU time (user + system, every server process of the scenario) per call.
    pub cpu_us_per_call: f64,
    /// Peak resident memory (`VmHWM`), summed over the scenario's server processes.
    pub peak_rss_kib: u64,
    /// Failed calls, whichever way they were seen.
    pub errors: u64,
}

impl Row {
    /// p99 at 50% of the baseline's throughput.
    pub fn p99_at_half(&self) -> Option<u64> {
        self.latencies.get(1).map(|l| l.p99)
    }

    /// p50 at 25% of the baseline's throughput.
    pub fn p50_at_quarter(&self) -> Option<u64> {
        self.latencies.first().map(|l| l.p50)
    }
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        "–".into()
    }
}

fn latency_cell(latency: Option<&Latency>) -> String {
    match latency {
        Some(l) => format!(
            "{} / {} / {}{}",
            l.p50,
            l.p90,
            l.p99,
            if l.overloaded { " †" } else { "" }
        ),
        None => "–".into(),
    }
}

/// The Markdown table: one line per row, ratios against `rows[0]`, the baseline.
pub fn table(rows: &[Row]) -> String {
    let Some(base) = rows.first() else {
        return String::new();
    };
    let mut out = String::new();
    let rates: Vec<String> = base
        .latencies
        .iter()
        .map(|l| format!("{:.0}/s", l.rate))
        .collect();
    let _ = writeln!(
        out,
        "| scenario | req/s (closed loop) | × baseline | p50 / p90 / p99 µs @ {} | @ {} | @ {} | p99 @ 50% × baseline | server CPU µs/req | × baseline | peak RSS MiB | errors |",
        rates.first().map_or("25%", String::as_str),
        rates.get(1).map_or("50%", String::as_str),
        rates.get(2).map_or("75%", String::as_str),
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let p99_ratio = match (row.p99_at_half(), base.p99_at_half()) {
            (Some(p99), Some(base_p99)) => ratio(p99 as f64, base_p99 as f64),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {} | {:.1} | {} |",
            row.name,
            row.rps,
            ratio(row.rps, base.rps),
            latency_cell(row.latencies.first()),
            latency_cell(row.latencies.get(1)),
            latency_cell(row.latencies.get(2)),
            p99_ratio,
            row.cpu_us_per_call,
            ratio(row.cpu_us_per_call, base.cpu_us_per_call),
            row.peak_rss_kib as f64 / 1024.0,
            row.errors,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, rps: f64, p99: u64, overloaded: bool) -> Row {
        let latency = |rate| Latency {
            rate,
            p50: 100,
            p90: 150,
            p99,
            overloaded,
        };
        Row {
            name: name.into(),
            rps,
            latencies: vec![latency(1000.0), latency(2000.0), latency(3000.0)],
            cpu_us_per_call: 25.0,
            peak_rss_kib: 10 * 1024,
            errors: 0,
        }
    }

    #[test]
    fn ratios_are_against_the_first_row_and_overload_is_marked() {
        let table = table(&[
            row("baseline", 4000.0, 200, false),
            row("slow", 2000.0, 300, true),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("@ 1000/s") && lines[0].contains("@ 3000/s"));
        assert_eq!(
            lines[2],
            "| baseline | 4000 | 1.00× | 100 / 150 / 200 | 100 / 150 / 200 | 100 / 150 / 200 | 1.00× | 25.0 | 1.00× | 10.0 | 0 |"
        );
        assert!(lines[3].starts_with("| slow | 2000 | 0.50× | 100 / 150 / 300 † |"));
        assert!(lines[3].contains("| 1.50× |"));
    }

    #[test]
    fn no_rows_no_table() {
        assert_eq!(table(&[]), "");
    }
}
