//! Payments, how a charge is authorized, and the rules a request must follow. No tonic
//! here.
//!
//! A charge is recorded (PENDING) **before** the card is authorized, and claimed for a
//! while by the one caller that authorizes it:
//!
//! ```text
//! Charge ─► record PENDING, claimed ─► authorize(key = payment id) ─► CAPTURED | DECLINED
//!              │ request_id seen: its outcome, or UNAVAILABLE while another caller's claim holds
//!              └ claim expired (that process died): taken over, authorized again with the same key
//! ```
//!
//! So a card is authorized at most once per `request_id`, on any replica and whatever
//! the concurrency, and an authorization that was started is always finished: by the
//! caller's retry, or by [`Payments::resume_stalled`] once its claim has expired. The
//! provider's idempotency key makes the second call of a resumed authorization answer
//! the first one's decision.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use contracts::common::v1 as pb;
use shared::tasks::Pass;
use shared::{Money, PageRequest, ValidationError, Violations};
use tokio_util::sync::CancellationToken;

use crate::authorizer::{Authorization, Authorizer, Decision};
use crate::error::{Error, storage_error};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PaymentStatus {
    /// Recorded; its authorization was started and has not ended.
    Pending,
    Captured,
    Declined,
    Refunded,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Payment {
    pub(crate) id: String,
    pub(crate) request_id: String,
    pub(crate) order_id: String,
    pub(crate) customer_id: String,
    pub(crate) amount: Money,
    pub(crate) status: PaymentStatus,
    pub(crate) status_reason: String,
    pub(crate) create_time: SystemTime,
    pub(crate) update_time: SystemTime,
}

/// What a refund does to a payment, as the domain decides it; the stores only apply it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refund {
    /// Already refunded: the retry answers the payment as it is.
    Done,
    /// Its authorization has not ended: the refund is recorded, and applied when the
    /// authorization ends (captured: refunded then; declined: nothing to refund).
    Deferred,
    /// Captured: refunded now.
    Apply,
}

impl Payment {
    /// What a refund of this payment does; a declined one has nothing to refund.
    pub(crate) fn refund(&self) -> Result<Refund, Error> {
        match self.status {
            PaymentStatus::Refunded => Ok(Refund::Done),
            PaymentStatus::Pending => Ok(Refund::Deferred),
            PaymentStatus::Captured => Ok(Refund::Apply),
            PaymentStatus::Declined => Err(Error::NotCaptured {
                id: self.id.clone(),
            }),
        }
    }
}

/// A valid `Charge` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) request_id: String,
    pub(crate) order_id: String,
    pub(crate) customer_id: String,
    pub(crate) amount: Money,
    pub(crate) card_token: String,
}

impl Charge {
    pub(crate) fn new(
        request_id: String,
        order_id: String,
        customer_id: String,
        amount: Option<&pb::Money>,
        card_token: String,
    ) -> Result<Self, ValidationError> {
        let mut violations = Violations::new();
        violations.id("request_id", &request_id);
        violations.id("order_id", &order_id);
        violations.id("customer_id", &customer_id);
        let amount = amount.map(|m| (m.currency_code.as_str(), m.amount_minor));
        let amount = Money::parse("amount", amount, &mut violations);
        violations.id("card_token", &card_token);
        violations.finish()?;
        Ok(Self {
            request_id,
            order_id,
            customer_id,
            amount: amount.expect("validated above"),
            card_token,
        })
    }

    /// Whether `payment` was made by this same request (an idempotent retry).
    pub(crate) fn made(&self, payment: &Payment) -> bool {
        payment.order_id == self.order_id
            && payment.customer_id == self.customer_id
            && payment.amount == self.amount
    }

    /// The payment this charge records before its card is authorized.
    pub(crate) fn pending(self) -> Pending {
        let now = shared::db::truncate_to_micros(SystemTime::now());
        Pending {
            payment: Payment {
                id: shared::id::new("pay"),
                request_id: self.request_id,
                order_id: self.order_id,
                customer_id: self.customer_id,
                amount: self.amount,
                status: PaymentStatus::Pending,
                status_reason: String::new(),
                create_time: now,
                update_time: now,
            },
            card_token: self.card_token,
        }
    }
}

/// A payment whose authorization has started and not ended, with what resuming it
/// needs. The card token is kept only until the payment is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) payment: Payment,
    pub(crate) card_token: String,
}

/// How long an authorization may take: a call to the provider is given up after
/// `timeout` (the payment stays pending, to be resumed), and a caller's claim on a
/// pending payment lasts twice that, so that it outlives the call it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthorizationConfig {
    pub timeout: Duration,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
        }
    }
}

