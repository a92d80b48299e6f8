//! Typed configuration from environment variables.
//!
//! Everything is read through [`Env`], a snapshot of variables that tests build from
//! a literal map, so no test ever calls `std::env::set_var`. A bad value fails start-up
//! with a [`ConfigError`] that names the variable, the value and what was expected.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::Uri;

use crate::client::Upstream;
use crate::tls::{ClientTls, ServerTls};
use crate::web::CorsOrigins;

/// A snapshot of environment variables. Empty values count as unset, because
/// Kubernetes manifests and shells often set `VAR=""` to mean "use the default".
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// A variable whose value cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: String,
}

impl Env {
    /// The process environment. Variables that are not valid UTF-8 are skipped: none
    /// of ours can be.
    pub fn from_process() -> Self {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }

    /// The value of `name`, or `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A copy with `name` set to `value`, e.g. to give one service of the stack its port.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_owned(), value.into());
        self
    }

    /// Parses `name` with `parse`, or returns `default` when unset. `expected` describes
    /// a valid value for the error message, e.g. "a duration like 10s or 500ms".
    pub fn parse_with<T>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse(value.trim()).ok_or_else(|| ConfigError {
                var: name.to_owned(),
                value: value.to_owned(),
                expected: expected.to_owned(),
            }),
        }
    }

    /// Parses `name` with [`FromStr`], or returns `default` when unset.
    pub fn parse<T: FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        self.parse_with(name, default, expected, |v| v.parse().ok())
    }

    /// A socket address such as `0.0.0.0:50052`.
    pub fn socket_addr(&self, name: &str, default: SocketAddr) -> Result<SocketAddr, ConfigError> {
        self.parse(name, default, "a socket address like 0.0.0.0:50052")
    }

    /// A duration such as `10s`, `500ms` or `2m` (a bare number is seconds).
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.parse_with(
            name,
            default,
            "a duration like 10s, 500ms or 2m",
            parse_duration,
        )
    }

    /// A duration like [`Self::duration`] but above zero: for a timeout or an interval,
    /// where zero would refuse everything or spin.
    pub fn positive_duration(
        &self,
        name: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.parse_with(
            name,
            default,
            "a duration above zero like 10s or 500ms",
            |v| parse_duration(v).filter(|d| !d.is_zero()),
        )
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        self.parse_with(name, default, "true or false", |v| {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            }
        })
    }

    /// An integer in `min..=max`.
    pub fn int_in<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let expected = format!("an integer from {min} to {max}");
        self.parse_with(name, default, &expected, |v| {
            v.parse().ok().filter(|n| (min..=max).contains(n))
        })
    }

    /// The contents of the file whose path is in `name` (a PEM certificate, a key), or
    /// `None` when unset. Read whole at start-up: a missing or unreadable file fails
    /// there, naming the variable, and so do the errors of [`ConfigFile::invalid`].
    pub fn file(&self, name: &str) -> Result<Option<ConfigFile>, ConfigError> {
        let Some(path) = self.get(name) else {
            return Ok(None);
        };
        let file = ConfigFile {
            var: name.to_owned(),
            path: path.to_owned(),
            contents: Vec::new(),
        };
        match std::fs::read(path) {
            Ok(contents) => Ok(Some(ConfigFile { contents, ..file })),
            Err(error) => Err(file.invalid(format!("a readable file ({error})"))),
        }
    }

    /// The address of another service, e.g. `http://inventory:50052`, or several
    /// separated by commas (`http://10.0.0.7:50052,http://10.0.0.8:50052`): the
    /// channel spreads calls over all of them, and over every address a host name
    /// resolves to (see `shared::client`). `https://` addresses (TLS) need
    /// `GRPC_CLIENT_TLS_CA_FILE`, the CA their certificates must come from.
    pub fn upstream(&self, name: &str, default: &str) -> Result<Upstream, ConfigError> {
        let https_allowed = self.get("GRPC_CLIENT_TLS_CA_FILE").is_some();
        let expected = if https_allowed {
            "an address like http://inventory:50052 or https://inventory:50052, or several separated by commas"
        } else {
            "an address like http://inventory:50052, or several separated by commas (https:// needs GRPC_CLIENT_TLS_CA_FILE)"
        };
        let default = Upstream::parse(default).expect("default upstream address is valid");
        self.parse_with(name, default, expected, |v| {
            Upstream::parse(v).filter(|upstream| https_allowed || !upstream.uses_tls())
        })
    }

    /// One plaintext `http://host:port` address: for clients that are not built on
    /// [`crate::client::channel`] and so cannot speak TLS (the OTLP exporter).
    pub fn http_upstream(&self, name: &str, default: &str) -> Result<Uri, ConfigError> {
        let default = default.parse().expect("default address is a valid URI");
        self.parse_with(
            name,
            default,
            "an address like http://127.0.0.1:4317 (plaintext only)",
            |v| {
                let uri: Uri = v.parse().ok()?;
                let plain = uri.scheme_str() == Some("http");
                (plain && uri.host().is_some() && uri.port_u16().is_some()).then_some(uri)
            },
        )
    }
}

