//! The decisions of the resilient channel, apart from any I/O so that they are tested
//! alone: how long to wait before a retry ([`Backoff`]), whether a retry may be sent
//! at all ([`RetryBudget`]) and whether a downstream is worth calling ([`Breaker`]).

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics;

/// Exponential backoff with full jitter: the pause before retry `n` is uniformly random
/// in `[0, min(max, initial × 2ⁿ⁻¹)]`, so that callers that failed together do not
/// retry together ("Exponential Backoff And Jitter", AWS Architecture Blog).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The pause before retry `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, random_unit())
    }

    /// [`Backoff::delay`] with the random number in `[0, 1)` given.
    fn delay_with(&self, retry: u32, random: f64) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let bound = self.initial.saturating_mul(factor).min(self.max);
        bound.mul_f64(random)
    }
}

/// A random number in `[0, 1)`. The standard library's randomly keyed hasher is
/// plenty for jitter, and saves a dependency.
fn random_unit() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Retry throttling as gRFC A6 defines it (what grpc-go and grpc-java implement for
/// a service config's `retryThrottling`): a bucket of `max` tokens, full at first.
/// Every failed attempt takes one token, every answered one gives back `ratio`, and
/// retries are allowed only while more than half the tokens are left. So retries stop
/// after a few failures in a row and come back as calls succeed again: a downstream
/// that fails everything gets about one attempt per call, never `max_attempts`.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a token, as in A6, so that the ratio adds up exactly.
    tokens: AtomicU32,
    max: u32,
    ratio: u32,
    upstream: Arc<str>,
}

impl RetryBudget {
    /// `upstream` labels the retry metrics.
    pub fn new(max_tokens: u32, ratio: f64, upstream: Arc<str>) -> Self {
        let max = max_tokens.saturating_mul(1000);
        Self {
            tokens: AtomicU32::new(max),
            max,
            ratio: (ratio * 1000.0).round() as u32,
            upstream,
        }
    }

    /// An attempt failed without being processed: one token less.
    pub fn failed(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(1000))
            });
    }

    /// An attempt got an answer: `ratio` tokens more.
    pub fn answered(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(self.ratio).min(self.max))
            });
    }

    /// Whether one more retry may be sent now; counts the retry, or its refusal, in
    /// `rpc_client_retries_total` / `rpc_client_retries_throttled_total`. Callers
    /// that retry on their own (orders' saga) ask here too, so that one budget bounds
    /// every retry sent to the downstream.
    pub fn try_retry(&self) -> bool {
        let allowed = self.tokens.load(Ordering::Relaxed) > self.max / 2;
        if allowed {
            metrics::client_retry(&self.upstream);
        } else {
            metrics::client_retry_throttled(&self.upstream);
        }
        allowed
    }
}

/// The states of a [`Breaker`], as exported in `rpc_client_breaker_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of `rpc_client_breaker_state`: 0 closed, 1 half-open, 2 open.
    fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    /// Exports `self` as the state of the breaker of `upstream`.
    fn export(self, upstream: &str, changed: bool) {
        metrics::client_breaker_state(upstream, self.gauge(), self.name(), changed);
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A circuit breaker over one downstream: `failures` failed attempts in a row open it;
/// while open, [`Breaker::admit`] refuses at once; after `open_for`, one attempt (the
/// probe) is let through: its success closes the breaker, its failure opens it again.
///
/// Hand-written, ~100 lines: of the maintained crates, `recloser` has no way to
/// observe state changes (needed for the metrics) and counts failure rates over
/// call windows, and `tower-resilience` is a young family of 16 crates whose API is
/// still moving (0.13); consecutive failures with a single probe is what a gRPC
/// channel needs and is easy to read.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    /// 0: never opens.
    failures: u32,
    open_for: Duration,
    upstream: Arc<str>,
}

/// Leave to make one attempt. Report its outcome with [`Ticket::success`] or
/// [`Ticket::failure`]; a ticket dropped without either (the caller hung up, or the
/// attempt ended with an answer that says nothing of the downstream's health)
/// leaves the state as it is and lets another probe through.
#[derive(Debug)]
pub struct Ticket {
    breaker: Arc<Breaker>,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub fn new(failures: u32, open_for: Duration, upstream: Arc<str>) -> Self {
        BreakerState::Closed.export(&upstream, false);
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures,
            open_for,
            upstream,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn enter(&self, state: &mut State, next: State) {
        let name = match next {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        tracing::info!(upstream = %self.upstream, state = name.name(), "circuit breaker");
        name.export(&self.upstream, true);
        *state = next;
    }

    /// A ticket for one attempt, or `None` while the breaker is open (or half-open
    /// with its probe in flight): fail the call at once.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<Ticket> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => None?,
            State::Open { .. } => {
                self.enter(&mut state, State::HalfOpen { probing: true });
                true
            }
            State::HalfOpen { probing: true } => None?,
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
        };
        Some(Ticket {
            breaker: Arc::clone(self),
            probe,
            reported: false,
        })
    }
}

