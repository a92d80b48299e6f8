//! Logs and traces: one set-up per process, configured by the standard variables.
//!
//! Logs: `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` writes one JSON object
//! per line for log collectors, with the `trace_id` and `span_id` of the call it was
//! written in; `text` (the default) is for humans.
//!
//! Traces (OpenTelemetry SDK environment variables):
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): where to
//!   send spans over OTLP/gRPC, e.g. `http://otel-collector:4317`. Unset: spans are
//!   not exported (trace context is still propagated and logged), and nothing
//!   complains about a missing collector.
//! - `OTEL_SERVICE_NAME` (default: the service's name) and `OTEL_RESOURCE_ATTRIBUTES`
//!   (`key=value,…`, percent-encoded values).
//! - `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`, `traceidratio`,
//!   `parentbased_always_on` (the default), `parentbased_always_off`,
//!   `parentbased_traceidratio`) and `OTEL_TRACES_SAMPLER_ARG` (the ratio, 0 to 1).
//! - `OTEL_SDK_DISABLED=true` turns tracing off entirely (no spans, no propagation).
//!
//! Spans are batched and exported in the background; [`Telemetry::shutdown`] flushes
//! them, bounded by [`FLUSH_TIMEOUT`].

use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::field::VisitOutput as _;
use tracing_subscriber::fmt::format::{DefaultVisitor, Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::env::{ConfigError, Env};

/// Longest wait for the last spans to be exported at shutdown.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether spans carry OpenTelemetry context (set once by [`init`]).
static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether [`init`] turned OpenTelemetry tracing on: the RPC layers then propagate
/// the trace context.
pub(crate) fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which traces are recorded.
#[derive(Clone, Debug, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased(Box<SamplerConfig>),
}

impl SamplerConfig {
    fn build(&self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(ratio) => Sampler::TraceIdRatioBased(*ratio),
            Self::ParentBased(root) => Sampler::ParentBased(Box::new(root.build())),
        }
    }
}

/// Everything [`init`] reads, parsed.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub log_filter: String,
    /// `None` when `OTEL_SDK_DISABLED=true`.
    pub tracing: Option<TracingConfig>,
}

#[derive(Clone, Debug)]
pub struct TracingConfig {
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    /// `None`: no exporter.
    pub endpoint: Option<String>,
    pub sampler: SamplerConfig,
}

impl TelemetryConfig {
    pub fn from_env(service: &str, env: &Env) -> Result<Self, ConfigError> {
        let log_format =
            env.parse_with("LOG_FORMAT", LogFormat::Text, "text or json", |v| match v {
                "text" => Some(LogFormat::Text),
                "json" => Some(LogFormat::Json),
                _ => None,
            })?;
        let log_filter = env.get("RUST_LOG").unwrap_or("info").to_owned();
        EnvFilter::builder()
            .parse(&log_filter)
            .map_err(|e| ConfigError {
                var: "RUST_LOG".into(),
                value: log_filter.clone(),
                expected: format!("tracing filter directives like info,{service}=debug ({e})"),
            })?;
        let tracing = if env.flag("OTEL_SDK_DISABLED", false)? {
            None
        } else {
            Some(TracingConfig::from_env(service, env)?)
        };
        Ok(Self {
            log_format,
            log_filter,
            tracing,
        })
    }
}

impl TracingConfig {
    fn from_env(service: &str, env: &Env) -> Result<Self, ConfigError> {
        let service_name = env.get("OTEL_SERVICE_NAME").unwrap_or(service).to_owned();
        let resource_attributes = env.parse_with(
            "OTEL_RESOURCE_ATTRIBUTES",
            Vec::new(),
            "key=value pairs separated by commas",
            parse_attributes,
        )?;
        // Each variable named literally: k8s/tests/envvars.py finds what a binary
        // reads by its literal name.
        let endpoint_var = if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() {
            Some("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        } else if env.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            Some("OTEL_EXPORTER_OTLP_ENDPOINT")
        } else {
            None
        };
        let endpoint = match endpoint_var {
            Some(var) => {
                env.http_upstream(var, "http://127.0.0.1:4317")?;
                env.get(var).map(str::to_owned)
            }
            None => None,
        };
        env.parse_with(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            (),
            "grpc (the protocol built in)",
            |v| (v == "grpc").then_some(()),
        )?;
        let ratio = env.parse_with("OTEL_TRACES_SAMPLER_ARG", 1.0, "a ratio from 0 to 1", |v| {
            v.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r))
        })?;
        let sampler = env.parse_with(
            "OTEL_TRACES_SAMPLER",
            SamplerConfig::ParentBased(Box::new(SamplerConfig::AlwaysOn)),
            "always_on, always_off, traceidratio, parentbased_always_on, \
             parentbased_always_off or parentbased_traceidratio",
            |v| {
                let parent_based = |root| SamplerConfig::ParentBased(Box::new(root));
                Some(match v {
                    "always_on" => SamplerConfig::AlwaysOn,
                    "always_off" => SamplerConfig::AlwaysOff,
                    "traceidratio" => SamplerConfig::Ratio(ratio),
                    "parentbased_always_on" => parent_based(SamplerConfig::AlwaysOn),
                    "parentbased_always_off" => parent_based(SamplerConfig::AlwaysOff),
                    "parentbased_traceidratio" => parent_based(SamplerConfig::Ratio(ratio)),
                    _ => return None,
                })
            },
        )?;
        Ok(Self {
            service_name,
            resource_attributes,
            endpoint,
            sampler,
        })
    }
}

