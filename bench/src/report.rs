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
    /// At 25, 50 and 75% of the baseline's throughput (or of the row's own).
    pub latencies: Vec<Latency>,
    /// Server CPU time (user + system, every server process of the scenario) per call.
    pub cpu_us_per_call: f64,
    /// Peak resident memory (`VmHWM`), summed over the scenario's server processes.
    pub peak_rss_kib: u64,
    /// Failed calls, whichever way they were seen.
    pub errors: u64,
    /// Calls of the fixed-rate runs not sent: too many unanswered already.
    pub not_sent: u64,
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

/// p50 / p90 / p99, with the rate when it is not the column's (`header`).
fn latency_cell(latency: Option<&Latency>, header: Option<&Latency>) -> String {
    let Some(l) = latency else {
        return "–".into();
    };
    let mut cell = format!("{} / {} / {}", l.p50, l.p90, l.p99);
    if header.is_none_or(|h| (l.rate - h.rate).abs() > 0.5) {
        let _ = write!(cell, " @ {:.0}/s", l.rate);
    }
    if l.overloaded {
        cell.push_str(" †");
    }
    cell
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
        "| scenario | req/s (closed loop) | × baseline | p50 / p90 / p99 µs @ {} | @ {} | @ {} | p99 @ 50% × baseline | server CPU µs/req | × baseline | peak RSS MiB | errors | not sent |",
        rates.first().map_or("25%", String::as_str),
        rates.get(1).map_or("50%", String::as_str),
        rates.get(2).map_or("75%", String::as_str),
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let p99_ratio = match (row.p99_at_half(), base.p99_at_half()) {
            (Some(p99), Some(base_p99)) => ratio(p99 as f64, base_p99 as f64),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {} | {:.1} | {} | {} |",
            row.name,
            row.rps,
            ratio(row.rps, base.rps),
            latency_cell(row.latencies.first(), base.latencies.first()),
            latency_cell(row.latencies.get(1), base.latencies.get(1)),
            latency_cell(row.latencies.get(2), base.latencies.get(2)),
            p99_ratio,
            row.cpu_us_per_call,
            ratio(row.cpu_us_per_call, base.cpu_us_per_call),
            row.peak_rss_kib as f64 / 1024.0,
            row.errors,
            row.not_sent,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, rps: f64, p99: u64, overloaded: bool) -> Row {
        rates_row(name, rps, p99, overloaded, [1000.0, 2000.0, 3000.0])
    }

    fn rates_row(name: &str, rps: f64, p99: u64, overloaded: bool, rates: [f64; 3]) -> Row {
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
            latencies: rates.map(latency).to_vec(),
            cpu_us_per_call: 25.0,
            peak_rss_kib: 10 * 1024,
            errors: 0,
            not_sent: 7,
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
            "| baseline | 4000 | 1.00× | 100 / 150 / 200 | 100 / 150 / 200 | 100 / 150 / 200 | 1.00× | 25.0 | 1.00× | 10.0 | 0 | 7 |"
        );
        assert!(lines[3].starts_with("| slow | 2000 | 0.50× | 100 / 150 / 300 † |"));
        assert!(lines[3].contains("| 1.50× |"));
    }

    #[test]
    fn a_row_at_its_own_rates_names_them() {
        let table = table(&[
            row("baseline", 4000.0, 200, false),
            rates_row("chain", 400.0, 300, false, [100.0, 200.0, 300.0]),
        ]);
        let chain = table.lines().nth(3).unwrap();
        assert!(
            chain.starts_with(
                "| chain | 400 | 0.10× | 100 / 150 / 300 @ 100/s | 100 / 150 / 300 @ 200/s |"
            ),
            "{chain}"
        );
    }

    #[test]
    fn no_rows_no_table() {
        assert_eq!(table(&[]), "");
    }
}
