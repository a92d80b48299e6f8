//! W3C trace context (`traceparent`, `tracestate`) and baggage, read from and written
//! to whatever carries them: request headers (gRPC metadata or HTTP) and an event's
//! name-value pairs. One place reads a context and one writes it.

use http::header::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};

use crate::headers::TRACE_CONTEXT;
use crate::telemetry;

/// Runs `f`, in which the first span created continues the trace whose context
/// (`traceparent`, `tracestate`, `baggage`) came in `headers`, e.g. from an HTTP
/// client, instead of the span `f` runs in: a server span.
pub fn in_trace<T>(headers: &HeaderMap, f: impl FnOnce() -> T) -> T {
    in_trace_from(&HeaderExtractor(headers), f)
}

/// Writes the trace context of `span` into `headers`, for the next hop to continue it.
pub fn inject_trace(span: &tracing::Span, headers: &mut HeaderMap) {
    inject_trace_into(span, &mut HeaderInjector(headers));
}

/// [`in_trace`] for message headers as name-value pairs (an event's
/// [`headers`](crate::events::Event::headers)): a consumer's span, or work done long
/// after the span that asked for it ended (orders' outbox relay publishes an event
/// inside the trace its writer stored in the event's headers).
pub fn in_trace_from_pairs<T>(headers: &[(String, String)], f: impl FnOnce() -> T) -> T {
    in_trace_from(&PairsExtractor(headers), f)
}

/// [`inject_trace`] for message headers as name-value pairs: replaces the trace
/// context already there, keeps every other header.
pub fn inject_trace_into_pairs(span: &tracing::Span, headers: &mut Vec<(String, String)>) {
    inject_trace_into(span, &mut PairsInjector(headers));
}

/// The one place that reads a trace context, whatever carries it.
fn in_trace_from<T>(carrier: &dyn Extractor, f: impl FnOnce() -> T) -> T {
    if !telemetry::tracing_enabled() {
        return f();
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(carrier));
    telemetry::continue_trace(parent, f)
}

/// The one place that writes a trace context, whatever carries it.
fn inject_trace_into(span: &tracing::Span, carrier: &mut dyn Injector) {
    if !telemetry::tracing_enabled() {
        return;
    }
    if let Some(context) = telemetry::context_of(span) {
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
        let value = match TRACE_CONTEXT.iter().find(|known| known.as_str() == key) {
            Some(known) => self.0.get(known),
            None => self.0.get(key),
        };
        value?.to_str().ok()
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
        // The names the propagators write, without parsing them per call.
        let name = match TRACE_CONTEXT.iter().find(|known| known.as_str() == key) {
            Some(known) => Ok(known.clone()),
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
