//! The OpenTelemetry side of tracing's spans. Each span gets its trace and span ids
//! when it is created, and the sampler decides then; only a span the sampler keeps
//! records anything more: its attributes, the fields recorded later, its events, its
//! end, exported by the SDK.
//!
//! A span the sampler drops costs its ids and one context: its trace context is still
//! propagated to the next hop and written in the JSON logs. tracing-opentelemetry,
//! which this layer replaces, copied every field of every span into attributes and
//! decided only when the span closed (issue 19 in `docs/benchmarks.md`).
//!
//! What a span becomes, when it is sampled:
//! - its name is `otel.name` (else the span's own name), its kind `otel.kind`
//!   (`server`, `client`, `producer`, `consumer`; else internal), its status
//!   `otel.status_code` (`OK` or `ERROR`, with `otel.status_description`);
//! - every other field is an attribute: numbers and booleans as they are, strings,
//!   `Display` and `Debug` values and errors as strings;
//! - an event in it is a span event named by its message, with `level`, `target`
//!   and its other fields; an `ERROR` event sets the span's status to error.
//!
//! A span's parent is the span it was created in (tracing's parent), or, when
//! [`continue_trace`] runs the code that creates it, the trace context that came from
//! outside (headers of a request or an event).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{self, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// The layer; [`crate::telemetry::init`] installs it when tracing is on.
pub(crate) struct OtelLayer {
    tracer: SdkTracer,
}

impl OtelLayer {
    pub(crate) fn new(tracer: SdkTracer) -> Self {
        Self { tracer }
    }
}

/// What a span carries for OpenTelemetry: its context, that is its parent's entries
/// (baggage) and the span: recording when sampled, else only its span context.
struct OtelSpan(Context);

