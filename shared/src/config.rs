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

    /// The address of another service, e.g. `http://inventory:50052`.
    pub fn upstream(&self, name: &str, default: &str) -> Result<Uri, ConfigError> {
        let default = default
            .parse()
            .expect("default upstream address is a valid URI");
        self.parse_with(
            name,
            default,
            "an address like http://inventory:50052",
            |v| {
                let uri: Uri = v.parse().ok()?;
                let scheme_ok = uri.scheme_str() == Some("http");
                (scheme_ok && uri.host().is_some() && uri.port_u16().is_some()).then_some(uri)
            },
        )
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

fn parse_duration(value: &str) -> Option<Duration> {
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
    /// `GRPC_MAX_HEADER_LIST_SIZE`: largest request metadata (the HTTP/2 header list), in
    /// bytes; a larger one is refused with HTTP 431 (default 16 KiB).
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
}

impl ServerConfig {
    /// Reads the server settings; `port` and `admin_port` are the service's local ports.
    pub fn from_env(env: &Env, port: u16, admin_port: u16) -> Result<Self, ConfigError> {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Ok(Self {
            listen_addr: env.socket_addr("LISTEN_ADDR", any(port))?,
            admin_addr: env.socket_addr("ADMIN_LISTEN_ADDR", any(admin_port))?,
            reflection: env.flag("GRPC_REFLECTION", true)?,
            request_timeout: env.duration("GRPC_REQUEST_TIMEOUT", Duration::from_secs(30))?,
            max_concurrent_streams: env.int_in("GRPC_MAX_CONCURRENT_STREAMS", 100, 1, 10_000)?,
            max_message_size: env.int_in("GRPC_MAX_MESSAGE_SIZE", 4 << 20, 1024, 64 << 20)?,
            max_header_list_size: env.int_in(
                "GRPC_MAX_HEADER_LIST_SIZE",
                16 << 10,
                1024,
                1 << 20,
            )?,
            max_local_error_resets: env.int_in("GRPC_MAX_LOCAL_ERROR_RESETS", 1024, 1, 1 << 20)?,
            shutdown_delay: env.duration("SHUTDOWN_DELAY", Duration::ZERO)?,
            shutdown_grace_period: env
                .duration("SHUTDOWN_GRACE_PERIOD", Duration::from_secs(10))?,
        })
    }
}

/// Settings of the channels a service uses to call others.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `GRPC_CLIENT_CONNECT_TIMEOUT`: bound on establishing a connection (default `2s`).
    pub connect_timeout: Duration,
    /// `GRPC_CLIENT_TIMEOUT`: deadline of each outgoing call (default `5s`).
    pub request_timeout: Duration,
}

impl ClientConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            connect_timeout: env.duration("GRPC_CLIENT_CONNECT_TIMEOUT", Duration::from_secs(2))?,
            request_timeout: env.duration("GRPC_CLIENT_TIMEOUT", Duration::from_secs(5))?,
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
        assert_eq!(config.max_header_list_size, 16 << 10);
        assert_eq!(config.max_local_error_resets, 1024);
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
        ]);
        assert_eq!(
            e.upstream("A", "http://127.0.0.1:1").unwrap().host(),
            Some("inventory")
        );
        assert!(e.upstream("B", "http://127.0.0.1:1").is_err());
        assert!(e.upstream("C", "http://127.0.0.1:1").is_err());
        assert_eq!(
            e.upstream("UNSET", "http://127.0.0.1:1")
                .unwrap()
                .port_u16(),
            Some(1)
        );
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