/// `key1=value1,key2=value2`, values percent-encoded (W3C Baggage style).
fn parse_attributes(value: &str) -> Option<Vec<(String, String)>> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| Some((key.to_owned(), percent_decode(value.trim())?)))?
        })
        .collect()
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Keeps telemetry running; [`Telemetry::shutdown`] flushes it before exit.
#[derive(Debug)]
#[must_use = "dropping the guard early loses the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered, within [`FLUSH_TIMEOUT`]. Call after the
    /// server has drained.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The export runs on this runtime while the SDK waits for it on a blocking
        // thread, so neither holds up the other.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not flush the last spans"),
            Err(error) => tracing::warn!(%error, "span flush task failed"),
        }
    }
}

/// Installs the process-wide logging and tracing for `service`, panics logged as
/// errors ([`crate::panic::install_hook`]) included. Fails on a bad
/// variable, or if a subscriber is already installed. Must run inside the Tokio runtime.
pub fn init(service: &str, env: &Env) -> Result<Telemetry, ConfigError> {
    let config = TelemetryConfig::from_env(service, env)?;
    let filter = EnvFilter::builder()
        .parse(&config.log_filter)
        .expect("validated by TelemetryConfig");
    let provider = config.tracing.as_ref().map(tracer_provider);
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("shared"))
            // Per-span bookkeeping nobody reads: skip it on the hot path.
            .with_tracked_inactivity(false)
            // Making each entered span's context OpenTelemetry's current one, on every
            // enter and exit (about 3% of a GetProduct's instructions, net of the
            // parent lookup it then does at span creation), serves instrumentation
            // that reads `opentelemetry::Context::current()`: the spans here are
            // tracing's, parented through tracing and propagated with
            // `OpenTelemetrySpanExt::context` (`crate::observe`), so nothing reads it. A
            // service that adds OpenTelemetry-native instrumentation turns it back on.
            .with_context_activation(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
    });
    let fmt = match config.log_format {
        // Colours for a terminal only: styling every field name (and escape codes in
        // a file or a pod's log) is work and bytes for no reader.
        LogFormat::Text if std::io::stdout().is_terminal() => tracing_subscriber::fmt::layer()
            .fmt_fields(TextFields)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(TextFields)
            .with_ansi(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonSpanFields)
            .event_format(JsonWithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .with(filter)
        .try_init();
    installed.map_err(|e| ConfigError {
        var: "RUST_LOG".into(),
        value: config.log_filter.clone(),
        expected: format!("a single logging set-up per process ({e})"),
    })?;
    crate::panic::install_hook();
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry::propagation::TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ]),
        );
        TRACING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(config: &TracingConfig) -> SdkTracerProvider {
    let mut attributes: Vec<KeyValue> = config
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    attributes.push(KeyValue::new("telemetry.sdk.language", "rust"));
    let resource = Resource::builder_empty()
        .with_attributes(attributes)
        .with_service_name(config.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(config.sampler.build());
    if let Some(endpoint) = &config.endpoint {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
        {
            Ok(exporter) => {
                let exporter = OnRuntime {
                    inner: Arc::new(exporter),
                    runtime: tokio::runtime::Handle::current(),
                };
                builder = builder.with_batch_exporter(exporter);
            }
            // Only a malformed endpoint fails here, and the configuration checked it.
            Err(error) => eprintln!("cannot build the OTLP exporter for {endpoint}: {error}"),
        }
    }
    builder.build()
}

/// Runs a tonic-based exporter on the service's Tokio runtime. The SDK's batch
/// processor exports from a thread of its own, where tonic finds no runtime.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: tokio::runtime::Handle,
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        self.runtime
            .spawn(async move { inner.export(batch).await })
            .await
            .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// The fields of each span as one JSON object, which the JSON lines of events written
/// inside the span include (`with_current_span`). Replaces tracing-subscriber's
/// `JsonFields`, which builds a `BTreeMap` of `serde_json::Value`s for every span
/// and, on every `Span::record`, parses the object back and serializes it again: for a
/// call's server span (11 fields, then its status code recorded at the end) that was
/// about half of the instructions inventory spent per GetProduct, although no line is
/// logged per call at `info`. This writes each field straight into the object and
/// appends recorded fields before its closing brace. A field recorded twice appears
/// twice; the event formatter parses the object into a map, where the last one wins,
/// as with `JsonFields`. Field values are written as `JsonFields` writes them.
#[derive(Debug)]
struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut batched = Batched::new(writer);
        let mut object = JsonObject::new(&mut batched);
        fields.record(&mut object);
        object.finish()?;
        batched.flush()
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // What format_fields wrote: `{…}`. Reopen the object to append to it.
        let Some(open) = current.fields.strip_suffix('}') else {
            return self.format_fields(current.as_writer(), fields);
        };
        let empty = open == "{";
        current.fields.pop();
        let mut object = JsonObject {
            out: &mut current.fields,
            empty,
            result: Ok(()),
        };
        fields.record(&mut object);
        object.finish()
    }
}

