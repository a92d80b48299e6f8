//! The port where a card provider plugs in ([`Authorizer`]), and the test card network
//! that stands behind it by default ([`TestCardNetwork`]). No tonic, no database here.
//!
//! To take real money, implement [`Authorizer`] for your provider's API and hand it to
//! [`crate::build_with`]. Pass the idempotency key on as the provider's own (Stripe's
//! `Idempotency-Key` header, Adyen's `idempotency-key`, Braintree's `requestId`): it is
//! what makes an authorization that a dead process started safe to resume.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use shared::Money;

/// The card token the test network always declines.
pub const DECLINED_TOKEN: &str = "tok_declined";

/// What the provider is asked to authorize and capture.
#[derive(Clone, Copy, Debug)]
pub struct Authorization<'a> {
    pub card_token: &'a str,
    pub amount: &'a Money,
    pub order_id: &'a str,
    pub customer_id: &'a str,
}

/// The provider's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Approved,
    /// Declined by the issuer or the provider; the reason is meant for the customer.
    Declined {
        reason: String,
    },
}

/// No answer from the provider: the authorization may or may not have happened. The
/// payment stays pending and is resumed with the same idempotency key.
#[derive(Debug, thiserror::Error)]
#[error("the card provider did not answer: {0}")]
pub struct Unanswered(pub String);

#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// Authorizes and captures, **at most once per `idempotency_key`**: a call repeated
    /// with a key already used (a retry, or a resumption by another replica) answers
    /// the first call's decision and moves no money again. Payments uses one key per
    /// payment and calls again only when the first call's answer was lost.
    async fn authorize(
        &self,
        idempotency_key: &str,
        request: Authorization<'_>,
    ) -> Result<Decision, Unanswered>;
}

/// How many keys the test network remembers: real providers keep theirs for about a
/// day; a bound keeps a long-running `make run` from growing without end.
const REMEMBERED_KEYS: usize = 100_000;

/// The test card network: [`DECLINED_TOKEN`] is declined, every other token approved.
/// Like a real provider it keeps each idempotency key's decision, and it counts the
/// authorizations it made, which tests compare with the payments recorded.
#[derive(Debug, Default)]
pub struct TestCardNetwork {
    keys: Mutex<Keys>,
    calls: AtomicUsize,
}

#[derive(Debug, Default)]
struct Keys {
    decisions: HashMap<String, Decision>,
    /// Oldest first, to forget beyond [`REMEMBERED_KEYS`].
    order: VecDeque<String>,
}

impl TestCardNetwork {
    /// Calls of [`Authorizer::authorize`], repeated keys included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Distinct authorizations made (one per idempotency key).
    pub fn authorizations(&self) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decisions
            .len()
    }
}

#[async_trait]
impl Authorizer for TestCardNetwork {
    async fn authorize(
        &self,
        idempotency_key: &str,
        request: Authorization<'_>,
    ) -> Result<Decision, Unanswered> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        // A map of plain values: a panic elsewhere cannot leave it half-changed.
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(decision) = keys.decisions.get(idempotency_key) {
            tracing::info!(
                idempotency_key,
                order_id = request.order_id,
                "test card network: a repeated key answers its first decision"
            );
            return Ok(decision.clone());
        }
        let decision = if request.card_token == DECLINED_TOKEN {
            Decision::Declined {
                reason: "card declined by the issuer".into(),
            }
        } else {
            Decision::Approved
        };
        if keys.order.len() == REMEMBERED_KEYS
            && let Some(oldest) = keys.order.pop_front()
        {
            keys.decisions.remove(&oldest);
        }
        // Like a provider's dashboard: what was authorized, for tests across processes.
        tracing::info!(idempotency_key, order_id = request.order_id, amount = %request.amount, ?decision, "test card network: authorized");
        keys.order.push_back(idempotency_key.to_owned());
        keys.decisions
            .insert(idempotency_key.to_owned(), decision.clone());
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(token: &'a str, amount: &'a Money) -> Authorization<'a> {
        Authorization {
            card_token: token,
            amount,
            order_id: "o1",
            customer_id: "c1",
        }
    }

    #[tokio::test]
    async fn a_key_is_authorized_once_and_answers_its_first_decision_again() {
        let network = TestCardNetwork::default();
        let amount = Money::new("USD", 100);
        let first = network.authorize("k1", request("tok_visa", &amount)).await;
        // The same key with another token: still the first decision.
        let again = network
            .authorize("k1", request(DECLINED_TOKEN, &amount))
            .await;
        assert_eq!(first.unwrap(), Decision::Approved);
        assert_eq!(again.unwrap(), Decision::Approved);
        assert_eq!((network.calls(), network.authorizations()), (2, 1));

        let declined = network
            .authorize("k2", request(DECLINED_TOKEN, &amount))
            .await
            .unwrap();
        assert!(matches!(declined, Decision::Declined { .. }));
        assert_eq!(network.authorizations(), 2);
    }
}