impl AuthorizationConfig {
    fn claim(&self) -> Duration {
        self.timeout.saturating_mul(2)
    }
}

/// What [`Store::begin`] found.
#[derive(Debug)]
pub(crate) enum Begun {
    /// This caller's to authorize: recorded now, or found pending under an expired
    /// claim (its process died) and taken over.
    Claimed(Pending),
    /// The payment its `request_id` already made: decided, or pending under another
    /// caller's claim.
    Found(Payment),
}

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Records `pending` and claims it for `claim`, unless its `request_id` was seen
    /// (whoever races, one record per request_id).
    async fn begin(&self, pending: Pending, claim: Duration) -> Result<Begun, Error>;

    /// Ends a pending payment with `decision` ([`Decision::end`], given the refund
    /// asked for meanwhile, if any); a payment already decided is returned unchanged.
    async fn finish(&self, payment_id: &str, decision: &Decision) -> Result<Payment, Error>;

    /// Ends this caller's claim on a pending payment, so that the next one resumes it
    /// at once.
    async fn release(&self, payment_id: &str) -> Result<(), Error>;

    /// Claims for `claim` up to `limit` pending payments whose claim has expired.
    async fn claim_stalled(&self, claim: Duration, limit: usize) -> Result<Vec<Pending>, Error>;

    /// Captured → refunded, idempotent; pending → the refund is recorded and applied
    /// when the payment ends. Declined: [`Error::NotCaptured`].
    async fn refund(&self, payment_id: &str, reason: &str) -> Result<Payment, Error>;

    /// One payment; [`Error::PaymentNotFound`] if unknown.
    async fn payment(&self, payment_id: &str) -> Result<Payment, Error>;

    /// Up to `page.size + 1` payments (of `order_id`, if given) in creation order, after
    /// the page key `page.after` (see [`position_key`](shared::pagination::position_key)).
    async fn payments(
        &self,
        order_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Vec<(String, Payment)>, Error>;
}

/// How often a retry that found its charge being authorized looks again.
const IN_PROGRESS_POLL: Duration = Duration::from_millis(20);

/// Stalled payments resumed per look.
const RESUME_BATCH: usize = 100;

/// The payments service's decisions over its store and the card provider.
pub(crate) struct Payments {
    store: Arc<dyn Store>,
    authorizer: Arc<dyn Authorizer>,
    config: AuthorizationConfig,
}

