//! The call path of a channel: deadline, bulkhead, then attempts — each admitted by
//! the breaker, sent to the next address, and retried while the policy allows.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use prometheus::IntCounter;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use super::Upstream;
use super::balance::Endpoints;
use super::outcome::{self, Health, Outcome};
use super::policy::{Backoff, Breaker, RetryBudget};
use crate::headers::{GRPC_STATUS, GRPC_TIMEOUT};
use crate::{ClientConfig, metrics};

/// Put in a request's extensions (`tonic::Request::extensions_mut`) by a caller that
/// retries the call on its own, so that the channel does not retry it too (attempts
/// would multiply). Such a caller asks [`Resilient::retry_budget`] before each retry,
/// so the downstream's one budget still bounds them. Transparent retries (the call
/// never left) still happen.
#[derive(Clone, Copy, Debug)]
pub struct NoRetry;

/// The resilient call path to one downstream (see the [module](super) documentation).
/// Cheap to clone: clones share the breaker, bulkhead, budget and connections.
#[derive(Clone, Debug)]
pub struct Resilient {
    downstream: Arc<Downstream>,
}

#[derive(Debug)]
struct Downstream {
    /// The configured address(es), for metrics labels and error messages.
    name: Arc<str>,
    endpoints: Arc<Endpoints>,
    timeout: std::time::Duration,
    max_attempts: u32,
    backoff: Backoff,
    budget: Arc<RetryBudget>,
    breaker: Arc<Breaker>,
    bulkhead: Arc<Semaphore>,
    max_concurrency: usize,
    /// The methods that may be sent again, sorted: a binary search per call.
    retry_safe: Box<[&'static str]>,
    /// `rpc_client_attempts_total` of this downstream, found once (on the first
    /// attempt, so that the series appears when it counts) rather than by its label
    /// on every attempt.
    attempts: OnceLock<IntCounter>,
}

impl Resilient {
    pub(crate) fn new(
        upstream: Upstream,
        config: &ClientConfig,
        retry_safe: &[&'static str],
    ) -> Self {
        let name: Arc<str> = Arc::from(upstream.to_string());
        let mut retry_safe: Box<[&'static str]> = retry_safe.into();
        retry_safe.sort_unstable();
        Self {
            downstream: Arc::new(Downstream {
                endpoints: Endpoints::new(&upstream, config),
                timeout: config.request_timeout,
                max_attempts: config.retry_max_attempts,
                backoff: Backoff {
                    initial: config.retry_backoff,
                    max: config.retry_max_backoff,
                },
                budget: Arc::new(RetryBudget::new(
                    config.retry_budget,
                    config.retry_budget_ratio,
                    name.clone(),
                )),
                breaker: Arc::new(Breaker::new(
                    config.breaker_failures,
                    config.breaker_open,
                    name.clone(),
                )),
                bulkhead: Arc::new(Semaphore::new(config.max_concurrency)),
                max_concurrency: config.max_concurrency,
                retry_safe,
                attempts: OnceLock::new(),
                name,
            }),
        }
    }

    /// The downstream's retry budget, for callers that retry on their own ([`NoRetry`]).
    pub fn retry_budget(&self) -> Arc<RetryBudget> {
        Arc::clone(&self.downstream.budget)
    }

    /// The downstream's circuit breaker, to observe its state.
    pub fn breaker(&self) -> Arc<Breaker> {
        Arc::clone(&self.downstream.breaker)
    }
}

impl crate::observe::ClientRpc<Resilient> {
    /// See [`Resilient::retry_budget`].
    pub fn retry_budget(&self) -> Arc<RetryBudget> {
        self.inner().retry_budget()
    }

    /// See [`Resilient::breaker`].
    pub fn breaker(&self) -> Arc<Breaker> {
        self.inner().breaker()
    }
}

impl Service<http::Request<Body>> for Resilient {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    /// Always ready: the bulkhead fails calls instead of making callers wait here.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let downstream = Arc::clone(&self.downstream);
        Box::pin(async move {
            Ok(match downstream.call(request).await {
                Ok(response) => response,
                Err(status) => status.into_http(),
            })
        })
    }
}

/// What became of one attempt.
enum Attempt {
    /// An answer to hand to the caller (success or an error the server chose).
    Answer(http::Response<Body>),
    /// Not processed: UNAVAILABLE from the server, or the connection failed.
    /// `never_sent` when no byte of the call reached the server.
    NotProcessed { status: Status, never_sent: bool },
}

impl Downstream {
    async fn call(&self, request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
        let now = Instant::now();
        let mut deadline = now + self.timeout;
        if let Some(served) = crate::deadline::current() {
            deadline = deadline.min(served);
        }
        if let Some(asked) = crate::deadline::grpc_timeout(request.headers()) {
            deadline = deadline.min(now + asked);
        }
        if deadline <= now {
            return Err(Status::deadline_exceeded(
                "the deadline of the call being served has passed; not sent",
            ));
        }
        // Held until the answer starts (its headers): a stream that then stays open
        // for hours is not a call waiting on the downstream.
        let Ok(_permit) = self.bulkhead.try_acquire() else {
            metrics::client_rejected(&self.name, "bulkhead_full");
            return Err(Status::resource_exhausted(format!(
                "{} calls to {} in flight already (GRPC_CLIENT_MAX_CONCURRENCY)",
                self.max_concurrency, self.name
            )));
        };
        tokio::time::timeout_at(deadline, self.attempts(request, deadline))
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "{}: no answer before the deadline",
                    self.name
                )))
            })
    }

    async fn attempts(
        &self,
        request: http::Request<Body>,
        deadline: Instant,
    ) -> Result<http::Response<Body>, Status> {
        let (parts, body) = request.into_parts();
        let safe = self.retry_safe.binary_search(&parts.uri.path()).is_ok();
        let retry = safe && parts.extensions.get::<NoRetry>().is_none();
        // A call sent again needs its message again: only retry-safe calls (never
        // client streams, see [`super::channel`]) are kept in memory.
        let (mut body, kept) = if safe {
            let bytes = body
                .collect()
                .await
                .map_err(|e| Status::internal(format!("encoding the request failed: {e}")))?
                .to_bytes();
            (None, Some(bytes))
        } else {
            (Some(body), None)
        };
        let mut attempt = 1;
        let mut transparent = 0;
        loop {
            let body = match &kept {
                Some(bytes) => Body::new(http_body_util::Full::new(bytes.clone())),
                None => body.take().expect("a call that is not kept is sent once"),
            };
            let mut request = http::Request::from_parts(clone_parts(&parts), body);
            set_grpc_timeout(request.headers_mut(), deadline);
            let (status, never_sent) = match self.attempt(request, deadline).await? {
                Attempt::Answer(response) => return Ok(response),
                Attempt::NotProcessed { status, never_sent } => (status, never_sent),
            };
            // Another address may take it at once: it never left, so it costs nothing.
            if never_sent && kept.is_some() && transparent + 1 < self.endpoints.len() {
                transparent += 1;
                metrics::client_transparent_retry(&self.name);
                continue;
            }
            if !retry || attempt >= self.max_attempts {
                return Err(status);
            }
            let pause = self.backoff.delay(attempt);
            if Instant::now() + pause >= deadline || !self.budget.try_retry() {
                return Err(status);
            }
            tracing::debug!(upstream = %self.name, %status, ?pause, attempt, "not processed; retrying");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// One attempt: admitted by the breaker, sent to the next address, and its
    /// outcome judged by [`outcome::classify`] and reported to the breaker and the
    /// budget.
    async fn attempt(
        &self,
        request: http::Request<Body>,
        deadline: Instant,
    ) -> Result<Attempt, Status> {
        let now = Instant::now();
        let Some(ticket) = self.breaker.admit(now) else {
            metrics::client_rejected(&self.name, "breaker_open");
            return Err(Status::unavailable(format!(
                "{}: circuit breaker open after repeated failures",
                self.name
            )));
        };
        if self.endpoints.is_empty() {
            self.endpoints.wait_resolved().await;
        }
        let Some(backend) = self.endpoints.pick(now) else {
            return Err(Status::unavailable(format!(
                "{}: no address resolved",
                self.name
            )));
        };
        self.attempts
            .get_or_init(|| metrics::client_attempts(&self.name))
            .inc();
        let guard = FailOnDrop {
            ticket: Some(ticket),
            deadline,
        };
        let result = backend.channel.clone().oneshot(request).await;
        let ticket = guard.take();
        let (outcome, answer) = match result {
            Ok(response) => match grpc_status(response.headers()) {
                Some(code) => (Outcome::Answered(code), Ok(response)),
                // Not trailers-only: the answer's status comes later, in its trailers,
                // and the downstream is up.
                None => (Outcome::Answered(Code::Ok), Ok(response)),
            },
            // tonic's own timer, set from the `grpc-timeout` header: our deadline.
            Err(error) if error_chain_has::<tonic::TimeoutExpired>(&error) => {
                (Outcome::TimedOut, Err(error))
            }
            Err(error) if error_chain_has::<tonic::ConnectError>(&error) => {
                (Outcome::NotConnected, Err(error))
            }
            Err(error) if outcome::refused_by_this_client(&error) => (Outcome::Refused, Err(error)),
            Err(error) => (Outcome::Broken, Err(error)),
        };
        let verdict = outcome::classify(outcome);
        let now = Instant::now();
        match verdict.health {
            Health::Up => {
                ticket.success();
                self.budget.answered();
            }
            Health::Down => {
                ticket.failure(now);
                if verdict.retry {
                    self.budget.failed();
                }
            }
            // Dropped unreported: the breaker stays as it is.
            Health::Unknown => drop(ticket),
        }
        if matches!(outcome, Outcome::NotConnected | Outcome::Broken) {
            self.endpoints.eject(&backend, now);
        }
        let status = match (outcome, answer) {
            (_, Ok(response)) if !verdict.retry => return Ok(Attempt::Answer(response)),
            (_, Ok(response)) => Status::from_header_map(response.headers())
                .unwrap_or_else(|| Status::unavailable("unavailable")),
            (Outcome::TimedOut, Err(_)) => {
                return Err(Status::deadline_exceeded(format!(
                    "{} at {}: no answer before the deadline",
                    self.name, backend.addr
                )));
            }
            (Outcome::Refused, Err(error)) => {
                // The downstream's answer broke this client's limits: the call was
                // processed, and says nothing of the downstream; not sent again.
                return Err(Status::internal(format!(
                    "{} at {}: answer refused (over this client's limits, e.g. \
                     GRPC_MAX_HEADER_LIST_SIZE): {}",
                    self.name,
                    backend.addr,
                    crate::status::ErrorChain(&error)
                )));
            }
            (_, Err(error)) => Status::unavailable(format!(
                "{} at {}: {}",
                self.name,
                backend.addr,
                crate::status::ErrorChain(&error)
            )),
        };
        Ok(Attempt::NotProcessed {
            status,
            never_sent: outcome == Outcome::NotConnected,
        })
    }
}

/// Reports a failure to the breaker when the attempt is dropped unfinished at its
/// deadline: a downstream that does not answer in time is failing. Dropped earlier,
/// the caller hung up, which says nothing of the downstream.
struct FailOnDrop {
    ticket: Option<super::policy::Ticket>,
    deadline: Instant,
}

impl FailOnDrop {
    fn take(mut self) -> super::policy::Ticket {
        self.ticket.take().expect("taken once")
    }
}

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some(ticket) = self.ticket.take()
            && now >= self.deadline
        {
            ticket.failure(now);
        }
    }
}

fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request.into_parts().0
}

/// `grpc-timeout` for what is left until `deadline`: the server then stops working on
/// the call when the caller stops waiting for it.
fn set_grpc_timeout(headers: &mut http::HeaderMap, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    // At most 8 digits: microseconds up to 100 s, milliseconds up to 27 hours.
    let value = match left.as_micros() {
        micros @ ..100_000_000 => format!("{micros}u"),
        _ => format!("{}m", left.as_millis().min(99_999_999)),
    };
    headers.insert(
        GRPC_TIMEOUT,
        http::HeaderValue::from_str(&value).expect("digits and a unit"),
    );
}

/// The status of a trailers-only response (how errors come back), if this is one.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let code: i32 = headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()?;
    Some(Code::from(code))
}

/// Whether `E` is among the causes of `error`: [`tonic::ConnectError`] says that
/// nothing of the call was sent.
fn error_chain_has<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<E>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_fit_in_eight_digits() {
        let mut headers = http::HeaderMap::new();
        let parse = |headers: &http::HeaderMap| crate::deadline::grpc_timeout(headers).unwrap();
        set_grpc_timeout(
            &mut headers,
            Instant::now() + std::time::Duration::from_secs(5),
        );
        let sent = parse(&headers);
        assert!(sent <= std::time::Duration::from_secs(5), "{sent:?}");
        assert!(sent > std::time::Duration::from_secs(4), "{sent:?}");
        set_grpc_timeout(
            &mut headers,
            Instant::now() + std::time::Duration::from_secs(3600),
        );
        assert!(parse(&headers) > std::time::Duration::from_secs(3500));
        set_grpc_timeout(&mut headers, Instant::now());
        assert_eq!(parse(&headers), std::time::Duration::ZERO);
    }
}
