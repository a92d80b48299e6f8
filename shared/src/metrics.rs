//! Prometheus metrics: every call served and made (named after the OpenTelemetry RPC
//! semantic conventions) and the process itself, in one registry per process.
//!
//! - `rpc_server_call_duration_seconds{rpc_system, rpc_service, rpc_method, rpc_grpc_status_code}`:
//!   a histogram of the calls served; its `_count` is the request count and the
//!   non-zero status codes are the errors.
//! - `rpc_client_call_duration_seconds{…}`: the same for calls made to other services.
//! - `process_*`: CPU seconds, resident and virtual memory, open file descriptors,
//!   threads and start time (Linux).
//!
//! Labels stay bounded whatever clients send: a service this process does not serve
//! and a method it does not know (an UNIMPLEMENTED answer) are recorded as `_OTHER`.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

pub use prometheus::IntCounterVec;

/// Which end of a call is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// Seconds; finer than the semantic conventions' defaults at the low end, where a
/// call inside a cluster usually lands.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0,
];

const LABELS: &[&str] = &[
    "rpc_system",
    "rpc_service",
    "rpc_method",
    "rpc_grpc_status_code",
];

struct Metrics {
    registry: Registry,
    server: HistogramVec,
    client: HistogramVec,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
            let histogram = HistogramVec::new(opts, LABELS).expect("valid metric definition");
            registry
                .register(Box::new(histogram.clone()))
                .expect("metric registered once");
            histogram
        };
        let server = histogram(
            "rpc_server_call_duration_seconds",
            "Duration of RPCs served, by service, method and gRPC status code.",
        );
        let client = histogram(
            "rpc_client_call_duration_seconds",
            "Duration of RPCs made to other services, by service, method and gRPC status code.",
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics registered once");
        Metrics {
            registry,
            server,
            client,
        }
    })
}

/// Records one finished call.
pub(crate) fn record_call(side: Side, service: &str, method: &str, code: i32, duration: Duration) {
    let metrics = metrics();
    let histogram = match side {
        Side::Server => &metrics.server,
        Side::Client => &metrics.client,
    };
    histogram
        .with_label_values(&["grpc", service, method, code_label(code)])
        .observe(duration.as_secs_f64());
}

/// The label of a gRPC status code (0 to 16), without formatting on the hot path.
fn code_label(code: i32) -> &'static str {
    const CODES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| CODES.get(i))
        .copied()
        .unwrap_or("2")
}

/// A counter family of a service's own, registered in the process's registry so that
/// `/metrics` shows it. Call it once per name (e.g. in a `LazyLock`): a second
/// registration of the same name panics. Keep label values to a fixed set.
pub fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter =
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    metrics()
        .registry
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
}

/// Every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&metrics().registry.gather(), &mut buffer)
        .expect("encoding to memory cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_show_up_by_labels() {
        record_call(
            Side::Server,
            "test.v1.Metrics",
            "Get",
            0,
            Duration::from_millis(3),
        );
        record_call(
            Side::Server,
            "test.v1.Metrics",
            "Get",
            5,
            Duration::from_millis(1),
        );
        record_call(
            Side::Client,
            "test.v1.Metrics",
            "Put",
            14,
            Duration::from_secs(2),
        );
        let text = render();
        let ok = r#"rpc_server_call_duration_seconds_count{rpc_grpc_status_code="0",rpc_method="Get",rpc_service="test.v1.Metrics",rpc_system="grpc"} 1"#;
        let not_found = r#"rpc_server_call_duration_seconds_count{rpc_grpc_status_code="5",rpc_method="Get",rpc_service="test.v1.Metrics",rpc_system="grpc"} 1"#;
        let client = r#"rpc_client_call_duration_seconds_bucket{rpc_grpc_status_code="14",rpc_method="Put",rpc_service="test.v1.Metrics",rpc_system="grpc",le="2.5"} 1"#;
        for line in [ok, not_found, client] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn unknown_codes_count_as_unknown() {
        assert_eq!(code_label(0), "0");
        assert_eq!(code_label(16), "16");
        assert_eq!(code_label(17), "2");
        assert_eq!(code_label(-1), "2");
    }
}
