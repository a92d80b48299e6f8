//! Prometheus metrics: every call served and made (named after the OpenTelemetry RPC
//! semantic conventions) and the process itself, in one registry per process.
//!
//! - `rpc_server_call_duration_seconds{rpc_system, rpc_service, rpc_method, rpc_grpc_status_code}`:
//!   a histogram of the calls served; its `_count` is the request count and the
//!   non-zero status codes are the errors.
//! - `rpc_client_call_duration_seconds{…}`: the same for calls made to other services.
//! - `rpc_client_attempts_total{upstream}`: attempts sent to a downstream (calls and
//!   their retries); `rpc_client_retries_total{upstream}` the retries among them,
//!   `rpc_client_retries_throttled_total{upstream}` the retries the budget refused,
//!   `rpc_client_transparent_retries_total{upstream}` calls sent again at once to
//!   another address because they could not connect.
//! - `rpc_client_rejected_total{upstream, reason}`: calls failed without being sent,
//!   `reason` = `breaker_open` (UNAVAILABLE) or `bulkhead_full` (RESOURCE_EXHAUSTED).
//! - `rpc_client_breaker_state{upstream}` (0 closed, 1 half-open, 2 open) and
//!   `rpc_client_breaker_transitions_total{upstream, state}` (the state entered).
//!   `upstream` is the address as configured (`*_ADDR`).
//! - `process_*`: CPU seconds, resident and virtual memory, open file descriptors,
//!   threads and start time (Linux).
//!
//! Labels stay bounded whatever clients send, on every path (answered, shed by load
//! shedding before routing, timed out): a service this process does not serve is
//! recorded as `_OTHER`, and so is a method its services do not have. Each method's
//! series are resolved once ([`CallMetrics`]), not looked up by labels per call.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, Opts, Registry, TextEncoder,
};

pub use prometheus::{IntCounterVec, IntGaugeVec};

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
    attempts: IntCounterVec,
    retries: IntCounterVec,
    throttled: IntCounterVec,
    transparent: IntCounterVec,
    rejected: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
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
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("metric registered once");
            counter
        };
        let upstream = &["upstream"];
        let attempts = counter(
            "rpc_client_attempts_total",
            "Attempts sent to a downstream: calls and their retries.",
            upstream,
        );
        let retries = counter(
            "rpc_client_retries_total",
            "Retries sent to a downstream, by the channel or by callers that retry on their own.",
            upstream,
        );
        let throttled = counter(
            "rpc_client_retries_throttled_total",
            "Retries not sent because the downstream's retry budget was spent.",
            upstream,
        );
        let transparent = counter(
            "rpc_client_transparent_retries_total",
            "Calls sent again at once to another address because they could not connect.",
            upstream,
        );
        let rejected = counter(
            "rpc_client_rejected_total",
            "Calls failed without being sent: breaker_open or bulkhead_full.",
            &["upstream", "reason"],
        );
        let breaker_transitions = counter(
            "rpc_client_breaker_transitions_total",
            "Circuit breaker state changes, by the state entered.",
            &["upstream", "state"],
        );
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "rpc_client_breaker_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ),
            upstream,
        )
        .expect("valid metric");
        registry
            .register(Box::new(breaker_state.clone()))
            .expect("metric registered once");
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
            attempts,
            retries,
            throttled,
            transparent,
            rejected,
            breaker_state,
            breaker_transitions,
        }
    })
}

/// The histogram series of one method on one side, resolved once: a call records into
/// its status code's series without looking labels up. Series appear on their first
/// sample, as with label lookups, so `/metrics` shows only codes that happened.
#[derive(Debug)]
pub(crate) struct CallMetrics {
    side: Side,
    service: &'static str,
    method: &'static str,
    by_code: [OnceLock<Histogram>; CODES.len()],
}