/// A file named by a variable ([`Env::file`]).
#[derive(Clone)]
pub struct ConfigFile {
    /// The variable holding the path.
    pub var: String,
    pub path: String,
    pub contents: Vec<u8>,
}

impl ConfigFile {
    /// An error saying what this file should have held.
    pub fn invalid(&self, expected: impl Into<String>) -> ConfigError {
        ConfigError {
            var: self.var.clone(),
            value: self.path.clone(),
            expected: expected.into(),
        }
    }
}

/// Paths only: the contents may be secret.
impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("var", &self.var)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

pub(crate) fn parse_duration(value: &str) -> Option<Duration> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Settings of every gRPC server, read from the same variables in every service.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `LISTEN_ADDR`: where the gRPC server listens (default `0.0.0.0:<service port>`).
    pub listen_addr: SocketAddr,
    /// `ADMIN_LISTEN_ADDR`: where `/metrics` is served (default `0.0.0.0:<admin port>`).
    pub admin_addr: SocketAddr,
    /// `GRPC_REFLECTION`: serve gRPC server reflection (default `true`).
    pub reflection: bool,
    /// `GRPC_REQUEST_TIMEOUT`: upper bound of every call; a shorter client deadline wins
    /// (default `30s`).
    pub request_timeout: Duration,
    /// `GRPC_MAX_CONCURRENT_STREAMS`: HTTP/2 streams per connection (default `100`).
    pub max_concurrent_streams: u32,
    /// `GRPC_MAX_MESSAGE_SIZE`: largest message received or sent, in bytes (default 4 MiB).
    pub max_message_size: usize,
    /// `GRPC_CONCURRENCY_LIMIT`: calls this server handles at once, over all connections;
    /// one more is refused at once with RESOURCE_EXHAUSTED instead of queueing behind
    /// the others (default `512`). Health checks are never refused.
    pub concurrency_limit: usize,
    /// `GRPC_MAX_CONNECTION_AGE`: after this long a connection is told to go away
    /// (HTTP/2 GOAWAY); its calls finish and the client reconnects, possibly to another
    /// replica, so load spreads again after a scale-up (default `10m`; `0s`: never).
    pub max_connection_age: Option<Duration>,
    /// `GRPC_KEEPALIVE_INTERVAL`: how often an idle connection is pinged (HTTP/2 PING),
    /// to find clients that vanished without closing (default `30s`; `0s`: never).
    pub keepalive_interval: Option<Duration>,
    /// `GRPC_KEEPALIVE_TIMEOUT`: how long a ping may go unanswered before the connection
    /// is closed (default `10s`).
    pub keepalive_timeout: Duration,
    /// `GRPC_TCP_KEEPALIVE`: idle time before the kernel probes a connection (TCP
    /// keepalive), for peers that HTTP/2 pings cannot reach (default `60s`; `0s`: off).
    pub tcp_keepalive: Option<Duration>,
    /// `GRPC_MAX_HEADER_LIST_SIZE`: largest request metadata (the HTTP/2 header list), in
    /// bytes; a larger one is refused with HTTP 431 (default 16 KiB, at least 8 KiB so
    /// that every error answer fits: see [`crate::status`]). Clients read the same
    /// variable ([`ClientConfig::max_header_list_size`]).
    pub max_header_list_size: u32,
    /// `GRPC_MAX_LOCAL_ERROR_RESETS`: how many malformed streams one connection may
    /// open before it is closed with GOAWAY `ENHANCE_YOUR_CALM` (default 1024).
    pub max_local_error_resets: usize,
    /// `SHUTDOWN_DELAY`: how long to keep serving after health turned NOT_SERVING, so
    /// load balancers that poll health stop routing here first (default `0s`; in
    /// Kubernetes a `preStop` sleep does this job).
    pub shutdown_delay: Duration,
    /// `SHUTDOWN_GRACE_PERIOD`: how long in-flight calls may take to finish once the
    /// server stops accepting (default `10s`).
    pub shutdown_grace_period: Duration,
    /// `GRPC_TLS_*`: TLS, or mutual TLS, on the gRPC port (default off).
    pub tls: Option<ServerTls>,
    /// `HEALTH_LISTEN_ADDR`: a plaintext port serving `grpc.health.v1.Health` and
    /// nothing else, for probes that cannot speak TLS (Kubernetes' gRPC probes). Served
    /// only with TLS, at `0.0.0.0:<admin port + 100>` by default; without TLS the
    /// probes use the gRPC port and this is `None`.
    pub health_addr: Option<SocketAddr>,
    /// `GRPC_WEB_CORS_ORIGINS`: the origins whose web pages may call this server with
    /// gRPC-Web (default none: CORS off; see [`crate::web`]).
    pub grpc_web_cors: Option<CorsOrigins>,
}

