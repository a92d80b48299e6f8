//! Settings, read once at start-up.

use shared::db::DbConfig;

pub use crate::domain::AuthorizationConfig;
use shared::{ConfigError, Env, ServerConfig};

/// The local gRPC port, and the default of `LISTEN_ADDR`.
pub const PORT: u16 = 50053;

/// The local admin port (`/metrics`), and the default of `ADMIN_LISTEN_ADDR`.
pub const ADMIN_PORT: u16 = 9103;

#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    /// `DATABASE_URL` and the other `DATABASE_*` variables: PostgreSQL keeps the state
    /// when set; unset, it is kept in memory (lost at exit).
    pub database: Option<DbConfig>,
    /// `AUTHORIZATION_TIMEOUT`: how long the card provider may take to answer.
    pub authorization: AuthorizationConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, PORT, ADMIN_PORT)?,
            database: DbConfig::from_env(env)?,
            authorization: AuthorizationConfig {
                timeout: env.positive_duration(
                    "AUTHORIZATION_TIMEOUT",
                    AuthorizationConfig::default().timeout,
                )?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_timeout_is_read_and_zero_is_refused() {
        let env: Env = [("AUTHORIZATION_TIMEOUT", "2s")].into_iter().collect();
        let config = Config::from_env(&env).unwrap();
        assert_eq!(config.authorization.timeout.as_secs(), 2);

        let env: Env = [("AUTHORIZATION_TIMEOUT", "0s")].into_iter().collect();
        let message = Config::from_env(&env).unwrap_err().to_string();
        assert!(message.contains("AUTHORIZATION_TIMEOUT"), "{message}");
    }
}