impl Ticket {
    /// The downstream answered (whatever the answer): it is up.
    pub fn success(mut self) {
        self.reported = true;
        let breaker = &self.breaker;
        let mut state = breaker.lock();
        match *state {
            State::Closed { .. } => *state = State::Closed { failures: 0 },
            State::HalfOpen { .. } if self.probe => {
                breaker.enter(&mut state, State::Closed { failures: 0 })
            }
            // An attempt that started before the breaker opened proves little.
            _ => {}
        }
    }

    /// The downstream did not answer: no connection, UNAVAILABLE, or no answer in time.
    pub fn failure(mut self, now: Instant) {
        self.reported = true;
        let breaker = &self.breaker;
        if breaker.failures == 0 {
            return;
        }
        let mut state = breaker.lock();
        let open = State::Open {
            until: now + breaker.open_for,
        };
        match *state {
            State::Closed { failures } if failures + 1 >= breaker.failures => {
                breaker.enter(&mut state, open)
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                }
            }
            State::HalfOpen { .. } if self.probe => breaker.enter(&mut state, open),
            _ => {}
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.lock();
            if let State::HalfOpen { probing: true } = *state {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> Arc<str> {
        Arc::from("policy-test")
    }

    #[test]
    fn backoff_grows_exponentially_to_its_cap_with_full_jitter() {
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        };
        let top = |retry| backoff.delay_with(retry, 1.0);
        assert_eq!(top(1), Duration::from_millis(50));
        assert_eq!(top(2), Duration::from_millis(100));
        assert_eq!(top(3), Duration::from_millis(200));
        assert_eq!(top(4), Duration::from_millis(300));
        assert_eq!(top(40), Duration::from_millis(300));
        assert_eq!(backoff.delay_with(3, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay_with(3, 0.5), Duration::from_millis(100));
        // Random pauses: spread over the whole range, never above the bound.
        let delays: Vec<_> = (0..200).map(|_| backoff.delay(2)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(100)));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(30)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(70)));
    }

    #[test]
    fn the_budget_stops_retries_after_failures_and_refills_with_answers() {
        let budget = RetryBudget::new(10, 0.5, name());
        let mut retries = 0;
        // A downstream that fails everything: only the first few failures retry.
        for _ in 0..100 {
            budget.failed();
            if budget.try_retry() {
                retries += 1;
            }
        }
        assert_eq!(retries, 4, "10 tokens: retries while more than 5 are left");
        // Answers give tokens back: 0.5 each, so 12 answers lift 0 to 6 tokens.
        for _ in 0..12 {
            budget.answered();
        }
        assert!(budget.try_retry());
        budget.failed();
        assert!(!budget.try_retry(), "5 tokens are not more than half");
        for _ in 0..1000 {
            budget.answered();
        }
        assert_eq!(budget.tokens.load(Ordering::Relaxed), 10_000, "capped");
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_closes_through_one_probe() {
        let open_for = Duration::from_secs(5);
        let breaker = Arc::new(Breaker::new(3, open_for, name()));
        let t0 = Instant::now();
        // Successes reset the count: failures must be consecutive.
        breaker.admit(t0).unwrap().failure(t0);
        breaker.admit(t0).unwrap().failure(t0);
        breaker.admit(t0).unwrap().success();
        breaker.admit(t0).unwrap().failure(t0);
        breaker.admit(t0).unwrap().failure(t0);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.admit(t0).unwrap().failure(t0);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.admit(t0 + open_for / 2).is_none(), "open: refused");

        // After `open_for`, one probe; others are refused while it is in flight.
        let later = t0 + open_for;
        let probe = breaker.admit(later).unwrap();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.admit(later).is_none());
        // A failed probe opens it again, for another `open_for`.
        probe.failure(later);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.admit(later + open_for / 2).is_none());

        // A probe whose caller gave up lets the next one through.
        let again = later + open_for;
        drop(breaker.admit(again).unwrap());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let probe = breaker.admit(again).unwrap();
        probe.success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.admit(again).unwrap().success();
    }

    #[test]
    fn a_breaker_with_no_threshold_never_opens() {
        let breaker = Arc::new(Breaker::new(0, Duration::from_secs(1), name()));
        let now = Instant::now();
        for _ in 0..100 {
            breaker.admit(now).unwrap().failure(now);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
