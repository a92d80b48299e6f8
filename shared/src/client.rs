//! Channels to other services. Every generated client in the workspace is built on
//! [`channel`], so that each downstream gets, in one place:
//!
//! - **Deadlines**: every call is bounded by `GRPC_CLIENT_TIMEOUT` and, when it is made
//!   while serving a call, by that call's deadline (what is left of it), which is sent
//!   on as `grpc-timeout`. A call whose caller has already given up is not sent.
//!   Work spawned into a task of its own is detached from the request's deadline on
//!   purpose (tokio task-locals do not follow `tokio::spawn`): orders' saga outlives a
//!   PlaceOrder whose caller hung up, because stopping it halfway would leave stock
//!   held or a card charged.
//! - **Retries** ([`policy`]): only of the methods the caller names retry-safe (the
//!   services pass `contracts::RETRY_SAFE_METHODS`: those whose proto says
//!   `option idempotency_level = IDEMPOTENT;` or `NO_SIDE_EFFECTS`, except client
//!   streams, whose messages are not kept), only when the attempt was not processed
//!   (UNAVAILABLE, or no connection: [`outcome::classify`] is the one table of what is
//!   retried and what counts against the downstream; a caller's own fault never
//!   does), with exponential backoff and full jitter, within
//!   the deadline and under a retry budget (gRFC A6 retry throttling): when a
//!   downstream fails most calls, retries stop instead of multiplying its load. A call
//!   that could not even connect to one address is sent again at once to another
//!   (a transparent retry, which costs no attempt).
//! - **A circuit breaker** ([`policy::Breaker`]): after `GRPC_CLIENT_BREAKER_FAILURES`
//!   consecutive failed attempts, calls fail at once with UNAVAILABLE, without
//!   touching the network, for `GRPC_CLIENT_BREAKER_OPEN`; then one probe goes
//!   through, and its success closes the breaker.
//! - **A bulkhead**: at most `GRPC_CLIENT_MAX_CONCURRENCY` calls waiting for their
//!   answer (a stream counts until its first response headers); more fail at once
//!   with RESOURCE_EXHAUSTED rather than queue, so that one slow downstream cannot
//!   hold every task of the caller. RESOURCE_EXHAUSTED rather than UNAVAILABLE: the
//!   caller's own resource ran out, the downstream may be fine, and retrying at once
//!   would not help (it is neither retried nor counted by the breaker).
//! - **Load balancing** (`client/balance.rs`): round robin over every address of the
//!   downstream — a comma-separated list in `*_ADDR`, and every address its host
//!   names resolve to, resolved again every `GRPC_CLIENT_DNS_REFRESH` (a Kubernetes
//!   headless Service lists one per ready pod). An address that refuses connections
//!   is set aside for a while.
//! - A client span and metrics per call, and W3C trace context propagation
//!   ([`crate::observe`]); retries, breaker changes and rejections are counted too
//!   (`rpc_client_*` in [`crate::metrics`]).
//!
//! The layers, outermost first: [`ClientRpc`] (one span and one sample per call, what
//! the caller sees) → [`Resilient`] (deadline, bulkhead, retries, breaker, balancing)
//! → one lazily connected tonic channel per address, over connections that send each
//! call's HEADERS and DATA frames in one write (`client/coalesce.rs`).

use std::fmt;
use std::net::SocketAddr;

use http::Uri;
use tonic::transport::Endpoint;

use crate::config::ClientConfig;
use crate::env::{ConfigError, Env};
use crate::observe::ClientRpc;

mod balance;
mod coalesce;
pub mod outcome;
pub mod policy;
mod resilient;

pub use resilient::{NoRetry, Resilient};

/// A connection to another service, shared by all its clients; cheap to clone. Every
/// call through it gets a client span, carries the trace context to the server, and
/// is measured in `rpc_client_call_duration_seconds`.
pub type Channel = ClientRpc<Resilient>;

