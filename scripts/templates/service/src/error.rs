//! The one mapping from {{name}} errors to gRPC statuses.

use shared::{ValidationError, status};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("item {id:?} not found")]
    ItemNotFound { id: String },
    #[error("item storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(e) => e.into(),
            Error::ItemNotFound { id } => status::not_found("item", &id),
            // Details go to the log, never to the caller.
            Error::Storage(_) => status::internal(&error),
        }
    }
}