impl ServerConfig {
    /// Reads the server settings; `port` and `admin_port` are the service's local ports.
    pub fn from_env(env: &Env, port: u16, admin_port: u16) -> Result<Self, ConfigError> {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let tls = ServerTls::from_env(env)?;
        // Port 0 (tests) stays 0: a free port, like the others.
        let health_port = match admin_port {
            0 => 0,
            port => port.saturating_add(100),
        };
        Ok(Self {
            listen_addr: env.socket_addr("LISTEN_ADDR", any(port))?,
            admin_addr: env.socket_addr("ADMIN_LISTEN_ADDR", any(admin_port))?,
            reflection: env.flag("GRPC_REFLECTION", true)?,
            request_timeout: env
                .positive_duration("GRPC_REQUEST_TIMEOUT", Duration::from_secs(30))?,
            max_concurrent_streams: env.int_in("GRPC_MAX_CONCURRENT_STREAMS", 100, 1, 10_000)?,
            max_message_size: env.int_in("GRPC_MAX_MESSAGE_SIZE", 4 << 20, 1024, 64 << 20)?,
            concurrency_limit: env.int_in("GRPC_CONCURRENCY_LIMIT", 512, 1, 1_000_000)?,
            max_connection_age: env
                .duration("GRPC_MAX_CONNECTION_AGE", Duration::from_secs(600))
                .map(non_zero)?,
            keepalive_interval: env
                .duration("GRPC_KEEPALIVE_INTERVAL", Duration::from_secs(30))
                .map(non_zero)?,
            keepalive_timeout: env
                .positive_duration("GRPC_KEEPALIVE_TIMEOUT", Duration::from_secs(10))?,
            tcp_keepalive: env
                .duration("GRPC_TCP_KEEPALIVE", Duration::from_secs(60))
                .map(non_zero)?,
            max_header_list_size: max_header_list_size(env)?,
            max_local_error_resets: env.int_in("GRPC_MAX_LOCAL_ERROR_RESETS", 1024, 1, 1 << 20)?,
            shutdown_delay: env.duration("SHUTDOWN_DELAY", Duration::ZERO)?,
            shutdown_grace_period: env
                .duration("SHUTDOWN_GRACE_PERIOD", Duration::from_secs(10))?,
            tls: tls.clone(),
            health_addr: {
                let addr = env.socket_addr("HEALTH_LISTEN_ADDR", any(health_port))?;
                tls.is_some().then_some(addr)
            },
            grpc_web_cors: CorsOrigins::from_env(env)?,
        })
    }
}