impl CallMetrics {
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// Records one finished call.
    pub(crate) fn record(&self, code: i32, duration: Duration) {
        let index = code_index(code);
        self.by_code[index]
            .get_or_init(|| {
                let metrics = metrics();
                let histogram = match self.side {
                    Side::Server => &metrics.server,
                    Side::Client => &metrics.client,
                };
                histogram.with_label_values(&["grpc", self.service, self.method, CODES[index]])
            })
            .observe(duration.as_secs_f64());
    }
}

/// The series of the method named `service/method` on `side`, made once per process
/// and kept for its life, as the registry keeps its series. Callers pass names from a
/// bounded set: the methods a server serves (or `_OTHER`), the methods our generated
/// clients call. Finding one already made takes a read lock and allocates nothing.
pub(crate) fn call_metrics(side: Side, name: &str) -> &'static CallMetrics {
    use std::collections::HashMap;
    use std::sync::{PoisonError, RwLock};
    type Known = RwLock<HashMap<&'static str, &'static CallMetrics>>;
    static KNOWN: [OnceLock<Known>; 2] = [OnceLock::new(), OnceLock::new()];
    let known = KNOWN[side as usize].get_or_init(Known::default);
    let found = known
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
        .copied();
    if let Some(found) = found {
        return found;
    }
    let mut known = known.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = known.get(name) {
        return found;
    }
    let name: &'static str = Box::leak(Box::from(name));
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let made: &'static CallMetrics = Box::leak(Box::new(CallMetrics {
        side,
        service,
        method,
        by_code: Default::default(),
    }));
    known.insert(name, made);
    made
}

/// Records one finished call (for callers that have no [`CallMetrics`]).
#[cfg(test)]
fn record_call(side: Side, service: &str, method: &str, code: i32, duration: Duration) {
    call_metrics(side, &format!("{service}/{method}")).record(code, duration);
}

/// The attempts counter of `upstream`, to keep and increment per attempt.
pub(crate) fn client_attempts(upstream: &str) -> IntCounter {
    metrics().attempts.with_label_values(&[upstream])
}

pub(crate) fn client_retry(upstream: &str) {
    metrics().retries.with_label_values(&[upstream]).inc();
}

pub(crate) fn client_retry_throttled(upstream: &str) {
    metrics().throttled.with_label_values(&[upstream]).inc();
}

pub(crate) fn client_transparent_retry(upstream: &str) {
    metrics().transparent.with_label_values(&[upstream]).inc();
}

pub(crate) fn client_rejected(upstream: &str, reason: &'static str) {
    let rejected = &metrics().rejected;
    rejected.with_label_values(&[upstream, reason]).inc();
}

/// The breaker of `upstream` is in the state `value` (the gauge's) named `name`: set at
/// its creation, and on each change.
pub(crate) fn client_breaker_state(upstream: &str, value: i64, name: &str, changed: bool) {
    let metrics = metrics();
    metrics
        .breaker_state
        .with_label_values(&[upstream])
        .set(value);
    if changed {
        metrics
            .breaker_transitions
            .with_label_values(&[upstream, name])
            .inc();
    }
}

/// The labels of the gRPC status codes (0 to 16), without formatting on the hot path.
const CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];
const UNKNOWN: usize = 2;

/// The index in [`CODES`] of `code`; a code outside them counts as UNKNOWN.
fn code_index(code: i32) -> usize {
    usize::try_from(code)
        .ok()
        .filter(|&i| i < CODES.len())
        .unwrap_or(UNKNOWN)
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

/// A gauge family of a service's own, registered as [`counter`] is: once per name,
/// label values from a fixed set.
pub fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    metrics()
        .registry
        .register(Box::new(gauge.clone()))
        .expect("metric registered once");
    gauge
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
        assert_eq!(CODES[code_index(0)], "0");
        assert_eq!(CODES[code_index(16)], "16");
        assert_eq!(CODES[code_index(17)], "2");
        assert_eq!(CODES[code_index(-1)], "2");
    }
}
