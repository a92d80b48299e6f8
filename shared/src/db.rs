//! PostgreSQL, for the services that keep state, when `DATABASE_URL` is set (without
//! it they keep it in memory: the embedded default).
//!
//! - Each service works in its own schema, named after the service (`orders`, …): one
//!   `DATABASE_URL` can serve every service (the `stack` launcher passes one through)
//!   or each its own database (Kubernetes), and their tables never mix.
//! - Each service embeds its migrations (`sqlx::migrate!()`, `services/<name>/migrations/`)
//!   and [`connect`] runs them at start-up, in that schema. sqlx takes an advisory lock
//!   while migrating, so replicas starting together migrate once.
//! - Queries are checked at run time (`sqlx::query`), so building never needs a database.
//!
//! A database that is not reachable yet (Kubernetes starts everything at once) is
//! retried until `DATABASE_CONNECT_TIMEOUT`, then start-up fails with the cause.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};

use crate::env::{ConfigError, Env};

/// The variable that selects PostgreSQL: a `postgres://user:password@host:port/database`
/// URL (libpq's parameters such as `sslmode` allowed).
pub const DATABASE_URL: &str = "DATABASE_URL";

/// Where the database is and how to use it, from `DATABASE_*` variables.
#[derive(Clone)]
pub struct DbConfig {
    options: PgConnectOptions,
    /// `DATABASE_MAX_CONNECTIONS` (default 10): the pool's size.
    pub max_connections: u32,
    /// `DATABASE_CONNECT_TIMEOUT` (default 30s): how long start-up waits for the database.
    pub connect_timeout: Duration,
    /// `DATABASE_ACQUIRE_TIMEOUT` (default 5s): how long a query waits for a connection
    /// of the pool before failing (UNAVAILABLE to the caller).
    pub acquire_timeout: Duration,
}

/// Without the password, which must never reach a log.
impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("host", &self.options.get_host())
            .field("port", &self.options.get_port())
            .field("database", &self.options.get_database())
            .field("username", &self.options.get_username())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl DbConfig {
    /// `None` when `DATABASE_URL` is unset: the service keeps its state in memory.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(url) = env.get(DATABASE_URL) else {
            return Ok(None);
        };
        let invalid = |why: String| ConfigError {
            var: DATABASE_URL.to_owned(),
            // The URL may hold a password: never repeat it.
            value: redact(url),
            expected: format!("a URL like postgres://user:password@host:5432/database ({why})"),
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "the scheme must be postgres:// or postgresql://".into(),
            ));
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
        Ok(Some(Self {
            // sqlx logs every statement at INFO by default: far too chatty for a service.
            options: options.log_statements(log::LevelFilter::Debug),
            max_connections: env.int_in("DATABASE_MAX_CONNECTIONS", 10, 1, 1000)?,
            connect_timeout: env
                .positive_duration("DATABASE_CONNECT_TIMEOUT", Duration::from_secs(30))?,
            acquire_timeout: env
                .positive_duration("DATABASE_ACQUIRE_TIMEOUT", Duration::from_secs(5))?,
        }))
    }

    /// The same database reached with `url` instead: for tests.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        Ok(Self::from_env(&Env::default().with(DATABASE_URL, url))?
            .expect("DATABASE_URL was just set"))
    }
}

/// `url` with every password in it replaced by `***`: the one of the user info
/// (`user:password@`) and any query parameter whose name holds `password`
/// (`?password=…`, which libpq and sqlx accept too). For every message and log line
/// that shows a database URL.
pub fn redact(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (url, None),
    };
    let mut redacted = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://{rest}"),
            },
            None => format!("{scheme}://{rest}"),
        },
        None => url.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&pairs.join("&"));
    }
    redacted
}

