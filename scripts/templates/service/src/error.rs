//! The one mapping from {{name}} errors to gRPC statuses.

use shared::storage::StorageError;
use shared::{ValidationError, status};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("item {id:?} not found")]
    ItemNotFound { id: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(e) => e.into(),
            Error::ItemNotFound { id } => status::not_found("item", &id),
            // UNAVAILABLE (retry) or INTERNAL, details to the log, never to the caller.
            Error::Storage(e) => e.into(),
        }
    }
}
