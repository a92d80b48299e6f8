//! What a panic becomes: one call answered INTERNAL, one event retried, one log line.
//!
//! A bug in one handler must not take down more than the request it was handling.
//! Unwinding out of a handler would otherwise reset the HTTP/2 stream (the client sees
//! a bare reset, the metrics a cancelled call) or end an event consumer's task for
//! good, silently. So the server layer ([`crate::observe`]) and the consume loop
//! ([`crate::events::consume`]) run handlers through [`catch_unwind`], and
//! [`install_hook`] puts the panic itself in the structured logs, inside the span of
//! the call or event (so with its trace id), instead of plain text on stderr.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;

/// A panic caught while polling a future: its message.
#[derive(Debug, thiserror::Error)]
#[error("panicked: {message}")]
pub struct Panic {
    pub message: String,
}

impl Panic {
    fn new(payload: &(dyn Any + Send)) -> Self {
        Self {
            message: message(payload),
        }
    }
}

/// Polls `future` to its end, catching a panic of any poll. The future is dropped
/// after a panic, never polled again. Its state may be half-updated: what it shares
/// must stay sound through a panic (a poisoned mutex is, and so is a database
/// transaction, rolled back when dropped).
pub async fn catch_unwind<F: Future>(future: F) -> Result<F::Output, Panic> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(Panic::new(payload.as_ref()))),
        }
    })
    .await
}

/// Calls `f`, catching a panic (for a poll inside a hand-written future or body).
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| Panic::new(payload.as_ref()))
}

/// Logs every panic of the process as an error event (`panic.message`,
/// `code.filepath`, `code.lineno`) in the current span, in place of the standard
/// hook's text on stderr. [`crate::telemetry::init`] installs it.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location();
        tracing::error!(
            panic.message = %message(info.payload()),
            code.filepath = location.map(std::panic::Location::file),
            code.lineno = location.map(std::panic::Location::line),
            "panicked"
        );
    }));
}

/// The message of a `panic!`: a `&str` or a `String` (formatted), else a placeholder.
fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_future_becomes_an_error_with_its_message() {
        let ok = catch_unwind(async { 7 }).await;
        assert_eq!(ok.unwrap(), 7);
        let panicked = catch_unwind(async {
            tokio::task::yield_now().await;
            panic!("bad state {}", 42);
        })
        .await;
        assert_eq!(panicked.unwrap_err().message, "bad state 42");
        let static_message = catch(|| panic!("static")).unwrap_err();
        assert_eq!(static_message.message, "static");
        let other = catch(|| std::panic::panic_any(5_u8)).unwrap_err();
        assert_eq!(other.message, "a panic without a message");
    }
}