/// A lazily connected channel to `upstream`: nothing is dialled until the first call,
/// so a service starts even while its upstreams are still coming up, and reconnects
/// on its own when they restart. Must be called within a tokio runtime (it spawns the
/// task that resolves host names).
///
/// `retry_safe` lists the methods (`/package.Service/Method`, in any order) the channel
/// may send again when an attempt was not processed: `contracts::RETRY_SAFE_METHODS`.
/// A method not listed is sent once (and its message is not kept in memory); never
/// list a client-streaming one.
pub fn channel(
    upstream: impl Into<Upstream>,
    config: &ClientConfig,
    retry_safe: &[&'static str],
) -> Channel {
    let upstream = upstream.into();
    let first = &upstream.targets[0];
    let (host, port) = (first.host.clone(), first.port);
    let resilient = Resilient::new(upstream, config, retry_safe);
    ClientRpc::new(resilient, &host, Some(port))
}

/// The one place where a connection to one address of a downstream is configured: a
/// channel that connects on its first call. `addr` is what is dialled; `target` is the
/// address as configured, whose host name stays the request's `:authority` (and is
/// the name to verify for TLS).
pub(crate) fn connect_lazy(
    addr: SocketAddr,
    target: &Target,
    config: &ClientConfig,
) -> tonic::transport::Channel {
    let connector = coalesce::Connector::new(config.connect_timeout);
    endpoint(addr, target, config).connect_with_connector_lazy(connector)
}

fn endpoint(addr: SocketAddr, target: &Target, config: &ClientConfig) -> Endpoint {
    let uri = Uri::builder()
        .scheme(target.uri.scheme_str().unwrap_or("http"))
        .authority(addr.to_string())
        .path_and_query("/")
        .build()
        .expect("a socket address makes a valid authority");
    let endpoint = Endpoint::from(uri)
        .origin(target.uri.clone())
        // No `connect_timeout` here: the connector bounds the TCP connect itself
        // (`coalesce::Connector`), so that a connection not made in time is told apart
        // from a broken one (`outcome::classify`); the TLS handshake has its own bound.
        // TCP options go there too: tonic applies `Endpoint::tcp_*` only to the
        // connector of its own.
        // The servers' limit (one variable): every answer a server may send is taken.
        .http2_max_header_list_size(config.max_header_list_size)
        // Detect dead peers (a node gone without a FIN) instead of waiting for TCP.
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    // TLS for https:// upstreams (GRPC_CLIENT_TLS_*), verified against the configured
    // host name, not the dialled address; http:// ones stay plaintext.
    crate::tls::client_endpoint(
        endpoint,
        &target.host,
        config.tls.as_ref(),
        config.connect_timeout,
    )
}

/// Read here, with the type it parses to, so that [`crate::env`] needs no client.
impl Env {
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
}

/// The addresses of one downstream, as configured: one or more `http://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    targets: Vec<Target>,
}

/// One configured address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) uri: Uri,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Upstream {
    /// `http://host:port` or `https://host:port`, or several separated by commas;
    /// `None` if any is not one.
    pub fn parse(value: &str) -> Option<Self> {
        let targets = value
            .split(',')
            .map(|one| {
                let uri: Uri = one.trim().parse().ok()?;
                let scheme_ok = match uri.scheme_str() {
                    Some("http") => true,
                    Some("https") => crate::tls::is_valid_server_name(&uri),
                    _ => false,
                };
                scheme_ok.then_some(())?;
                let host = uri.host()?.trim_matches(['[', ']']).to_owned();
                let port = uri.port_u16()?;
                Some(Target { uri, host, port })
            })
            .collect::<Option<Vec<_>>>()?;
        (!targets.is_empty()).then_some(Self { targets })
    }

    /// Whether any address is `https://`.
    pub fn uses_tls(&self) -> bool {
        let https = |target: &Target| target.uri.scheme_str() == Some("https");
        self.targets.iter().any(https)
    }

    pub(crate) fn targets(&self) -> &[Target] {
        &self.targets
    }
}

impl From<Uri> for Upstream {
    /// One address; panics if `uri` has no host or port (a bug in the caller).
    fn from(uri: Uri) -> Self {
        Self::parse(&uri.to_string()).unwrap_or_else(|| panic!("not an upstream address: {uri}"))
    }
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Self {
        Self::parse(&format!("http://{addr}")).expect("a socket address makes a valid URI")
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, target) in self.targets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", target.uri)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().copied().collect()
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
}