/// The database could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL at {host}:{port} within {waited:?}")]
    Connect {
        host: String,
        port: u16,
        waited: Duration,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create schema {schema:?}")]
    Schema {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot fill schema {schema:?} with its initial data")]
    Seed {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate schema {schema:?}")]
    Migrate {
        schema: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot listen on channel {channel:?}")]
    Listen {
        channel: String,
        #[source]
        source: sqlx::Error,
    },
}

/// A pool of connections working in schema `schema` (the service's name), created if
/// need be and migrated with `migrator` (`sqlx::migrate!()`).
pub async fn connect(
    config: &DbConfig,
    schema: &str,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    create_schema(config, schema).await?;
    let options = config
        .options
        .clone()
        .options([("search_path", schema)])
        .application_name(schema);
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_lazy_with(options);
    migrator
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            schema: schema.to_owned(),
            source,
        })?;
    tracing::info!(
        host = config.options.get_host(),
        database = config.options.get_database(),
        schema,
        "using PostgreSQL"
    );
    Ok(pool)
}

/// Creates `schema` unless it exists, waiting for the database to accept connections.
async fn create_schema(config: &DbConfig, schema: &str) -> Result<(), DbError> {
    let mut connection = connect_once_up(config).await?;
    // An identifier cannot be a bind parameter: quote it, doubling any quote inside.
    let statement = format!(
        "CREATE SCHEMA IF NOT EXISTS \"{}\"",
        schema.replace('"', "\"\"")
    );
    let created = sqlx::raw_sql(&statement).execute(&mut connection).await;
    // Two replicas racing can both miss the schema; the loser's error is a duplicate:
    // 42P06 (duplicate_schema), or, when both pass the IF NOT EXISTS check at once, the
    // catalog's own unique index (23505).
    match created {
        Ok(_) => {}
        Err(ref error) if is_unique_violation(error) => {}
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P06") => {}
        Err(source) => {
            return Err(DbError::Schema {
                schema: schema.to_owned(),
                source,
            });
        }
    }
    let _ = connection.close().await;
    Ok(())
}

/// The longest one connection attempt may take. sqlx bounds none: a host that takes the
/// connection and never answers, or drops the packets (a firewall, a NetworkPolicy),
/// would hold an attempt for the kernel's TCP timeout (minutes), or forever, past
/// `DATABASE_CONNECT_TIMEOUT`.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection, retried with backoff until `config.connect_timeout`.
async fn connect_once_up(config: &DbConfig) -> Result<sqlx::PgConnection, DbError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let limit = ATTEMPT_TIMEOUT.min(config.connect_timeout.saturating_sub(started.elapsed()));
        let attempt = tokio::time::timeout(limit, config.options.connect())
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {limit:?}"),
                )))
            });
        match attempt {
            Ok(connection) => return Ok(connection),
            Err(source) if started.elapsed() + backoff > config.connect_timeout => {
                return Err(DbError::Connect {
                    host: config.options.get_host().to_owned(),
                    port: config.options.get_port(),
                    waited: started.elapsed(),
                    source,
                });
            }
            Err(error) => {
                tracing::warn!(
                    host = config.options.get_host(),
                    port = config.options.get_port(),
                    %error,
                    retry_in = ?backoff,
                    "PostgreSQL not reachable yet"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Whether `error` says the database is out of reach or overloaded rather than that the
/// query is wrong: no connection free in the pool within `DATABASE_ACQUIRE_TIMEOUT`, a
/// connection that broke, a transaction chosen as a deadlock victim. The caller may
/// retry: services answer UNAVAILABLE (other database errors are INTERNAL).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exceptions; 40001 serialization failure, 40P01 deadlock;
        // 53: insufficient resources (too many connections); 57P01-03: shutting down.
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    code.as_ref(),
                    "40001" | "40P01" | "57P01" | "57P02" | "57P03"
                )
        }),
        _ => false,
    }
}

/// `time` as microseconds since the Unix epoch (PostgreSQL's `TIMESTAMPTZ` precision).
/// sqlx maps `SystemTime` only with an extra date crate, so times cross as `BIGINT`:
/// written as `TIMESTAMPTZ 'epoch' + $1 * INTERVAL '1 microsecond'` (exact), read as
/// `(EXTRACT(EPOCH FROM t) * 1000000)::BIGINT` (exact: `EXTRACT` is `numeric`).
/// Times before the epoch are clamped to it (none of ours are).
pub fn micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The time `micros` microseconds after the Unix epoch (see [`micros`]).
pub fn from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// `time` rounded down to what a `TIMESTAMPTZ` keeps, so that a value written and read
/// back compares equal.
pub fn truncate_to_micros(time: SystemTime) -> SystemTime {
    from_micros(micros(time))
}

