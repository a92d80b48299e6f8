//! Settings, read once at start-up.

use shared::{ConfigError, Env, ServerConfig};

/// The local gRPC port, and the default of `LISTEN_ADDR`.
pub const PORT: u16 = {{port}};

/// The local admin port (`/metrics`), and the default of `ADMIN_LISTEN_ADDR`.
pub const ADMIN_PORT: u16 = {{admin_port}};

#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, PORT, ADMIN_PORT)?,
        })
    }
}
