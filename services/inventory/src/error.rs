//! The one mapping from inventory errors to gRPC statuses.

use shared::ValidationError;
use shared::status::{self, Precondition};
use shared::storage::StorageError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("product {sku:?} not found")]
    ProductNotFound { sku: String },
    #[error("reservation {id:?} not found")]
    ReservationNotFound { id: String },
    #[error("not enough stock for {}", skus(.0))]
    InsufficientStock(Vec<Shortage>),
    #[error("reservation_id {id:?} was already used for different items")]
    ReservationConflict { id: String },
    #[error("reservation {id:?} was released")]
    ReservationReleased { id: String },
    #[error("reservation {id:?} is committed")]
    ReservationCommitted { id: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Units of one sku that a reservation asked for but the stock cannot give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shortage {
    pub(crate) sku: String,
    pub(crate) requested: i32,
    pub(crate) available: i64,
}

fn skus(shortages: &[Shortage]) -> String {
    let skus: Vec<&str> = shortages.iter().map(|s| s.sku.as_str()).collect();
    skus.join(", ")
}

/// A database error: [`StorageError`] decides what it is.
impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Storage(error.into())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let precondition = |kind, subject: &str, description: &str| Precondition {
            kind,
            subject: subject.into(),
            description: description.into(),
        };
        match error {
            Error::Invalid(e) => e.into(),
            Error::ProductNotFound { sku } => status::not_found("product", &sku),
            Error::ReservationNotFound { id } => status::not_found("reservation", &id),
            Error::InsufficientStock(ref shortages) => {
                let violations: Vec<_> = shortages
                    .iter()
                    .map(|s| Precondition {
                        kind: "STOCK",
                        subject: s.sku.clone(),
                        description: format!(
                            "requested {}, available {}",
                            s.requested, s.available
                        ),
                    })
                    .collect();
                status::failed_precondition(error.to_string(), &violations)
            }
            Error::ReservationConflict { id } => status::key_reused("reservation_id", &id),
            Error::ReservationReleased { ref id } => status::failed_precondition(
                error.to_string(),
                &[precondition(
                    "RESERVATION_STATE",
                    id,
                    "released; it cannot be committed",
                )],
            ),
            Error::ReservationCommitted { ref id } => status::failed_precondition(
                error.to_string(),
                &[precondition(
                    "RESERVATION_STATE",
                    id,
                    "committed; it cannot be released",
                )],
            ),
            Error::Storage(e) => e.into(),
        }
    }
}
