//! Logs (and later traces and metrics): one subscriber per process.
//!
//! `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` writes one JSON object per
//! line for log collectors, `text` (the default) is for humans. Each RPC runs in an
//! `rpc` span (see `server.rs`), so every line logged while handling a call names its
//! service and method.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::{ConfigError, Env};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps telemetry running; [`Telemetry::shutdown`] flushes it before exit.
#[derive(Debug)]
#[must_use = "dropping the guard early loses telemetry"]
pub struct Telemetry {
    _private: (),
}

impl Telemetry {
    /// Flushes what is buffered. Call after the server has drained.
    pub fn shutdown(self) {}
}

/// Installs the process-wide subscriber for `service`. Fails on a bad `RUST_LOG` or
/// `LOG_FORMAT`, or if a subscriber is already installed.
pub fn init(service: &str, env: &Env) -> Result<Telemetry, ConfigError> {
    let format = env.parse_with("LOG_FORMAT", LogFormat::Text, "text or json", |v| match v {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => None,
    })?;
    let directives = env.get("RUST_LOG").unwrap_or("info");
    let filter = EnvFilter::builder()
        .parse(directives)
        .map_err(|e| ConfigError {
            var: "RUST_LOG".into(),
            value: directives.into(),
            expected: format!("tracing filter directives like info,{service}=debug ({e})"),
        })?;

    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| ConfigError {
        var: "RUST_LOG".into(),
        value: directives.into(),
        expected: format!("a single logging set-up per process ({e})"),
    })?;
    Ok(Telemetry { _private: () })
}
