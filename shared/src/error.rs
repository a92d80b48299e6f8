use std::fmt;
use std::net::SocketAddr;

use crate::ConfigError;

/// Why a service could not start or stopped serving.
#[derive(thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
    /// The database (`DATABASE_URL`) could not be reached, prepared or migrated.
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
}

/// `main` returning `Err` prints the `Debug` form: make it the message and its causes,
/// not a struct dump.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
