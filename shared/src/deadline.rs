//! Bounds every call by the client's deadline and the server's own limit, and answers
//! DEADLINE_EXCEEDED when it runs out, as the gRPC spec says. (tonic's built-in
//! `Server::timeout` answers CANCELLED, which clients treat as their own cancellation.)
//!
//! The deadline is also made known to the handler's task ([`current`]), so that the
//! calls the handler makes to other services are bounded by it (`shared::client`
//! sends what is left of it on as their `grpc-timeout`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::{Instant, Timeout};
use tonic::Status;
use tower::{Layer, Service};

use crate::headers::GRPC_TIMEOUT;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The deadline of the call this task is serving, if it serves one. Tasks spawned
/// from a handler do not inherit it: work that must outlive the call (orders' saga)
/// runs in a task of its own for that reason.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Runs `future` as if serving a call due at `deadline` (what [`Deadline`] does for
/// every call): calls made through `shared::client` inside it are bounded by it.
pub async fn scope<F: Future>(deadline: Instant, future: F) -> F::Output {
    DEADLINE.scope(deadline, future).await
}

/// Applies [`Deadline`] to a service.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    limit: Duration,
}

impl DeadlineLayer {
    /// `limit` caps every call, whatever deadline the client sent.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            limit: self.limit,
        }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Deadline<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let timeout = match grpc_timeout(request.headers()) {
            Some(client) if client < self.limit => client,
            _ => self.limit,
        };
        // tonic runs a timer of its own on the client's deadline, outside this layer,
        // and answers CANCELLED. Its timer starts after this call returns, and it polls
        // this layer's future before its timer: so this deadline is never later, and
        // when both fire at once, the answer is this one (tests/system/bad_input.rs).
        let deadline = Instant::now() + timeout;
        let response = DEADLINE.scope(deadline, self.inner.call(request));
        DeadlineFuture {
            inner: tokio::time::timeout_at(deadline, response),
        }
    }
}

pin_project! {
    /// The answer of [`Deadline`]: the inner service's, or DEADLINE_EXCEEDED.
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: Timeout<TaskLocalFuture<Instant, F>>,
    }
}

impl<F, B, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::task::ready!(self.project().inner.poll(cx)) {
            Ok(result) => Poll::Ready(result),
            Err(_) => Poll::Ready(Ok(
                Status::deadline_exceeded("deadline exceeded").into_http()
            )),
        }
    }
}

pub(crate) fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn parses_the_grpc_timeout_header() {
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("S"), None);
        assert_eq!(parse("10x"), None);
        assert_eq!(parse("-1S"), None);
    }
}
