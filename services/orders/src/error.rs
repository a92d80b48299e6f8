//! The one mapping from orders errors to gRPC statuses, and the ways a call to another
//! service can fail, as the saga tells them apart.

use shared::ValidationError;
use shared::status::{self, ErrorChain};
use shared::storage::StorageError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("order {id:?} not found")]
    OrderNotFound { id: String },
    /// The caller may not act for this customer (`domain::may_act_for`).
    #[error("the caller may not act for customer {customer_id:?}")]
    NotTheCustomer { customer_id: String },
    /// Another customer's orders, to a caller that may not see them: as if there were
    /// none, so that their existence is not revealed.
    #[error("customer {id:?} not found")]
    CustomerNotFound { id: String },
    #[error("request_id {request_id:?} was already used for a different order")]
    RequestConflict { request_id: String },
    /// The prices could not be looked up. No order exists yet, so nothing is held.
    #[error("cannot price the order")]
    Pricing(#[source] UpstreamError),
    #[error("order {order_id} cannot go from {from} to {to}")]
    InvalidTransition {
        order_id: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("the saga of order {order_id} stopped before the end")]
    SagaAborted {
        order_id: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The order changed under a saga that no longer holds it: another process runs
    /// (or ran) its saga.
    #[error("the saga of order {order_id} is run by another process")]
    Superseded { order_id: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// How a call to inventory or payments failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// A business "no": a declined card, too little stock, a product gone. The message
    /// is the upstream's, meant for the customer.
    #[error("{0}")]
    Refused(String),
    /// No answer (unreachable, timed out): the call may or may not have taken effect.
    /// Every call of the saga is idempotent, so it may be retried.
    #[error("{detail}")]
    Unavailable {
        upstream: &'static str,
        detail: String,
    },
    /// Any other answer: a bug on one side or the other. Retrying would not help.
    #[error("{detail}")]
    Failed {
        upstream: &'static str,
        detail: String,
    },
}

impl UpstreamError {
    /// Why an order ended because of this, for its `status_reason`: what the customer
    /// may know, without our addresses or internals.
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::Refused(message) => message.clone(),
            Self::Unavailable { upstream, .. } => format!("{upstream} is unavailable"),
            Self::Failed { upstream, .. } => format!("{upstream} failed"),
        }
    }
}

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
            Error::OrderNotFound { id } => status::not_found("order", &id),
            Error::NotTheCustomer { customer_id } => Status::permission_denied(format!(
                "the caller may not act for customer {customer_id:?}"
            )),
            Error::CustomerNotFound { id } => status::not_found("customer", &id),
            Error::RequestConflict { request_id } => status::key_reused("request_id", &request_id),
            // Nothing was done: the caller can safely retry the same request.
            Error::Pricing(UpstreamError::Unavailable { upstream, .. }) => {
                tracing::warn!(error = %ErrorChain(&error), "cannot place the order");
                Status::unavailable(format!("{upstream} is unavailable; try again"))
            }
            Error::Storage(e) => e.into(),
            Error::Superseded { .. } => Status::aborted(format!("{error}; get the order")),
            Error::Pricing(_) | Error::InvalidTransition { .. } | Error::SagaAborted { .. } => {
                status::internal(&error)
            }
        }
    }
}