/// The text format's fields, byte for byte what tracing-subscriber's `DefaultFields`
/// writes (`name=value`, space-separated; with colours, the name in italics and a
/// dimmed `=`), without its cost per field: `DefaultFields` styles each name through
/// `nu_ansi_term` and writes every string through `Debug`'s escaping, which made
/// formatting the fields of a call's spans (done when each span is created, although
/// no line is logged per call at `info`) a fifth of the instructions inventory spent
/// per GetProduct. Here the escape sequences are literals and a string that needs no
/// escaping is copied as it is; messages and errors, which `DefaultFields` sanitizes,
/// go to its own visitor.
#[derive(Debug)]
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            ansi: writer.has_ansi_escapes(),
            out: Batched::new(writer),
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result?;
        visitor.out.flush()
    }
}

struct TextVisitor<'w> {
    out: Batched<Writer<'w>>,
    ansi: bool,
    /// Nothing written yet (no space before the next field).
    empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// `DefaultFields`' own way, for what it treats specially: `message` (its
    /// escaping of terminal sequences), errors (their sources) and `log.` fields
    /// (skipped when tracing-subscriber's `tracing-log` feature is on).
    fn special(name: &str) -> bool {
        name == "message" || name.starts_with("log.")
    }

    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        if let Err(error) = self.out.flush() {
            self.result = Err(error);
            return;
        }
        let mut visitor = DefaultVisitor::new(self.out.inner.by_ref(), self.empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.empty = false;
    }

    /// `name=` (styled as `DefaultFields` styles it), then `value`.
    fn field(&mut self, name: &str, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let space = if self.empty { "" } else { " " };
        self.empty = false;
        let ansi = self.ansi;
        let writer = &mut self.out;
        self.result = (|| {
            writer.write_str(space)?;
            if ansi {
                // nu_ansi_term's italic and dimmed, as `DefaultFields` paints them.
                writer.write_str("\x1b[3m")?;
                writer.write_str(name)?;
                writer.write_str("\x1b[0m\x1b[2m=\x1b[0m")?;
            } else {
                writer.write_str(name)?;
                writer.write_char('=')?;
            }
            value(writer)
        })();
    }
}

impl Visit for TextVisitor<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_i64(field, value));
        }
        self.field(field.name(), |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_u64(field, value));
        }
        self.field(field.name(), |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_bool(field, value));
        }
        self.field(field.name(), |w| {
            w.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_str(field, value));
        }
        self.field(field.name(), |w| {
            // `Debug` of a str changes nothing but quotes and backslashes in
            // printable ASCII.
            let plain = value
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
            if plain {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if Self::special(field.name()) {
            return self.by_default(|v| v.record_debug(field, value));
        }
        self.field(field.name(), |w| write!(w, "{value:?}"));
    }
}

/// Gathers small writes in a buffer on the stack and passes them on in larger ones: the
/// fields of a span reach its `String` in one write (one allocation) instead of one
/// per field and value (a reallocation each time the string doubles).
struct Batched<W> {
    inner: W,
    buffer: [u8; 256],
    len: usize,
}

impl<W: fmt::Write> Batched<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            buffer: [0; 256],
            len: 0,
        }
    }

    /// Passes on what is buffered.
    fn flush(&mut self) -> fmt::Result {
        if self.len > 0 {
            // Whole `str`s only were copied in, so this is UTF-8.
            let buffered = std::str::from_utf8(&self.buffer[..self.len]).map_err(|_| fmt::Error)?;
            self.inner.write_str(buffered)?;
            self.len = 0;
        }
        Ok(())
    }
}