impl Payments {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        authorizer: Arc<dyn Authorizer>,
        config: AuthorizationConfig,
    ) -> Self {
        Self {
            store,
            authorizer,
            config,
        }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Charges once per `request_id`: a retry returns the first outcome (a declined
    /// card stays [`Error::CardDeclined`]); other parameters under the same id are
    /// [`Error::RequestConflict`]. A retry that finds the charge being authorized by
    /// another caller waits for its outcome, or takes it over if that caller's claim
    /// expires; [`Error::ChargeInProgress`] if neither happens within the claim.
    pub(crate) async fn charge(&self, charge: Charge) -> Result<Payment, Error> {
        let waited_since = tokio::time::Instant::now();
        let claimed = loop {
            match self
                .store
                .begin(charge.clone().pending(), self.config.claim())
                .await?
            {
                Begun::Claimed(claimed) => break claimed,
                Begun::Found(existing) if existing.status != PaymentStatus::Pending => {
                    return retried(&charge, existing);
                }
                Begun::Found(existing) if !charge.made(&existing) => {
                    return retried(&charge, existing);
                }
                Begun::Found(_) if waited_since.elapsed() >= self.config.claim() => {
                    return Err(Error::ChargeInProgress {
                        request_id: charge.request_id,
                    });
                }
                Begun::Found(_) => tokio::time::sleep(IN_PROGRESS_POLL).await,
            }
        };
        if !charge.made(&claimed.payment) {
            // A stalled payment of another request under this id: not ours to resume.
            self.store.release(&claimed.payment.id).await?;
            return Err(Error::RequestConflict {
                request_id: charge.request_id,
            });
        }
        outcome(self.authorize(claimed).await?)
    }

    /// Authorizes a claimed payment and records the decision, in a task of its own:
    /// a caller that gives up (its deadline, a dropped connection) does not stop an
    /// authorization halfway.
    async fn authorize(&self, pending: Pending) -> Result<Payment, Error> {
        let store = self.store.clone();
        let authorizer = self.authorizer.clone();
        let timeout = self.config.timeout;
        let task = tokio::spawn(async move {
            let payment = &pending.payment;
            let request = Authorization {
                card_token: &pending.card_token,
                amount: &payment.amount,
                order_id: &payment.order_id,
                customer_id: &payment.customer_id,
            };
            let answer = tokio::time::timeout(timeout, authorizer.authorize(&payment.id, request));
            match answer.await {
                Ok(Ok(decision)) => store.finish(&payment.id, &decision).await,
                Ok(Err(unanswered)) => {
                    // Released, so that the caller's retry resumes it at once.
                    store.release(&payment.id).await?;
                    Err(Error::ProviderUnavailable(unanswered.to_string()))
                }
                Err(_) => {
                    store.release(&payment.id).await?;
                    Err(Error::ProviderUnavailable(format!(
                        "no answer within {timeout:?}"
                    )))
                }
            }
        });
        task.await.map_err(storage_error)?
    }

    /// Captured → refunded; idempotent. A pending payment is refunded as soon as its
    /// authorization ends: a saga that lost a charge's answer can compensate it.
    pub(crate) async fn refund(&self, payment_id: &str, reason: &str) -> Result<Payment, Error> {
        self.store.refund(payment_id, reason).await
    }

    /// Finishes, every `timeout`, the authorizations that a dead process (or one whose
    /// provider did not answer) left pending, until `draining` is cancelled.
    pub(crate) async fn resume_stalled(self: Arc<Self>, draining: CancellationToken) {
        shared::tasks::every(self.config.timeout, &draining, || async {
            match self.resume_stalled_once().await {
                // A full batch: there may be more right away.
                Ok(RESUME_BATCH) => Pass::More,
                Ok(_) => Pass::Done,
                Err(error) => {
                    tracing::warn!(
                        error = %shared::status::ErrorChain(&error),
                        "resuming stalled authorizations failed; retrying"
                    );
                    Pass::Done
                }
            }
        })
        .await;
    }

    /// Claims and finishes one batch of stalled authorizations; how many it claimed.
    pub(crate) async fn resume_stalled_once(&self) -> Result<usize, Error> {
        let stalled = self
            .store
            .claim_stalled(self.config.claim(), RESUME_BATCH)
            .await?;
        let claimed = stalled.len();
        for pending in stalled {
            let id = pending.payment.id.clone();
            match self.authorize(pending).await {
                Ok(payment) => {
                    tracing::info!(payment_id = %id, status = ?payment.status, "resumed a stalled authorization");
                }
                Err(error) => tracing::warn!(
                    payment_id = %id,
                    error = %shared::status::ErrorChain(&error),
                    "a stalled authorization is still unanswered; it will be resumed again"
                ),
            }
        }
        Ok(claimed)
    }
}

/// A charge found under its `request_id`: its first outcome, or a conflict if the
/// request_id was used for something else.
fn retried(charge: &Charge, existing: Payment) -> Result<Payment, Error> {
    if !charge.made(&existing) {
        return Err(Error::RequestConflict {
            request_id: charge.request_id.clone(),
        });
    }
    outcome(existing)
}

/// The outcome of a decided charge as the caller sees it.
fn outcome(payment: Payment) -> Result<Payment, Error> {
    match payment.status {
        PaymentStatus::Declined => Err(Error::CardDeclined {
            payment_id: payment.id,
            reason: payment.status_reason,
        }),
        PaymentStatus::Pending | PaymentStatus::Captured | PaymentStatus::Refunded => Ok(payment),
    }
}

impl Decision {
    /// The status and reason a payment ends with; a refund asked for while it was
    /// pending (`refund_reason`) applies at once to an approved charge.
    pub(crate) fn end(&self, refund_reason: Option<&str>) -> (PaymentStatus, String) {
        match (self, refund_reason) {
            (Decision::Approved, None) => (PaymentStatus::Captured, String::new()),
            (Decision::Approved, Some(reason)) => (PaymentStatus::Refunded, reason.to_owned()),
            (Decision::Declined { reason }, _) => (PaymentStatus::Declined, reason.clone()),
        }
    }
}

/// Validates a payment id given on its own.
pub(crate) fn validate_payment_id(id: &str) -> Result<(), ValidationError> {
    let mut violations = Violations::new();
    violations.id("payment_id", id);
    violations.finish()
}

/// Validates a `Refund` request: a payment id and an optional, bounded reason.
pub(crate) fn validate_refund(payment_id: &str, reason: &str) -> Result<(), ValidationError> {
    let mut violations = Violations::new();
    violations.id("payment_id", payment_id);
    violations.check(
        reason.len() <= MAX_REASON_LEN,
        "reason",
        format!("must be at most {MAX_REASON_LEN} bytes"),
    );
    violations.finish()
}

/// Longest refund reason kept.
const MAX_REASON_LEN: usize = 500;