thread_local! {
    /// The trace context [`continue_trace`] hands to the next span created on this
    /// thread.
    static CONTINUED: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f`, in which the first span created continues the trace of `parent` (a
/// context read from a request's or an event's headers) instead of the span it is
/// created in: a server span, a consumer span, or a span for work stored earlier.
pub(crate) fn continue_trace<T>(parent: Context, f: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            CONTINUED.with(|continued| continued.borrow_mut().take());
        }
    }
    CONTINUED.with(|continued| *continued.borrow_mut() = Some(parent));
    let _clear = Clear;
    f()
}

/// The OpenTelemetry context of `span` (for propagation), if the layer is installed
/// and the span enabled.
pub(crate) fn context_of(span: &tracing::Span) -> Option<Context> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        let extensions = span.extensions();
        extensions.get::<OtelSpan>().map(|otel| otel.0.clone())
    })
    .flatten()
}

/// The span context of a span of the registry (for the JSON logs' `trace_id` and
/// `span_id`), if it has a valid one.
pub(crate) fn span_context_of<'a, R: LookupSpan<'a>>(span: &SpanRef<'a, R>) -> Option<SpanContext> {
    let extensions = span.extensions();
    let context = extensions
        .get::<OtelSpan>()?
        .0
        .span()
        .span_context()
        .clone();
    context.is_valid().then_some(context)
}

impl<S> Layer<S> for OtelLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = CONTINUED
            .with(|continued| continued.borrow_mut().take())
            .or_else(|| {
                let parent = if attrs.is_contextual() {
                    ctx.lookup_current()
                } else {
                    attrs.parent().and_then(|parent| ctx.span(parent))
                }?;
                let extensions = parent.extensions();
                extensions.get::<OtelSpan>().map(|otel| otel.0.clone())
            })
            .unwrap_or_else(Context::current);
        // The sampler sees the span's kind and its own name, not `otel.name`: the
        // standard samplers read neither, and a name made per call (a `String` field)
        // would be copied for every span, dropped or not.
        let mut kind = KindField(SpanKind::Internal);
        attrs.record(&mut kind);
        let builder = SpanBuilder::from_name(attrs.metadata().name()).with_kind(kind.0);
        let started = self.tracer.build_with_context(builder, &parent);
        let context = if started.is_recording() {
            let context = parent.with_span(started);
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            fields.apply(&context.span());
            context
        } else {
            parent.with_remote_span_context(started.span_context().clone())
        };
        span.extensions_mut().insert(OtelSpan(context));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: layer::Context<'_, S>) {
        with_recording(ctx.span(id), |context| {
            let mut fields = Fields::default();
            values.record(&mut fields);
            fields.apply(&context.span());
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: layer::Context<'_, S>) {
        let span = if event.is_contextual() {
            ctx.lookup_current()
        } else {
            event.parent().and_then(|parent| ctx.span(parent))
        };
        with_recording(span, |context| {
            let metadata = event.metadata();
            let mut fields = Fields::of_event(vec![
                KeyValue::new("level", metadata.level().as_str()),
                KeyValue::new("target", metadata.target()),
            ]);
            event.record(&mut fields);
            let span = context.span();
            if *metadata.level() == Level::ERROR {
                span.set_status(Status::error(""));
            }
            let name = fields
                .name
                .map_or(Cow::Borrowed(metadata.name()), Cow::Owned);
            span.add_event(name, fields.attributes);
        });
    }

    fn on_close(&self, id: Id, ctx: layer::Context<'_, S>) {
        with_recording(ctx.span(&id), |context| context.span().end());
    }
}

/// Runs `f` with the context of `span` if the span is sampled (recording).
fn with_recording<'a, R: LookupSpan<'a>>(span: Option<SpanRef<'a, R>>, f: impl FnOnce(&Context)) {
    let Some(span) = span else {
        return;
    };
    let extensions = span.extensions();
    if let Some(OtelSpan(context)) = extensions.get::<OtelSpan>()
        && context.span().is_recording()
    {
        f(context);
    }
}

/// Reads `otel.kind` alone, before the sampler decides.
struct KindField(SpanKind);

impl Visit for KindField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "otel.kind" {
            self.0 = match value {
                "server" => SpanKind::Server,
                "client" => SpanKind::Client,
                "producer" => SpanKind::Producer,
                "consumer" => SpanKind::Consumer,
                _ => SpanKind::Internal,
            };
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
}

/// A sampled span's or event's fields: attributes, and those that are not (a span's
/// `otel.*` fields, an event's message).
#[derive(Default)]
struct Fields {
    /// An event's fields: `message` is its name, `otel.*` are attributes.
    event: bool,
    attributes: Vec<KeyValue>,
    /// `otel.name`, or an event's message.
    name: Option<String>,
    status_code: Option<String>,
    status_description: Option<String>,
}

impl Fields {
    fn of_event(attributes: Vec<KeyValue>) -> Self {
        Self {
            event: true,
            attributes,
            ..Self::default()
        }
    }

    /// `otel.status_code` (`OK` or `ERROR`) with `otel.status_description`, which may
    /// come in either order.
    fn status(&mut self) -> Option<Status> {
        match self.status_code.take()?.to_ascii_uppercase().as_str() {
            "OK" => Some(Status::Ok),
            "ERROR" => Some(Status::error(
                self.status_description.take().unwrap_or_default(),
            )),
            _ => None,
        }
    }

    fn apply(mut self, span: &opentelemetry::trace::SpanRef<'_>) {
        if let Some(status) = self.status() {
            span.set_status(status);
        }
        if let Some(name) = self.name {
            span.update_name(name);
        }
        span.set_attributes(self.attributes);
    }

    fn string(&mut self, field: &Field, value: String) {
        match (self.event, field.name()) {
            (true, "message") | (false, "otel.name") => self.name = Some(value),
            (false, "otel.kind") => {}
            (false, "otel.status_code") => self.status_code = Some(value),
            (false, "otel.status_description") => self.status_description = Some(value),
            (_, name) => self.attributes.push(KeyValue::new(name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        // OpenTelemetry has no unsigned integers: one beyond `i64` is a string.
        self.attributes.push(match i64::try_from(value) {
            Ok(value) => KeyValue::new(field.name(), value),
            Err(_) => KeyValue::new(field.name(), value.to_string()),
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.string(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests;