impl<W: fmt::Write> fmt::Write for Batched<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > self.buffer.len() {
            self.flush()?;
            if s.len() > self.buffer.len() {
                return self.inner.write_str(s);
            }
        }
        self.buffer[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Writes visited fields as the members of a JSON object.
struct JsonObject<'a> {
    out: &'a mut dyn fmt::Write,
    /// No member written yet (no comma before the next one).
    empty: bool,
    result: fmt::Result,
}

impl<'a> JsonObject<'a> {
    fn new(out: &'a mut dyn fmt::Write) -> Self {
        let result = out.write_char('{');
        Self {
            out,
            empty: true,
            result,
        }
    }

    fn finish(self) -> fmt::Result {
        self.result?;
        self.out.write_char('}')
    }

    /// Writes `"name":` and then the value with `value`.
    fn member(&mut self, name: &str, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let comma = if self.empty { "" } else { "," };
        self.empty = false;
        self.result = (|| {
            self.out.write_str(comma)?;
            self.out.write_char('"')?;
            JsonEscaped(&mut *self.out).write_str(name)?;
            self.out.write_str("\":")?;
            value(&mut *self.out)
        })();
    }
}

impl Visit for JsonObject<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Debug keeps a fraction (`1.0`) and uses exponents (`1e300`), as JSON
        // allows; JSON has no NaN or infinity (serde_json writes null).
        self.member(field.name(), |out| {
            if value.is_finite() {
                write!(out, "{value:?}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field.name(), |out| {
            out.write_char('"')?;
            JsonEscaped(&mut *out).write_str(value)?;
            out.write_char('"')
        });
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        // An array of numbers, as serde_json writes a byte slice.
        self.member(field.name(), |out| {
            out.write_char('[')?;
            for (i, byte) in value.iter().enumerate() {
                let comma = if i == 0 { "" } else { "," };
                write!(out, "{comma}{byte}")?;
            }
            out.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field.name(), |out| {
            out.write_char('"')?;
            write!(JsonEscaped(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// Escapes what is written through it as the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// tracing-subscriber's JSON lines, plus the OpenTelemetry `trace_id` and `span_id`
/// of the span the event happened in, so logs and traces can be joined.
struct JsonWithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.lookup_current().and_then(|span| {
            let context = tracing::dispatcher::get_default(|dispatch| {
                tracing_opentelemetry::get_otel_context(&span.id(), dispatch)
            })?;
            let span_context = context.span().span_context().clone();
            span_context.is_valid().then_some(span_context)
        });
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some(ids), Some(object)) => writeln!(
                writer,
                "{object},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                ids.trace_id(),
                ids.span_id()
            ),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        TelemetryConfig::from_env("inventory", &pairs.iter().copied().collect())
    }

    #[test]
    fn defaults() {
        let config = config(&[]).unwrap();
        assert_eq!(config.log_format, LogFormat::Text);
        let tracing = config.tracing.unwrap();
        assert_eq!(tracing.service_name, "inventory");
        assert_eq!(tracing.endpoint, None);
        assert_eq!(
            tracing.sampler,
            SamplerConfig::ParentBased(Box::new(SamplerConfig::AlwaysOn))
        );
    }

    #[test]
    fn standard_variables_are_read() {
        let config = config(&[
            ("OTEL_SERVICE_NAME", "inventory-eu"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=a%20b",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4317"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .unwrap();
        let tracing = config.tracing.unwrap();
        assert_eq!(tracing.service_name, "inventory-eu");
        assert_eq!(
            tracing.resource_attributes,
            [
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "a b".into())
            ]
        );
        assert_eq!(
            tracing.endpoint.as_deref(),
            Some("http://otel-collector:4317")
        );
        assert_eq!(
            tracing.sampler,
            SamplerConfig::ParentBased(Box::new(SamplerConfig::Ratio(0.25)))
        );
    }

    /// What the JSON event formatter gets from a span's fields: the same object as
    /// tracing-subscriber's `JsonFields` writes, also after fields are recorded.
    #[test]
    fn span_fields_are_a_json_object() {
        use tracing_subscriber::fmt::format::JsonFields;
        use tracing_subscriber::registry::SpanData as _;

        fn fields<F>(format: F) -> serde_json::Value
        where
            F: for<'w> FormatFields<'w> + Send + Sync + 'static,
        {
            let captured = Arc::new(std::sync::Mutex::new(None));
            let sink = Arc::clone(&captured);
            let layer = tracing_subscriber::fmt::layer()
                .fmt_fields(format)
                .with_writer(std::io::sink);
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                let long = "long ".repeat(60);
                let span = tracing::info_span!(
                    "call",
                    long = long.as_str(),
                    text = "a \"quoted\"\\ line\nnext\u{1}",
                    number = -3_i64,
                    count = 7_u64,
                    ratio = 0.5,
                    flag = true,
                    addr = %std::net::Ipv4Addr::LOCALHOST,
                    debug = ?("tuple", 1),
                    r#type = "raw",
                    later = tracing::field::Empty,
                    again = tracing::field::Empty,
                );
                span.record("later", 14);
                span.record("again", "x");
                span.record("again", "y");
                span.with_subscriber(|(id, dispatch)| {
                    let registry = dispatch
                        .downcast_ref::<tracing_subscriber::Registry>()
                        .unwrap();
                    let data = registry.span_data(id).unwrap();
                    let extensions = data.extensions();
                    let text = &extensions.get::<FormattedFields<F>>().unwrap().fields;
                    *sink.lock().unwrap() = Some(serde_json::from_str(text).unwrap());
                });
            });
            captured.lock().unwrap().take().unwrap()
        }

        let ours = fields(JsonSpanFields);
        assert_eq!(ours, fields(JsonFields::new()));
        assert_eq!(ours["text"], "a \"quoted\"\\ line\nnext\u{1}");
        assert_eq!(ours["again"], "y");
        assert_eq!(ours["type"], "raw");
    }

    /// The text format's lines are what they were with tracing-subscriber's
    /// `DefaultFields`, byte for byte, with and without colours: span fields of
    /// every kind (recorded later too), event fields, a message that `DefaultFields`
    /// sanitizes, an error with its source.
    #[test]
    fn text_fields_write_what_default_fields_writes() {
        use tracing_subscriber::fmt::format::DefaultFields;

        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }

        fn lines<F>(format: F, ansi: bool) -> String
        where
            F: for<'w> FormatFields<'w> + Send + Sync + 'static,
        {
            let out = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
            let sink = Arc::clone(&out);
            let layer = tracing_subscriber::fmt::layer()
                .fmt_fields(format)
                .with_ansi(ansi)
                .without_time()
                .with_writer(move || TestWriter(Arc::clone(&sink)));
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                // Longer than the buffer of `Batched`.
                let long = "long ".repeat(60);
                let span = tracing::info_span!(
                    "rpc",
                    long = long.as_str(),
                    otel.name = "inventory.v1.InventoryService/GetProduct",
                    quoted = "a \"quoted\"\\ line\nnext\u{1b}[31m é",
                    number = -3_i64,
                    count = 7_u64,
                    ratio = 0.5,
                    flag = false,
                    addr = %std::net::Ipv4Addr::LOCALHOST,
                    debug = ?("tuple", 1),
                    r#type = "raw",
                    empty = "",
                    later = tracing::field::Empty,
                    "log.target" = "kept",
                );
                span.record("later", 14);
                let _entered = span.enter();
                let inner = tracing::info_span!("handler");
                let _inner = inner.enter();
                tracing::info!(sku = "SKU-005", n = 2_u64, "message with \u{1b}[2J escape");
                let error = Outer(std::io::Error::other("inner cause"));
                tracing::warn!(error = &error as &dyn std::error::Error, "failed");
                tracing::error!(message = "as a field", r#loop = true);
            });
            let bytes = out.lock().unwrap().clone();
            String::from_utf8(bytes).unwrap()
        }

        for ansi in [false, true] {
            let ours = lines(TextFields, ansi);
            assert_eq!(ours, lines(DefaultFields::new(), ansi), "ansi: {ansi}");
            assert_eq!(ours.lines().count(), 3, "{ours}");
            assert_eq!(ours.contains('\u{1b}'), ansi, "{ours}");
        }
    }

    struct TestWriter(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for TestWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_sdk_can_be_disabled() {
        assert!(
            config(&[("OTEL_SDK_DISABLED", "true")])
                .unwrap()
                .tracing
                .is_none()
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SDK_DISABLED", "perhaps"),
            ("LOG_FORMAT", "xml"),
            ("RUST_LOG", "info,[[["),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }
}
