//! How the resilient channel judges what became of one attempt: [`classify`], the one
//! table that says which outcomes are retried and which count against the downstream
//! (its circuit breaker and retry budget).
//!
//! The rule: **a caller's own fault never counts against the callee.** A request the
//! downstream refused for what it asked (INVALID_ARGUMENT, NOT_FOUND, a message over its
//! size limit, …), and an answer this client refused for its own limits (a header list
//! over `GRPC_MAX_HEADER_LIST_SIZE`), say nothing of the downstream's health: were they
//! to count, one client's bad requests would open the breaker, and every other caller
//! would be refused with it. Only what shows the downstream failing counts: no
//! connection, a broken one, UNAVAILABLE, no answer in time. Only what was not processed
//! is retried (and only for retry-safe methods, under the budget).

use tonic::Code;

/// What became of one attempt, as the channel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The downstream answered with this gRPC status (`Ok` included).
    Answered(Code),
    /// No connection could be made: nothing of the call was sent.
    NotConnected,
    /// The connection broke, or the downstream reset the stream, before an answer.
    Broken,
    /// An answer came, but this client refused it for its own limits (a header list
    /// over `GRPC_MAX_HEADER_LIST_SIZE`, or another rule of HTTP/2 it enforces on what
    /// it receives). The downstream did process the call.
    Refused,
    /// No answer before the deadline (this client's timer).
    TimedOut,
}

/// What an attempt says of the downstream, for its circuit breaker and retry budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// It answered: it is up (a success for the breaker; the budget gains).
    Up,
    /// It failed the call (a failure for the breaker).
    Down,
    /// Nothing either way: the outcome is the caller's doing. Neither moves.
    Unknown,
}

/// The verdict on one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the call may be sent again (if its method is retry-safe, within its
    /// deadline and the retry budget). A retried attempt also takes a budget token.
    pub retry: bool,
    pub health: Health,
}

/// The table. Shown in the README's "Resilience" section; one test per row below.
pub fn classify(outcome: Outcome) -> Verdict {
    use Health::{Down, Unknown, Up};
    let (retry, health) = match outcome {
        Outcome::Answered(code) => match code {
            // The downstream could not take the call: not processed, try again.
            Code::Unavailable => (true, Down),
            // It took the call but did not finish it in time.
            Code::DeadlineExceeded => (false, Down),
            // The request's own fault: what it asked, who asked, how much it sent.
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
            | Code::ResourceExhausted => (false, Unknown),
            // Any other answer, errors included: the downstream is up and processed the
            // call (so it is not sent again).
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => (false, Up),
        },
        Outcome::NotConnected | Outcome::Broken => (true, Down),
        Outcome::Refused => (false, Unknown),
        Outcome::TimedOut => (false, Down),
    };
    Verdict { retry, health }
}

/// Whether `error` (of a transport, as returned by a tonic channel) is this client
/// refusing what the downstream sent: an HTTP/2 error its own library raised, such as
/// the stream reset (PROTOCOL_ERROR) for a header list over the limit, or the
/// connection closed (ENHANCE_YOUR_CALM) for one far over it.
pub(crate) fn refused_by_this_client(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_library();
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(outcome: Outcome) -> (bool, Health) {
        let Verdict { retry, health } = classify(outcome);
        (retry, health)
    }

    #[test]
    fn unavailable_is_retried_and_counts() {
        assert_eq!(
            verdict(Outcome::Answered(Code::Unavailable)),
            (true, Health::Down)
        );
    }

    #[test]
    fn deadline_exceeded_from_the_server_counts_but_is_not_retried() {
        assert_eq!(
            verdict(Outcome::Answered(Code::DeadlineExceeded)),
            (false, Health::Down)
        );
    }

    #[test]
    fn the_callers_own_faults_are_neither_retried_nor_counted() {
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::OutOfRange,
            Code::ResourceExhausted,
        ] {
            assert_eq!(
                verdict(Outcome::Answered(code)),
                (false, Health::Unknown),
                "{code:?}"
            );
        }
    }

    #[test]
    fn other_answers_show_the_downstream_up_and_are_not_retried() {
        for code in [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::Aborted,
            Code::Unimplemented,
            Code::Internal,
            Code::DataLoss,
        ] {
            assert_eq!(
                verdict(Outcome::Answered(code)),
                (false, Health::Up),
                "{code:?}"
            );
        }
    }

    #[test]
    fn no_connection_is_retried_and_counts() {
        assert_eq!(verdict(Outcome::NotConnected), (true, Health::Down));
    }

    #[test]
    fn a_broken_connection_is_retried_and_counts() {
        assert_eq!(verdict(Outcome::Broken), (true, Health::Down));
    }

    #[test]
    fn an_answer_refused_for_this_clients_limits_is_neither_retried_nor_counted() {
        assert_eq!(verdict(Outcome::Refused), (false, Health::Unknown));
    }

    #[test]
    fn no_answer_in_time_counts_but_is_not_retried() {
        assert_eq!(verdict(Outcome::TimedOut), (false, Health::Down));
    }

    #[test]
    fn only_errors_raised_by_this_clients_http2_are_refusals() {
        let local = h2::Error::from(h2::Reason::PROTOCOL_ERROR);
        assert!(
            !refused_by_this_client(&local),
            "a reason alone is the peer's"
        );
        let io = std::io::Error::other("connection reset");
        assert!(!refused_by_this_client(&io));
    }
}