/// `GRPC_MAX_HEADER_LIST_SIZE`, one limit for both ends: what a server accepts of a
/// request and what a client accepts of an answer. At least [`MAX_ERROR_HEADERS`]:
/// every error answer fits.
///
/// [`MAX_ERROR_HEADERS`]: crate::status::MAX_ERROR_HEADERS
fn max_header_list_size(env: &Env) -> Result<u32, ConfigError> {
    let least = crate::status::MAX_ERROR_HEADERS as u32;
    env.int_in("GRPC_MAX_HEADER_LIST_SIZE", 16 << 10, least, 1 << 20)
}

/// `None` for a zero duration: the settings where `0s` means "never".
fn non_zero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// Settings of the channels a service uses to call others; each downstream (each
/// `*_ADDR`) gets its own breaker, bulkhead and retry budget with these settings.
/// See `shared::client` for what each does.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `GRPC_CLIENT_CONNECT_TIMEOUT`: bound on establishing a connection (default `2s`).
    pub connect_timeout: Duration,
    /// `GRPC_CLIENT_TIMEOUT`: deadline of each outgoing call, retries included; a
    /// shorter deadline of the call being served wins (default `5s`).
    pub request_timeout: Duration,
    /// `GRPC_CLIENT_RETRY_MAX_ATTEMPTS`: attempts of a retry-safe call, the first
    /// included; `1` turns retries off (default `3`, at most `5` as in gRFC A6).
    pub retry_max_attempts: u32,
    /// `GRPC_CLIENT_RETRY_BACKOFF`: the bound of the first retry's random pause; it
    /// doubles with each retry (default `50ms`).
    pub retry_backoff: Duration,
    /// `GRPC_CLIENT_RETRY_MAX_BACKOFF`: the largest bound of a retry's pause (default `1s`).
    pub retry_max_backoff: Duration,
    /// `GRPC_CLIENT_RETRY_BUDGET`: the retry budget's tokens (gRFC A6 `maxTokens`):
    /// each failed attempt takes one, and retries stop while half or fewer are left
    /// (default `10`).
    pub retry_budget: u32,
    /// `GRPC_CLIENT_RETRY_BUDGET_RATIO`: tokens each answered attempt gives back
    /// (gRFC A6 `tokenRatio`, default `0.1`: once the budget is drawn down, about one
    /// retry per ten answered calls).
    pub retry_budget_ratio: f64,
    /// `GRPC_CLIENT_BREAKER_FAILURES`: consecutive failed attempts (UNAVAILABLE,
    /// DEADLINE_EXCEEDED, no connection) that open the circuit breaker; `0` turns it
    /// off (default `5`).
    pub breaker_failures: u32,
    /// `GRPC_CLIENT_BREAKER_OPEN`: how long an open breaker fails calls at once before
    /// it lets one probe through (default `5s`).
    pub breaker_open: Duration,
    /// `GRPC_CLIENT_MAX_CONCURRENCY`: calls to one downstream waiting for their answer
    /// (a stream counts until it starts); more fail at once with RESOURCE_EXHAUSTED
    /// (default `200`).
    pub max_concurrency: usize,
    /// `GRPC_CLIENT_DNS_REFRESH`: how often host names in `*_ADDR` are resolved again,
    /// so that calls spread over every address (every pod of a headless Service)
    /// (default `30s`).
    pub dns_refresh: Duration,
    /// `GRPC_MAX_HEADER_LIST_SIZE`: largest answer metadata (the HTTP/2 header list,
    /// trailers included) accepted, in bytes; the same limit as the servers' (default
    /// 16 KiB). A larger answer fails the call with INTERNAL, as the client's own limit,
    /// not the downstream's failure.
    pub max_header_list_size: u32,
    /// `GRPC_CLIENT_TLS_*`: how `https://` upstreams are called (default: none, and
    /// [`Env::upstream`] refuses `https://`).
    pub tls: Option<ClientTls>,
}

