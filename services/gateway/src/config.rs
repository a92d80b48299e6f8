//! Settings, read once at start-up.

use std::path::PathBuf;
use std::time::Duration;

use shared::client::Upstream;
use shared::{ClientConfig, ConfigError, Env, ServerConfig};

use crate::auth::Authenticator;
use crate::connections::ConnectionLimits;
use crate::routes::Routes;

/// The local HTTP port, and the default of `LISTEN_ADDR`.
pub const PORT: u16 = 8080;

/// The local admin port (`/metrics`), and the default of `ADMIN_LISTEN_ADDR`.
pub const ADMIN_PORT: u16 = 9100;

/// Default of `GATEWAY_MAX_BODY_BYTES`: an order of 100 items is about 5 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 10;

/// Default of `GATEWAY_RATE_LIMIT`: requests per second per client, well above what
/// one person clicking through an app sends, well below what one client's flood would.
pub const DEFAULT_RATE_LIMIT: f64 = 100.0;

#[derive(Clone, Debug)]
pub struct Config {
    /// `LISTEN_ADDR`, `SHUTDOWN_DELAY` and `SHUTDOWN_GRACE_PERIOD`, read as for every
    /// server (the `GRPC_*` settings in it do not apply to HTTP).
    pub server: ServerConfig,
    /// How calls to the upstreams are made (`GRPC_CLIENT_*`).
    pub client: ClientConfig,
    pub upstreams: Upstreams,
    /// The HTTP routes: every RPC of the contracts with `option (google.api.http)`.
    pub routes: Routes,
    /// `GATEWAY_MAX_BODY_BYTES`: largest request body accepted; larger ones get 413
    /// (default 64 KiB).
    pub max_body_bytes: usize,
    /// Bearer tokens required on every route but the probes, when
    /// `GATEWAY_JWT_KEYS_FILE` is set; `None`: authentication is off.
    pub auth: Option<Auth>,
    /// The rate limit per client; `None` when `GATEWAY_RATE_LIMIT` is 0.
    pub rate_limit: Option<RateLimit>,
    /// `GATEWAY_CONCURRENCY_LIMIT`: API requests in flight at once, over all clients;
    /// one more is answered 503 at once (default 512; the probes are never refused).
    pub concurrency_limit: usize,
    /// `GATEWAY_REQUEST_TIMEOUT`: longest time from a request to the head of its
    /// answer; past it, 504 (default `10s`). Its upstream calls get what is left as
    /// their deadline, each also bounded by `GRPC_CLIENT_TIMEOUT`.
    pub request_timeout: Duration,
    /// What bounds each connection (`connections.rs`):
    /// `GATEWAY_HEADER_READ_TIMEOUT`, time to receive a request head (default `10s`);
    /// `GATEWAY_IDLE_TIMEOUT`, silence after which a connection is closed (default
    /// `60s`); `GATEWAY_MAX_CONNECTIONS`, connections open at once (default 10000).
    /// None may be zero.
    pub connections: ConnectionLimits,
}

/// JWT authentication (see `auth/`).
#[derive(Clone, Debug)]
pub struct Auth {
    /// `GATEWAY_JWT_KEYS_FILE`: the JWKS file the keys were read from (e.g. a mounted
    /// Secret), for the start-up log.
    pub keys_file: PathBuf,
    /// The keys of that file, and `GATEWAY_JWT_ISSUER` and `GATEWAY_JWT_AUDIENCE`,
    /// which tokens must name (both required with the file).
    pub authenticator: Authenticator,
}

/// A token bucket per client (see `rate_limit.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// `GATEWAY_RATE_LIMIT`: requests per second, sustained (default 100; 0 turns the
    /// limit off; fractions such as 0.5 allowed).
    pub per_second: f64,
    /// `GATEWAY_RATE_LIMIT_BURST`: requests at once after a quiet period (default:
    /// twice the rate, at least 1).
    pub burst: u32,
}

/// Where the services the gateway calls listen: one upstream per gRPC service that
/// has a route (`google.api.http`), from `{NAME}_ADDR`, where NAME is the service's
/// name (the first part of its proto package: `ORDERS_ADDR` for
/// `orders.v1.OrderService`), by default its local port.
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// In the order of the routes.
    pub services: Vec<UpstreamService>,
}

/// One service the gateway calls.
#[derive(Clone, Debug)]
pub struct UpstreamService {
    /// Its name, e.g. `orders`: in `/readyz` answers and its `ORDERS_ADDR`.
    pub name: String,
    /// The gRPC service, e.g. `orders.v1.OrderService`: what its routes call and what
    /// readiness asks.
    pub service: String,
    pub addr: Upstream,
}

