//! How the saga retries its own calls: every call is idempotent by the order id, so a
//! call without an answer may be made again, within the downstream's retry budget.

use std::future::Future;
use std::time::Duration;

use crate::error::UpstreamError;

/// How many times a call is made before its error counts, and the pause after the
/// first try (doubling after each).
#[derive(Clone, Copy, Debug)]
pub(super) struct Retry {
    attempts: u32,
    backoff: Duration,
}

/// Steps forward: a few quick tries, then the saga compensates.
pub(super) const STEP: Retry = Retry {
    attempts: 3,
    backoff: Duration::from_millis(100),
};

/// Compensations: longer, since giving up leaves stock held or a customer charged.
pub(super) const COMPENSATION: Retry = Retry {
    attempts: 5,
    backoff: Duration::from_millis(100),
};

/// Makes `call` until it answers, retrying only when it got no answer (safe: every
/// call of the saga is idempotent) and while `may_retry` (the downstream's retry
/// budget) allows, after a random pause that doubles its bound each time.
pub(super) async fn retry<T, F>(
    policy: Retry,
    may_retry: impl Fn() -> bool,
    mut call: impl FnMut() -> F,
) -> Result<T, UpstreamError>
where
    F: Future<Output = Result<T, UpstreamError>>,
{
    let backoff = shared::client::policy::Backoff {
        initial: policy.backoff,
        max: policy.backoff * 2u32.pow(policy.attempts),
    };
    for retry in 1..policy.attempts {
        match call().await {
            Err(error @ UpstreamError::Unavailable { .. }) if may_retry() => {
                let pause = backoff.delay(retry);
                tracing::debug!(%error, ?pause, "no answer; retrying");
                tokio::time::sleep(pause).await;
            }
            answered => return answered,
        }
    }
    call().await
}
