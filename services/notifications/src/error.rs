//! The one mapping from notifications errors to gRPC statuses.

use shared::ValidationError;
use shared::status::{self};
use shared::storage::StorageError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Another customer's notifications, to a caller that may not read them: as if
    /// there were none, so that the customer's existence is not revealed.
    #[error("customer {id:?} not found")]
    CustomerNotFound { id: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A database error: [`StorageError`] decides what it is.
impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Storage(error.into())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(e) => e.into(),
            Error::CustomerNotFound { id } => status::not_found("customer", &id),
            Error::Storage(e) => e.into(),
        }
    }
}
