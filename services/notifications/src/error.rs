//! The one mapping from notifications errors to gRPC statuses.

use shared::ValidationError;
use shared::status::{self, ErrorChain};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Another customer's notifications, to a caller that may not read them: as if
    /// there were none, so that the customer's existence is not revealed.
    #[error("customer {id:?} not found")]
    CustomerNotFound { id: String },
    #[error("notifications storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database is out of reach or overloaded: the caller may retry.
    #[error("notifications storage is unavailable")]
    StorageUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A database error: out of reach or overloaded (UNAVAILABLE), or anything else
/// (INTERNAL).
impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if shared::db::is_unavailable(&error) {
            Self::StorageUnavailable(Box::new(error))
        } else {
            Self::Storage(Box::new(error))
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(e) => e.into(),
            Error::CustomerNotFound { id } => status::not_found("customer", &id),
            Error::StorageUnavailable(_) => {
                tracing::warn!(error = %ErrorChain(&error), "storage unavailable");
                Status::unavailable(format!("{error}; try again"))
            }
            Error::Storage(_) => status::internal(&error),
        }
    }
}
