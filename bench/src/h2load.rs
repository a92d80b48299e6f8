//! Closed-loop throughput with h2load (nghttp2): a fixed number of connections and
//! streams, each sending its next request as soon as the previous one is answered.
//!
//! h2load counts HTTP statuses only; a gRPC error is HTTP 200 too. The driver checks
//! the grpc-status of the same request with a real client first, and the services'
//! own metrics after each run.

use std::process::Command;

/// What one run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub requests_per_second: f64,
    pub succeeded: u64,
    /// Failed, errored and timed-out requests, and answers other than 2xx.
    pub failed: u64,
}

/// Runs `h2load` with `args` and reads its summary.
pub fn run(args: &[String]) -> Result<Summary, String> {
    let output = Command::new("h2load")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run h2load (Debian package nghttp2-client): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "h2load {} failed ({}):\n{stdout}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse(&stdout).ok_or_else(|| format!("unexpected h2load output:\n{stdout}"))
}

/// Reads the `finished in`, `requests:` and `status codes:` lines.
pub fn parse(output: &str) -> Option<Summary> {
    let line = |prefix: &str| output.lines().find_map(|l| l.strip_prefix(prefix));
    let requests_per_second = line("finished in ")?
        .split(", ")
        .find_map(|part| part.strip_suffix(" req/s"))?
        .parse()
        .ok()?;
    // "207612 total, 207612 started, 207612 done, 207612 succeeded, 0 failed, 0 errored, 0 timeout"
    let count = |text: &str, name: &str| -> Option<u64> {
        text.split(", ")
            .find_map(|part| part.strip_suffix(name)?.trim().parse().ok())
    };
    let requests = line("requests: ")?;
    let succeeded = count(requests, " succeeded")?;
    let failed =
        count(requests, " failed")? + count(requests, " errored")? + count(requests, " timeout")?;
    let codes = line("status codes: ")?;
    let not_2xx = count(codes, " 3xx")? + count(codes, " 4xx")? + count(codes, " 5xx")?;
    Some(Summary {
        requests_per_second,
        succeeded: succeeded.saturating_sub(not_2xx),
        failed: failed + not_2xx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary() {
        let output = "\
starting benchmark...
finished in 5.00s, 41522.40 req/s, 4.47MB/s
requests: 207612 total, 207612 started, 207612 done, 207600 succeeded, 10 failed, 2 errored, 0 timeout
status codes: 207600 2xx, 0 3xx, 3 4xx, 0 5xx
traffic: 22.38MB (23467740) total
";
        assert_eq!(
            parse(output),
            Some(Summary {
                requests_per_second: 41522.40,
                succeeded: 207597,
                failed: 15,
            })
        );
    }

    #[test]
    fn rejects_other_output() {
        assert_eq!(parse("connect failed\n"), None);
    }
}