impl ClientConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            connect_timeout: env
                .positive_duration("GRPC_CLIENT_CONNECT_TIMEOUT", Duration::from_secs(2))?,
            request_timeout: env
                .positive_duration("GRPC_CLIENT_TIMEOUT", Duration::from_secs(5))?,
            retry_max_attempts: env.int_in("GRPC_CLIENT_RETRY_MAX_ATTEMPTS", 3, 1, 5)?,
            retry_backoff: env
                .positive_duration("GRPC_CLIENT_RETRY_BACKOFF", Duration::from_millis(50))?,
            retry_max_backoff: env
                .positive_duration("GRPC_CLIENT_RETRY_MAX_BACKOFF", Duration::from_secs(1))?,
            retry_budget: env.int_in("GRPC_CLIENT_RETRY_BUDGET", 10, 1, 1000)?,
            retry_budget_ratio: env.parse_with(
                "GRPC_CLIENT_RETRY_BUDGET_RATIO",
                0.1,
                "a number from 0.001 to 1 like 0.1",
                |v| v.parse().ok().filter(|r| (0.001..=1.0).contains(r)),
            )?,
            breaker_failures: env.int_in("GRPC_CLIENT_BREAKER_FAILURES", 5, 0, 1000)?,
            breaker_open: env
                .positive_duration("GRPC_CLIENT_BREAKER_OPEN", Duration::from_secs(5))?,
            max_concurrency: env.int_in("GRPC_CLIENT_MAX_CONCURRENCY", 200, 1, 100_000)?,
            dns_refresh: env
                .positive_duration("GRPC_CLIENT_DNS_REFRESH", Duration::from_secs(30))?,
            max_header_list_size: max_header_list_size(env)?,
            tls: ClientTls::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().copied().collect()
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        let config = ServerConfig::from_env(&env(&[("LISTEN_ADDR", "")]), 50052, 9102).unwrap();
        assert_eq!(config.listen_addr, "0.0.0.0:50052".parse().unwrap());
        assert_eq!(config.admin_addr, "0.0.0.0:9102".parse().unwrap());
        assert!(config.reflection);
        assert_eq!(config.shutdown_grace_period, Duration::from_secs(10));
        assert_eq!(config.concurrency_limit, 512);
        assert_eq!(config.max_connection_age, Some(Duration::from_secs(600)));
        assert_eq!(config.keepalive_interval, Some(Duration::from_secs(30)));
        assert_eq!(config.tcp_keepalive, Some(Duration::from_secs(60)));
        assert_eq!(config.max_header_list_size, 16 << 10);
        assert_eq!(config.max_local_error_resets, 1024);
    }

    #[test]
    fn zero_turns_the_connection_timers_off() {
        let e = env(&[
            ("GRPC_MAX_CONNECTION_AGE", "0s"),
            ("GRPC_KEEPALIVE_INTERVAL", "0"),
            ("GRPC_TCP_KEEPALIVE", "0ms"),
        ]);
        let config = ServerConfig::from_env(&e, 1, 2).unwrap();
        assert_eq!(config.max_connection_age, None);
        assert_eq!(config.keepalive_interval, None);
        assert_eq!(config.tcp_keepalive, None);
    }

    #[test]
    fn no_health_only_port_without_tls() {
        let config = ServerConfig::from_env(&env(&[]), 1, 2).unwrap();
        // Without TLS, probes use the gRPC port: no health-only port, even if set.
        assert!(config.tls.is_none());
        let e = env(&[("HEALTH_LISTEN_ADDR", "127.0.0.1:0")]);
        assert!(
            ServerConfig::from_env(&e, 1, 2)
                .unwrap()
                .health_addr
                .is_none()
        );
    }

    #[test]
    fn values_are_parsed() {
        let e = env(&[
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("GRPC_REFLECTION", "off"),
            ("SHUTDOWN_GRACE_PERIOD", "1500ms"),
            ("GRPC_REQUEST_TIMEOUT", "2m"),
            ("GRPC_MAX_CONCURRENT_STREAMS", "8"),
            ("GRPC_MAX_HEADER_LIST_SIZE", "8192"),
            ("GRPC_MAX_LOCAL_ERROR_RESETS", "10"),
        ]);
        let config = ServerConfig::from_env(&e, 50052, 9102).unwrap();
        assert_eq!(config.listen_addr, "127.0.0.1:0".parse().unwrap());
        assert!(!config.reflection);
        assert_eq!(config.shutdown_grace_period, Duration::from_millis(1500));
        assert_eq!(config.request_timeout, Duration::from_secs(120));
        assert_eq!(config.max_concurrent_streams, 8);
        assert_eq!(config.max_header_list_size, 8192);
        assert_eq!(config.max_local_error_resets, 10);
    }

    #[test]
    fn errors_name_the_variable_and_the_expectation() {
        let cases = [
            ("LISTEN_ADDR", "localhost", "socket address"),
            ("GRPC_REFLECTION", "maybe", "true or false"),
            ("SHUTDOWN_GRACE_PERIOD", "10 parsecs", "duration"),
            ("GRPC_MAX_CONCURRENT_STREAMS", "0", "from 1 to 10000"),
            ("GRPC_MAX_MESSAGE_SIZE", "-1", "integer"),
            ("GRPC_CONCURRENCY_LIMIT", "0", "from 1 to 1000000"),
            ("GRPC_MAX_CONNECTION_AGE", "forever", "duration"),
            ("GRPC_REQUEST_TIMEOUT", "0", "above zero"),
            ("GRPC_KEEPALIVE_TIMEOUT", "0s", "above zero"),
            ("GRPC_MAX_HEADER_LIST_SIZE", "4096", "from 8192 to 1048576"),
            ("GRPC_WEB_CORS_ORIGINS", "app.example.com", "origins like"),
        ];
        for (var, value, expected) in cases {
            let err = ServerConfig::from_env(&env(&[(var, value)]), 1, 2).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(var) && message.contains(value),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn upstreams_must_be_http_urls_with_host_and_port() {
        let e = env(&[
            ("A", "http://inventory:50052"),
            ("B", "inventory:50052"),
            ("C", "http://x"),
            ("D", "http://10.0.0.7:50052, http://10.0.0.8:50052"),
            ("E", "http://10.0.0.7:50052,"),
        ]);
        assert_eq!(
            e.upstream("A", "http://127.0.0.1:1").unwrap().to_string(),
            "http://inventory:50052/"
        );
        assert!(e.upstream("B", "http://127.0.0.1:1").is_err());
        // https:// only with a CA to check the server's certificate against.
        let https = env(&[("A", "https://inventory:50052")]);
        let err = https.upstream("A", "http://127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("GRPC_CLIENT_TLS_CA_FILE"), "{err}");
        assert!(e.upstream("C", "http://127.0.0.1:1").is_err());
        assert_eq!(
            e.upstream("D", "http://127.0.0.1:1").unwrap().to_string(),
            "http://10.0.0.7:50052/,http://10.0.0.8:50052/"
        );
        assert!(e.upstream("E", "http://127.0.0.1:1").is_err());
        assert_eq!(
            e.upstream("UNSET", "http://127.0.0.1:1")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:1/"
        );
    }

    #[test]
    fn client_settings_are_checked() {
        let config = ClientConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.retry_max_attempts, 3);
        assert_eq!(config.breaker_failures, 5);
        // The servers' limit: every answer a server may send is taken.
        let server = ServerConfig::from_env(&env(&[]), 1, 2).unwrap();
        assert_eq!(config.max_header_list_size, server.max_header_list_size);
        let e = env(&[("GRPC_MAX_HEADER_LIST_SIZE", "32768")]);
        assert_eq!(
            ClientConfig::from_env(&e).unwrap().max_header_list_size,
            32768
        );
        for (var, value, expected) in [
            ("GRPC_CLIENT_RETRY_MAX_ATTEMPTS", "6", "from 1 to 5"),
            ("GRPC_CLIENT_RETRY_BUDGET_RATIO", "2", "from 0.001 to 1"),
            ("GRPC_CLIENT_TIMEOUT", "0", "above zero"),
            ("GRPC_CLIENT_CONNECT_TIMEOUT", "0ms", "above zero"),
            ("GRPC_CLIENT_RETRY_BACKOFF", "0", "above zero"),
            ("GRPC_CLIENT_RETRY_MAX_BACKOFF", "0s", "above zero"),
            ("GRPC_CLIENT_BREAKER_OPEN", "0", "above zero"),
            ("GRPC_CLIENT_DNS_REFRESH", "0", "above zero"),
            ("GRPC_CLIENT_MAX_CONCURRENCY", "0", "from 1 to 100000"),
            ("GRPC_MAX_HEADER_LIST_SIZE", "1024", "from 8192 to 1048576"),
        ] {
            let message = ClientConfig::from_env(&env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(var) && message.contains(expected),
                "{message}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
