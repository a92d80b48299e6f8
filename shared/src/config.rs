//! The settings of every gRPC server and of every client of another service, read
//! from the same variables in every service ([`crate::env`] reads them).

use std::net::SocketAddr;
use std::time::Duration;

use crate::env::{ConfigError, Env};
use crate::tls::{ClientTls, ServerTls};
use crate::web::CorsOrigins;

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
}
