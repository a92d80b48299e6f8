use std::sync::{Arc, Mutex};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;

use super::{OtelLayer, context_of, continue_trace};

/// Keeps what is exported, at each span's end.
#[derive(Clone, Debug, Default)]
struct Exported(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Exported {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Exported {
    fn spans(&self) -> Vec<SpanData> {
        self.0.lock().unwrap().clone()
    }
}

/// Runs `f` under a subscriber with the layer alone, sampling with `sampler`.
fn traced<T>(sampler: Sampler, f: impl FnOnce() -> T) -> (T, Vec<SpanData>) {
    let exported = Exported::default();
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_simple_exporter(exported.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(OtelLayer::new(provider.tracer("test")));
    let value = tracing::subscriber::with_default(subscriber, f);
    (value, exported.spans())
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn remote_parent(flags: TraceFlags) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        flags,
        true,
        TraceState::default(),
    ))
}

#[test]
fn a_sampled_span_is_exported_with_its_fields_events_and_status() {
    let ((), spans) = traced(Sampler::AlwaysOn, || {
        let call = tracing::info_span!(
            "rpc",
            otel.name = "inventory.v1.InventoryService/GetProduct",
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            server.port = 50051_u16,
            retries = -1_i64,
            cached = false,
            client.address = tracing::field::display("127.0.0.1"),
            rpc.grpc.status_code = tracing::field::Empty,
        );
        call.in_scope(|| {
            tracing::info_span!("get_product", sku = "SKU-001").in_scope(|| {
                tracing::info!(found = true, "product read");
            });
            tracing::error!("the store failed");
        });
        call.record("rpc.grpc.status_code", 13_u64);
        call.record("otel.status_code", "ERROR");
    });
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (inner, call) = (&spans[0], &spans[1]);

    assert_eq!(call.name, "inventory.v1.InventoryService/GetProduct");
    assert_eq!(call.span_kind, SpanKind::Server);
    assert!(matches!(call.status, opentelemetry::trace::Status::Error { .. }));
    assert_eq!(attribute(call, "rpc.system"), Some(&Value::from("grpc")));
    assert_eq!(attribute(call, "server.port"), Some(&Value::I64(50051)));
    assert_eq!(attribute(call, "retries"), Some(&Value::I64(-1)));
    assert_eq!(attribute(call, "cached"), Some(&Value::Bool(false)));
    assert_eq!(attribute(call, "client.address"), Some(&Value::from("127.0.0.1")));
    assert_eq!(attribute(call, "rpc.grpc.status_code"), Some(&Value::I64(13)));
    assert!(attribute(call, "otel.kind").is_none() && attribute(call, "otel.name").is_none());
    let events: Vec<_> = call.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(events, ["the store failed"]);
    assert_eq!(call.parent_span_id, SpanId::INVALID);

    assert_eq!(inner.name, "get_product");
    assert_eq!(inner.span_kind, SpanKind::Internal);
    assert_eq!(inner.parent_span_id, call.span_context.span_id());
    assert_eq!(inner.span_context.trace_id(), call.span_context.trace_id());
    assert_eq!(attribute(inner, "sku"), Some(&Value::from("SKU-001")));
    let event = inner.events.iter().next().expect("the inner span's event");
    assert_eq!(event.name, "product read");
    let found = event.attributes.iter().find(|kv| kv.key.as_str() == "found");
    assert_eq!(found.map(|kv| &kv.value), Some(&Value::Bool(true)));
    assert_eq!(inner.status, opentelemetry::trace::Status::Unset);
}

#[test]
fn a_dropped_span_exports_nothing_but_has_a_context_to_propagate() {
    let ((server, client), spans) = traced(Sampler::AlwaysOff, || {
        let server = tracing::info_span!("rpc", otel.kind = "server");
        let client = server.in_scope(|| tracing::info_span!("rpc.client", otel.kind = "client"));
        (context_of(&server), context_of(&client))
    });
    assert!(spans.is_empty(), "{spans:#?}");
    let server = server.unwrap().span().span_context().clone();
    let client = client.unwrap().span().span_context().clone();
    assert!(server.is_valid() && client.is_valid());
    assert!(!server.is_sampled() && !client.is_sampled());
    assert_eq!(client.trace_id(), server.trace_id());
    assert_ne!(client.span_id(), server.span_id());
}

#[test]
fn the_first_span_made_in_continue_trace_continues_the_remote_trace() {
    let parent = remote_parent(TraceFlags::SAMPLED);
    let remote = parent.span().span_context().clone();
    let ((), spans) = traced(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)), || {
        // A span is current: the continued trace wins over it, for the first span only.
        let outer = tracing::info_span!("unrelated");
        outer.in_scope(|| {
            let server = continue_trace(parent, || {
                let server = tracing::info_span!("rpc", otel.kind = "server");
                let sibling = tracing::info_span!("made after it, in the same closure");
                drop(sibling);
                server
            });
            server.in_scope(|| tracing::info_span!("child").in_scope(|| {}));
        });
        // Outside the closure, nothing is continued any more.
        drop(tracing::info_span!("later"));
    });
    // The remote parent is sampled, so the continued span and its child are; the
    // unrelated spans started their own unsampled traces (parent-based, root off).
    let names: Vec<_> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["child", "rpc"], "{spans:#?}");
    let (child, server) = (&spans[0], &spans[1]);
    assert_eq!(server.span_context.trace_id(), remote.trace_id());
    assert_eq!(server.parent_span_id, remote.span_id());
    assert!(server.parent_span_is_remote);
    assert_eq!(child.parent_span_id, server.span_context.span_id());
}

#[test]
fn an_unsampled_remote_parent_keeps_its_trace_and_is_not_recorded() {
    let parent = remote_parent(TraceFlags::default());
    let remote = parent.span().span_context().clone();
    let (context, spans) = traced(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), || {
        let server = continue_trace(parent, || tracing::info_span!("rpc"));
        context_of(&server)
    });
    assert!(spans.is_empty(), "{spans:#?}");
    let context = context.unwrap().span().span_context().clone();
    assert_eq!(context.trace_id(), remote.trace_id());
    assert!(!context.is_sampled());
}
