//! Settings, read once at start-up.

use shared::db::DbConfig;
use shared::{ConfigError, Env, ServerConfig};

/// The local gRPC port, and the default of `LISTEN_ADDR`.
pub const PORT: u16 = 50052;

/// The local admin port (`/metrics`), and the default of `ADMIN_LISTEN_ADDR`.
pub const ADMIN_PORT: u16 = 9102;

#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    /// `DATABASE_URL` and the other `DATABASE_*` variables: PostgreSQL keeps the state
    /// when set; unset, it is kept in memory (lost at exit).
    pub database: Option<DbConfig>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, PORT, ADMIN_PORT)?,
            database: DbConfig::from_env(env)?,
        })
    }
}
