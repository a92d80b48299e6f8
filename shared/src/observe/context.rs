//! W3C trace context (`traceparent`, `tracestate`) and baggage, read from and written
//! to whatever carries them: request headers (gRPC metadata or HTTP) and an event's
//! name-value pairs. One place reads a context and one writes it.

use http::header::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry;

/// Makes `span` continue the trace whose context (`traceparent`, `tracestate`,
/// `baggage`) came in `headers`, e.g. from an HTTP client. Call it before the span is
/// first entered.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    continue_trace_from(span, &HeaderExtractor(headers));
}

/// Writes the trace context of `span` into `headers`, for the next hop to continue it.
pub fn inject_trace(span: &tracing::Span, headers: &mut HeaderMap) {
    inject_trace_into(span, &mut HeaderInjector(headers));
}

/// [`continue_trace`] for message headers as name-value pairs (an event's
/// [`headers`](crate::events::Event::headers)).
pub fn continue_trace_from_pairs(span: &tracing::Span, headers: &[(String, String)]) {
    continue_trace_from(span, &PairsExtractor(headers));
}

/// Runs `f` with the trace context that `headers` carry as the current OpenTelemetry
/// context, so that a span `f` creates while no tracing span is current (in a
/// background task) continues that trace. For work done long after the span that asked
/// for it ended: orders' outbox relay publishes an event inside the trace its writer
/// stored in the event's headers.
pub fn in_trace_from_pairs<T>(headers: &[(String, String)], f: impl FnOnce() -> T) -> T {
    if !telemetry::tracing_enabled() {
        return f();
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&PairsExtractor(headers))
    });
    let _attached = parent.attach();
    f()
}

/// [`inject_trace`] for message headers as name-value pairs: replaces the trace
/// context already there, keeps every other header.
pub fn inject_trace_into_pairs(span: &tracing::Span, headers: &mut Vec<(String, String)>) {
    inject_trace_into(span, &mut PairsInjector(headers));
}

/// The one place that reads a trace context, whatever carries it.
fn continue_trace_from(span: &tracing::Span, carrier: &dyn Extractor) {
    if telemetry::tracing_enabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(carrier)
        });
        let _ = span.set_parent(parent);
    }
}

/// The one place that writes a trace context, whatever carries it.
fn inject_trace_into(span: &tracing::Span, carrier: &mut dyn Injector) {
    if telemetry::tracing_enabled() {
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, carrier);
        });
    }
}

/// Reads the trace context from request headers (gRPC metadata or HTTP).
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes the trace context into request headers.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The names the propagators write, without copying them per call.
        const KNOWN: [&str; 3] = ["traceparent", "tracestate", "baggage"];
        let name = match KNOWN.iter().find(|known| **known == key) {
            Some(known) => Ok(http::HeaderName::from_static(known)),
            None => http::HeaderName::from_bytes(key.as_bytes()),
        };
        if let (Ok(name), Ok(value)) = (name, http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Reads the trace context from message headers given as name-value pairs; names
/// match case-insensitively, as HTTP and NATS header names do.
#[derive(Debug)]
pub struct PairsExtractor<'a>(pub &'a [(String, String)]);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Writes the trace context into message headers given as name-value pairs.
#[derive(Debug)]
pub struct PairsInjector<'a>(pub &'a mut Vec<(String, String)>);

impl Injector for PairsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), value));
    }
}
