//! The one mapping from payment errors to gRPC statuses.

use shared::ValidationError;
use shared::status::{self, Precondition};
use shared::storage::StorageError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("payment {id:?} not found")]
    PaymentNotFound { id: String },
    #[error("card declined: {reason}")]
    CardDeclined { payment_id: String, reason: String },
    #[error("request_id {request_id:?} was already used for a different charge")]
    RequestConflict { request_id: String },
    #[error("a charge with request_id {request_id:?} is being authorized")]
    ChargeInProgress { request_id: String },
    /// The provider did not answer; the payment stays pending and is resumed.
    #[error("the card provider did not answer")]
    ProviderUnavailable(String),
    #[error("payment {id:?} was declined; there is nothing to refund")]
    NotCaptured { id: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The `ErrorInfo.domain` of this service's errors.
const DOMAIN: &str = "payments.v1";

/// A database error: [`StorageError`] decides what it is.
impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Storage(error.into())
    }
}

/// Anything else a store fails with (a broken invariant): INTERNAL.
pub(crate) fn storage_error(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Storage(StorageError::failed(error))
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(e) => e.into(),
            Error::PaymentNotFound { id } => status::not_found("payment", &id),
            Error::CardDeclined { ref payment_id, .. } => status::with_reason(
                Code::FailedPrecondition,
                error.to_string(),
                "CARD_DECLINED",
                DOMAIN,
                [("payment_id", payment_id.as_str())],
            ),
            Error::RequestConflict { request_id } => status::key_reused("request_id", &request_id),
            Error::NotCaptured { ref id } => status::failed_precondition(
                error.to_string(),
                &[Precondition {
                    kind: "PAYMENT_STATUS",
                    subject: id.clone(),
                    description: "declined payments cannot be refunded".into(),
                }],
            ),
            Error::ChargeInProgress { .. } => Status::unavailable(format!("{error}; try again")),
            Error::ProviderUnavailable(ref detail) => {
                tracing::warn!(%detail, "card provider unavailable");
                Status::unavailable(format!("{error}; try again"))
            }
            Error::Storage(e) => e.into(),
        }
    }
}
