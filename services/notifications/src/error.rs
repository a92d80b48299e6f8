//! The one mapping from notifications errors to gRPC statuses.

use shared::ValidationError;
use shared::status;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("notifications storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(e) => e.into(),
            Error::Storage(_) => status::internal(&error),
        }
    }
}
