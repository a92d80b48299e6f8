//! Settings, read once at start-up.

use std::time::Duration;

use shared::client::Upstream;
use shared::db::DbConfig;
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
    pub inventory_addr: Upstream,
    /// `PAYMENTS_ADDR`: the payments service (default `http://127.0.0.1:50053`).
    pub payments_addr: Upstream,
    /// Where order events go: JetStream when `NATS_URL` is set.
    pub events: EventsConfig,
    /// `DATABASE_URL` and the other `DATABASE_*` variables: PostgreSQL keeps the orders
    /// and their outbox when set; unset, they are kept in memory (lost at exit).
    pub database: Option<DbConfig>,
    pub outbox: OutboxConfig,
    pub saga: SagaConfig,
}

/// How the relay publishes the outbox's events (`outbox.rs`).
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// `OUTBOX_POLL_INTERVAL` (default `1s`): how often the relay looks for pending
    /// events besides being woken by each commit of this process: events committed by
    /// another replica, or left by a process that stopped before publishing them.
    pub poll_interval: Duration,
    /// `OUTBOX_BATCH_SIZE` (default 100): most events claimed and published per pass.
    pub batch_size: usize,
    /// `OUTBOX_RETENTION` (default `24h`): how long a published event stays in the
    /// outbox table, to look into, before the relay deletes it (`0s`: at its next
    /// pruning, within a minute).
    pub retention: Duration,
    /// `OUTBOX_CLAIM_LEASE` (default `10s`): how long a relay's claim on the events it
    /// is publishing keeps other relays off them (PostgreSQL). A relay that dies
    /// mid-publication delays them by at most this; one that takes longer than this
    /// may see them published twice (consumers de-duplicate).
    pub claim_lease: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            batch_size: 100,
            retention: Duration::from_secs(24 * 60 * 60),
            claim_lease: Duration::from_secs(10),
        }
    }
}

impl OutboxConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default = Self::default();
        Ok(Self {
            poll_interval: env.positive_duration("OUTBOX_POLL_INTERVAL", default.poll_interval)?,
            batch_size: env.int_in("OUTBOX_BATCH_SIZE", default.batch_size, 1, 10_000)?,
            retention: env.duration("OUTBOX_RETENTION", default.retention)?,
            claim_lease: env.positive_duration("OUTBOX_CLAIM_LEASE", default.claim_lease)?,
        })
    }
}

/// How sagas stranded by a process that died mid-saga are resumed (`saga.rs`).
#[derive(Clone, Debug)]
pub struct SagaConfig {
    /// `SAGA_RESUME_AFTER` (default `30s`): a pending order is resumed by whichever
    /// process finds it first once no process has shown it runs its saga for this long
    /// (its creator, or the process that claimed it, renews the claim a few times
    /// within it). Also the claim's lease.
    pub resume_after: Duration,
    /// `SAGA_RESUME_INTERVAL` (default `10s`): how often a process looks for stranded
    /// orders; it also looks once at start-up.
    pub resume_interval: Duration,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            resume_after: Duration::from_secs(30),
            resume_interval: Duration::from_secs(10),
        }
    }
}

impl SagaConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default = Self::default();
        let at_least = |name: &str, value: Duration| {
            if value >= MIN_SAGA_DURATION {
                return Ok(value);
            }
            // Zero would resume every saga while it runs, or scan without a pause.
            Err(ConfigError {
                var: name.to_owned(),
                value: env.get(name).unwrap_or_default().to_owned(),
                expected: format!("a duration of at least {MIN_SAGA_DURATION:?}"),
            })
        };
        Ok(Self {
            resume_after: at_least(
                "SAGA_RESUME_AFTER",
                env.duration("SAGA_RESUME_AFTER", default.resume_after)?,
            )?,
            resume_interval: at_least(
                "SAGA_RESUME_INTERVAL",
                env.duration("SAGA_RESUME_INTERVAL", default.resume_interval)?,
            )?,
        })
    }
}

/// The shortest `SAGA_RESUME_AFTER` and `SAGA_RESUME_INTERVAL`.
const MIN_SAGA_DURATION: Duration = Duration::from_millis(100);

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            server: ServerConfig::from_env(env, PORT, ADMIN_PORT)?,
            client: ClientConfig::from_env(env)?,
            inventory_addr: env.upstream("INVENTORY_ADDR", "http://127.0.0.1:50052")?,
            payments_addr: env.upstream("PAYMENTS_ADDR", "http://127.0.0.1:50053")?,
            events: EventsConfig::from_env(env)?,
            database: DbConfig::from_env(env)?,
            outbox: OutboxConfig::from_env(env)?,
            saga: SagaConfig::from_env(env)?,
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
        assert_eq!(config.inventory_addr.to_string(), "http://127.0.0.1:50052/");
        assert_eq!(config.payments_addr.to_string(), "http://127.0.0.1:50053/");

        let env: Env = [("PAYMENTS_ADDR", "payments:50053")].into_iter().collect();
        let message = Config::from_env(&env).unwrap_err().to_string();
        assert!(message.contains("PAYMENTS_ADDR"), "{message}");
    }

    #[test]
    fn saga_resumption_has_safe_defaults_and_refuses_zero() {
        let config = SagaConfig::from_env(&Env::default()).unwrap();
        assert_eq!(config.resume_after, Duration::from_secs(30));
        assert_eq!(config.resume_interval, Duration::from_secs(10));

        let env: Env = [
            ("SAGA_RESUME_AFTER", "2s"),
            ("SAGA_RESUME_INTERVAL", "500ms"),
        ]
        .into_iter()
        .collect();
        let config = SagaConfig::from_env(&env).unwrap();
        assert_eq!(config.resume_after, Duration::from_secs(2));
        assert_eq!(config.resume_interval, Duration::from_millis(500));

        for name in ["SAGA_RESUME_AFTER", "SAGA_RESUME_INTERVAL"] {
            let env: Env = [(name, "0")].into_iter().collect();
            let message = Config::from_env(&env).unwrap_err().to_string();
            assert!(message.contains(name), "{message}");
            assert!(message.contains("at least 100ms"), "{message}");
        }
    }

    #[test]
    fn a_zero_outbox_poll_interval_or_claim_lease_is_refused_by_name() {
        for var in ["OUTBOX_POLL_INTERVAL", "OUTBOX_CLAIM_LEASE"] {
            let env: Env = [(var, "0s")].into_iter().collect();
            let error = Config::from_env(&env).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(var), "{message}");
            assert!(message.contains("above zero"), "{message}");
        }
    }
}