impl Upstreams {
    /// The upstream of every service of `routes`.
    fn from_env(env: &Env, routes: &Routes) -> Result<Self, ConfigError> {
        let addrs = addrs(env)?;
        let mut services = Vec::new();
        for service in routes.services() {
            // One name everywhere: `orders.v1.OrderService` is served by `orders`.
            let name = service.package_name().split('.').next().unwrap_or_default();
            let Some((_, addr)) = addrs.iter().find(|(n, _)| *n == name) else {
                return Err(ConfigError {
                    var: format!("{}_ADDR", name.to_ascii_uppercase()),
                    value: String::new(),
                    expected: format!(
                        "read by the gateway (services/gateway/src/config.rs, `addrs`): it has routes to {}",
                        service.full_name()
                    ),
                });
            };
            services.push(UpstreamService {
                name: name.to_owned(),
                service: service.full_name().to_owned(),
                addr: addr.clone(),
            });
        }
        Ok(Self { services })
    }

    /// The upstream named `name` (e.g. `orders`).
    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| &s.addr)
    }
}

/// The address of each service the gateway can route to, by name: its `{NAME}_ADDR`,
/// by default its local port, as every binary finds its upstreams when started with no
/// configuration.
fn addrs(env: &Env) -> Result<Vec<(&'static str, Upstream)>, ConfigError> {
    Ok(vec![
        (
            "orders",
            env.upstream("ORDERS_ADDR", "http://127.0.0.1:50051")?,
        ),
        (
            "inventory",
            env.upstream("INVENTORY_ADDR", "http://127.0.0.1:50052")?,
        ),
        // remove-service: notifications {
        (
            "notifications",
            env.upstream("NOTIFICATIONS_ADDR", "http://127.0.0.1:50054")?,
        ),
        // remove-service: notifications }
        // new-service: `make new-service` adds each new service above this line.
    ])
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let routes = Routes::contracts().map_err(crate::route_error)?;
        Ok(Self {
            server: ServerConfig::from_env(env, PORT, ADMIN_PORT)?,
            client: ClientConfig::from_env(env)?,
            upstreams: Upstreams::from_env(env, &routes)?,
            routes,
            max_body_bytes: env.int_in(
                "GATEWAY_MAX_BODY_BYTES",
                DEFAULT_MAX_BODY_BYTES,
                1024,
                16 << 20,
            )?,
            auth: auth(env)?,
            rate_limit: rate_limit(env)?,
            concurrency_limit: env.int_in("GATEWAY_CONCURRENCY_LIMIT", 512, 1, 1_000_000)?,
            request_timeout: env
                .positive_duration("GATEWAY_REQUEST_TIMEOUT", Duration::from_secs(10))?,
            connections: ConnectionLimits {
                header_read_timeout: env
                    .positive_duration("GATEWAY_HEADER_READ_TIMEOUT", Duration::from_secs(10))?,
                idle_timeout: env
                    .positive_duration("GATEWAY_IDLE_TIMEOUT", Duration::from_secs(60))?,
                max_connections: env.int_in("GATEWAY_MAX_CONNECTIONS", 10_000, 1, 1_000_000)?,
            },
        })
    }
}

fn auth(env: &Env) -> Result<Option<Auth>, ConfigError> {
    const KEYS: &str = "GATEWAY_JWT_KEYS_FILE";
    const ISSUER: &str = "GATEWAY_JWT_ISSUER";
    const AUDIENCE: &str = "GATEWAY_JWT_AUDIENCE";
    let error = |var: &str, value: &str, expected: String| ConfigError {
        var: var.to_owned(),
        value: value.to_owned(),
        expected,
    };
    let (issuer, audience) = (env.get(ISSUER), env.get(AUDIENCE));
    let Some(path) = env.get(KEYS) else {
        // Half a configuration would silently leave the gateway open.
        if let Some((var, value)) = [(ISSUER, issuer), (AUDIENCE, audience)]
            .into_iter()
            .find_map(|(var, value)| Some((var, value?)))
        {
            return Err(error(var, value, format!("to be unset while {KEYS} is")));
        }
        return Ok(None);
    };
    let required = |var: &str| {
        error(
            var,
            "",
            format!("the value tokens must carry: required with {KEYS}"),
        )
    };
    let issuer = issuer.ok_or_else(|| required(ISSUER))?;
    let audience = audience.ok_or_else(|| required(AUDIENCE))?;
    let jwks = std::fs::read_to_string(path)
        .map_err(|e| error(KEYS, path, format!("a readable JWKS file ({e})")))?;
    let authenticator = Authenticator::from_jwks(&jwks, issuer, audience).map_err(|e| {
        error(
            KEYS,
            path,
            format!("a JWKS file (RFC 7517) of public signing keys ({e})"),
        )
    })?;
    Ok(Some(Auth {
        keys_file: path.into(),
        authenticator,
    }))
}

