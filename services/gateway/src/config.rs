//! Settings, read once at start-up.

use shared::client::Upstream;
use shared::{ClientConfig, ConfigError, Env, ServerConfig};

/// The local HTTP port, and the default of `LISTEN_ADDR`.
pub const PORT: u16 = 8080;

/// The local admin port (`/metrics`), and the default of `ADMIN_LISTEN_ADDR`.
pub const ADMIN_PORT: u16 = 9100;

/// Default of `GATEWAY_MAX_BODY_BYTES`: an order of 100 items is about 5 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 10;

#[derive(Clone, Debug)]
pub struct Config {
    /// `LISTEN_ADDR`, `SHUTDOWN_DELAY` and `SHUTDOWN_GRACE_PERIOD`, read as for every
    /// server (the `GRPC_*` settings in it do not apply to HTTP).
    pub server: ServerConfig,
    /// How calls to the upstreams are made (`GRPC_CLIENT_*`).
    pub client: ClientConfig,
    pub upstreams: Upstreams,
    /// `GATEWAY_MAX_BODY_BYTES`: largest request body accepted; larger ones get 413
    /// (default 64 KiB).
    pub max_body_bytes: usize,
}

/// Where the services the gateway calls listen.
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// `ORDERS_ADDR` (default `http://127.0.0.1:50051`).
    pub orders: Upstream,
    /// `INVENTORY_ADDR` (default `http://127.0.0.1:50052`).
    pub inventory: Upstream,
    /// `NOTIFICATIONS_ADDR` (default `http://127.0.0.1:50054`).
    pub notifications: Upstream, // remove-service: notifications
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, PORT, ADMIN_PORT)?,
            client: ClientConfig::from_env(env)?,
            upstreams: Upstreams {
                orders: env.upstream("ORDERS_ADDR", "http://127.0.0.1:50051")?,
                inventory: env.upstream("INVENTORY_ADDR", "http://127.0.0.1:50052")?,
                notifications: env.upstream("NOTIFICATIONS_ADDR", "http://127.0.0.1:50054")?, // remove-service: notifications
            },
            max_body_bytes: env.int_in(
                "GATEWAY_MAX_BODY_BYTES",
                DEFAULT_MAX_BODY_BYTES,
                1024,
                16 << 20,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_local_ports() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.server.listen_addr.port(), PORT);
        assert_eq!(
            config.upstreams.orders.to_string(),
            "http://127.0.0.1:50051/"
        );
        assert_eq!(
            config.upstreams.inventory.to_string(),
            "http://127.0.0.1:50052/"
        );
        assert_eq!(
            config.upstreams.notifications.to_string(),
            "http://127.0.0.1:50054/"
        ); // remove-service: notifications
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("ORDERS_ADDR", "orders:50051"),
            ("GATEWAY_MAX_BODY_BYTES", "1"),
        ] {
            let env: Env = [(var, value)].into_iter().collect();
            let message = Config::from_env(&env).unwrap_err().to_string();
            assert!(message.contains(var), "{message}");
        }
    }
}
