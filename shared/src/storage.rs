//! What every service's stores fail with, in one place: [`StorageError`], its one
//! mapping from `sqlx` and to a gRPC status, and [`lock`] for the in-memory stores.
//!
//! A service's own error has one variant for it, `Storage(#[from] StorageError)`, and
//! its status mapping passes it on: `Error::Storage(e) => e.into()`.

use std::sync::{Mutex, MutexGuard};

use tonic::Status;

use crate::status::{self, ErrorChain};

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database is out of reach or overloaded ([`crate::db::is_unavailable`]): the
    /// caller may retry. UNAVAILABLE.
    #[error("storage is unavailable")]
    Unavailable(#[source] Source),
    /// Anything else: a bug, a broken invariant, a poisoned lock. INTERNAL.
    #[error("storage failed")]
    Failed(#[source] Source),
}

impl StorageError {
    /// A failure that is not the database's availability.
    pub fn failed(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Failed(Box::new(error))
    }
}

/// A database error: out of reach or overloaded (UNAVAILABLE), or anything else
/// (INTERNAL).
impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&error) {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Failed(Box::new(error))
        }
    }
}

/// UNAVAILABLE ("… try again", logged as a warning) or INTERNAL (logged as an error,
/// its details kept out of the answer).
impl From<StorageError> for Status {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Unavailable(_) => {
                tracing::warn!(error = %ErrorChain(&error), "storage unavailable");
                Status::unavailable(format!("{error}; try again"))
            }
            StorageError::Failed(_) => status::internal(&error),
        }
    }
}

/// Locks the state of an in-memory store. A panic while the lock was held may have
/// left a half-applied change: the store refuses to go on rather than serve it.
pub fn lock<T>(state: &Mutex<T>) -> Result<MutexGuard<'_, T>, StorageError> {
    state
        .lock()
        .map_err(|poisoned| StorageError::failed(std::io::Error::other(poisoned.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_unavailable_and_anything_else_internal() {
        let status = Status::from(StorageError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "storage is unavailable; try again");
        let status = Status::from(StorageError::from(sqlx::Error::RowNotFound));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn a_poisoned_lock_is_refused() {
        let state = std::sync::Arc::new(Mutex::new(1));
        let poisoner = state.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock().unwrap();
            panic!("a change applied halfway");
        })
        .join();
        assert!(matches!(lock(&state), Err(StorageError::Failed(_))));
    }
}