fn rate_limit(env: &Env) -> Result<Option<RateLimit>, ConfigError> {
    let per_second = env.parse_with(
        "GATEWAY_RATE_LIMIT",
        DEFAULT_RATE_LIMIT,
        "requests per second per client: a number from 0 (no limit) to 1000000",
        |v| v.parse::<f64>().ok().filter(|n| (0.0..=1e6).contains(n)),
    )?;
    // Twice the rate: room for a page that fires its requests at once.
    let default_burst = (per_second * 2.0).ceil().max(1.0) as u32;
    let burst = env.int_in("GATEWAY_RATE_LIMIT_BURST", default_burst, 1, 1_000_000)?;
    Ok((per_second > 0.0).then_some(RateLimit { per_second, burst }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_local_ports() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.server.listen_addr.port(), PORT);
        let addr = |upstream: &Upstream| upstream.to_string();
        let upstream = |name: &str| addr(config.upstreams.get(name).unwrap());
        assert_eq!(upstream("orders"), "http://127.0.0.1:50051/");
        assert_eq!(upstream("inventory"), "http://127.0.0.1:50052/");
        assert_eq!(upstream("notifications"), "http://127.0.0.1:50054/"); // remove-service: notifications
        assert_eq!(
            config.upstreams.services.len(),
            addrs(&Env::default()).unwrap().len()
        );
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(config.auth.is_none());
        let limit = config.rate_limit.unwrap();
        assert_eq!((limit.per_second, limit.burst), (DEFAULT_RATE_LIMIT, 200));
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off() {
        let env: Env = [("GATEWAY_RATE_LIMIT", "0")].into_iter().collect();
        assert!(Config::from_env(&env).unwrap().rate_limit.is_none());
        let env: Env = [("GATEWAY_RATE_LIMIT", "0.5")].into_iter().collect();
        let limit = Config::from_env(&env).unwrap().rate_limit.unwrap();
        assert_eq!((limit.per_second, limit.burst), (0.5, 1));
    }

    #[test]
    fn auth_needs_all_three_variables() {
        let dir = std::env::temp_dir().join(format!("gateway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("jwks.json");
        let jwks = r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        std::fs::write(&keys, jwks).unwrap();
        let not_json = dir.join("not.json");
        std::fs::write(&not_json, "-----BEGIN PUBLIC KEY-----").unwrap();
        let (keys, not_json) = (keys.to_str().unwrap(), not_json.to_str().unwrap());
        let all = [
            ("GATEWAY_JWT_KEYS_FILE", keys),
            ("GATEWAY_JWT_ISSUER", "https://issuer.example"),
            ("GATEWAY_JWT_AUDIENCE", "gateway"),
        ];
        let config = Config::from_env(&all.into_iter().collect()).unwrap();
        assert_eq!(config.auth.unwrap().authenticator.key_count(), 1);
        // Each one missing, and the file unreadable or not a JWKS: named in the error.
        for (i, var) in [
            "GATEWAY_JWT_ISSUER",
            "GATEWAY_JWT_AUDIENCE",
            "GATEWAY_JWT_KEYS_FILE",
        ]
        .into_iter()
        .enumerate()
        {
            let mut some = all.to_vec();
            some.remove((i + 1) % 3);
            let message = Config::from_env(&some.into_iter().collect())
                .unwrap_err()
                .to_string();
            assert!(message.contains(var), "{message}");
        }
        for path in ["/nonexistent/jwks.json", not_json] {
            let mut env = all.to_vec();
            env[0].1 = path;
            let message = Config::from_env(&env.into_iter().collect())
                .unwrap_err()
                .to_string();
            assert!(message.contains("GATEWAY_JWT_KEYS_FILE"), "{message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("ORDERS_ADDR", "orders:50051"),
            ("GATEWAY_MAX_BODY_BYTES", "1"),
            ("GATEWAY_RATE_LIMIT", "-1"),
            ("GATEWAY_RATE_LIMIT", "fast"),
            ("GATEWAY_RATE_LIMIT_BURST", "0"),
            ("GATEWAY_HEADER_READ_TIMEOUT", "0s"),
            ("GATEWAY_IDLE_TIMEOUT", "0"),
            ("GATEWAY_MAX_CONNECTIONS", "0"),
        ] {
            let env: Env = [(var, value)].into_iter().collect();
            let message = Config::from_env(&env).unwrap_err().to_string();
            assert!(message.contains(var), "{message}");
        }
    }
}
