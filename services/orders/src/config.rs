//! Settings, read once at start-up.

use http::Uri;
use shared::events::EventsConfig;
use shared::{ClientConfig, ConfigError, Env, ServerConfig};

/// The local gRPC port, and the default of `LISTEN_ADDR`.
pub const PORT: u16 = 50051;

/// The local admin port (`/metrics`), and the default of `ADMIN_LISTEN_ADDR`.
pub const ADMIN_PORT: u16 = 9101;

#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    /// Timeouts of the calls to inventory and payments.
    pub client: ClientConfig,
    /// `INVENTORY_ADDR`: the inventory service (default `http://127.0.0.1:50052`).
    pub inventory_addr: Uri,
    /// `PAYMENTS_ADDR`: the payments service (default `http://127.0.0.1:50053`).
    pub payments_addr: Uri,
    /// Where order events go: JetStream when `NATS_URL` is set.
    pub events: EventsConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, PORT, ADMIN_PORT)?,
            client: ClientConfig::from_env(env)?,
            inventory_addr: env.upstream("INVENTORY_ADDR", "http://127.0.0.1:50052")?,
            payments_addr: env.upstream("PAYMENTS_ADDR", "http://127.0.0.1:50053")?,
            events: EventsConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_default_to_their_local_ports_and_bad_ones_are_named() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.server.listen_addr.port(), PORT);
        assert_eq!(config.inventory_addr, "http://127.0.0.1:50052");
        assert_eq!(config.payments_addr, "http://127.0.0.1:50053");

        let env: Env = [("PAYMENTS_ADDR", "payments:50053")].into_iter().collect();
        let message = Config::from_env(&env).unwrap_err().to_string();
        assert!(message.contains("PAYMENTS_ADDR"), "{message}");
    }
}
