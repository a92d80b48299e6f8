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

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::env::{ConfigError, Env};

mod format;
mod otel;

pub(crate) use otel::{context_of, continue_trace};

use format::{JsonSpanFields, JsonWithTraceIds, TextFields};

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
    let otel = provider
        .as_ref()
        .map(|provider| otel::OtelLayer::new(provider.tracer("shared")));
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