/// Whether `error` is a unique-constraint violation (SQLSTATE 23505): the way a
/// database says "this idempotency key was used before".
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("23505"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_url_means_no_database() {
        assert!(DbConfig::from_env(&Env::default()).unwrap().is_none());
    }

    #[test]
    fn a_bad_url_names_the_variable_and_hides_the_password() {
        let env = Env::default().with(DATABASE_URL, "mysql://app:s3cret@db/orders");
        let error = DbConfig::from_env(&env).unwrap_err();
        assert_eq!(error.var, DATABASE_URL);
        let message = error.to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("mysql://app:***@db/orders"), "{message}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let config = DbConfig::from_url("postgres://app:s3cret@db:5433/orders").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(
            debug.contains("5433") && debug.contains("orders"),
            "{debug}"
        );
    }

    #[test]
    fn pool_settings_are_read_and_checked() {
        let env = Env::default()
            .with(DATABASE_URL, "postgres://db/orders")
            .with("DATABASE_MAX_CONNECTIONS", "3")
            .with("DATABASE_CONNECT_TIMEOUT", "2s");
        let config = DbConfig::from_env(&env).unwrap().unwrap();
        assert_eq!(config.max_connections, 3);
        assert_eq!(config.connect_timeout, Duration::from_secs(2));
        let env = env.with("DATABASE_MAX_CONNECTIONS", "0");
        assert_eq!(
            DbConfig::from_env(&env).unwrap_err().var,
            "DATABASE_MAX_CONNECTIONS"
        );
    }

    /// A host that takes the connection and never answers (a database still starting
    /// behind a proxy, a peer that drops packets) is given up on within
    /// DATABASE_CONNECT_TIMEOUT, with the cause, rather than waited on forever.
    #[tokio::test]
    async fn a_silent_database_is_given_up_on_within_the_connect_timeout() {
        // Bound, never accepted: the kernel completes the handshake and nothing answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let env = Env::default()
            .with(
                DATABASE_URL,
                format!("postgres://app:pw@127.0.0.1:{port}/app"),
            )
            .with("DATABASE_CONNECT_TIMEOUT", "1s");
        let config = DbConfig::from_env(&env).unwrap().unwrap();
        // A guard against a hang, not a timing assertion.
        let outcome = tokio::time::timeout(Duration::from_secs(60), connect_once_up(&config))
            .await
            .expect("connecting to a silent host never gave up");
        match outcome {
            Err(DbError::Connect {
                port: p, source, ..
            }) => {
                assert_eq!(p, port);
                assert!(source.to_string().contains("no answer"), "{source}");
            }
            Err(other) => panic!("not a connect error: {other}"),
            Ok(_) => panic!("connected to a host that never answered"),
        }
    }

    #[test]
    fn zero_timeouts_are_refused_by_name() {
        for name in ["DATABASE_CONNECT_TIMEOUT", "DATABASE_ACQUIRE_TIMEOUT"] {
            let env = Env::default()
                .with(DATABASE_URL, "postgres://db/orders")
                .with(name, "0ms");
            let error = DbConfig::from_env(&env).unwrap_err();
            assert_eq!(error.var, name);
            let message = error.to_string();
            assert!(
                message.contains(name) && message.contains("above zero"),
                "{message}"
            );
        }
    }

    #[test]
    fn redaction_keeps_everything_but_the_password() {
        assert_eq!(redact("postgres://u:p@h:1/d"), "postgres://u:***@h:1/d");
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact("postgres://u:p@ss@h/d"), "postgres://u:***@h/d");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(
            redact("postgres://u@h/d?sslmode=require&password=s3cret&application_name=x"),
            "postgres://u@h/d?sslmode=require&password=***&application_name=x"
        );
        assert_eq!(
            redact("postgres://u:p@h/d?PASSWORD=a&sslpassword=b"),
            "postgres://u:***@h/d?PASSWORD=***&sslpassword=***"
        );
        assert_eq!(redact("postgres://h/d?password"), "postgres://h/d?password");
    }

    #[test]
    fn a_password_given_as_a_query_parameter_is_never_echoed() {
        // Refused (the scheme), then accepted: neither the error nor Debug shows it.
        let bad = "mysql://db/orders?sslmode=disable&password=s3cret";
        let error = DbConfig::from_env(&Env::default().with(DATABASE_URL, bad)).unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("password=***"), "{message}");
        let debug = format!("{error:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let bad_port = "postgres://db:99999/orders?password=s3cret";
        let error = DbConfig::from_url(bad_port).unwrap_err();
        assert!(!format!("{error} {error:?}").contains("s3cret"), "{error}");

        let config = DbConfig::from_url("postgres://db/orders?password=s3cret").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
