//! Payments, the test card network, and the rules a request must follow. No tonic here.

use std::time::SystemTime;

use contracts::common::v1 as pb;
use shared::{Money, ValidationError, Violations};

/// The card token the test network always declines.
pub(crate) const DECLINED_TOKEN: &str = "tok_declined";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PaymentStatus {
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

    /// Asks the (test) card network: `Err(reason)` if the card is declined.
    pub(crate) fn authorize(&self) -> Result<(), &'static str> {
        if self.card_token == DECLINED_TOKEN {
            Err("card declined by the issuer")
        } else {
            Ok(())
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
