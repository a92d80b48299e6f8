//! The inventory and payments clients behind the saga's ports (`saga.rs`): the saga's
//! calls in, gRPC out, and each answer (or its absence) told apart for the saga.

use std::sync::Arc;

use async_trait::async_trait;
use contracts::common::v1 as common;
use contracts::inventory::v1::{
    self as inventory_pb, inventory_service_client::InventoryServiceClient,
};
use contracts::payments::v1::{self as payments_pb, payment_service_client::PaymentServiceClient};
use shared::client::policy::RetryBudget;
use shared::client::{Channel, NoRetry, Upstream};
use shared::{ClientConfig, Money};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::domain::Item;
use crate::error::UpstreamError;
use crate::saga::{Charge, Inventory, Payments, Release};

/// Tells a failed call apart: no answer (it may or may not have taken effect) or a
/// wrong one. The detail names the call, for the logs.
fn upstream_error(
    upstream: &'static str,
    addr: &Upstream,
    method: &str,
    status: &Status,
) -> UpstreamError {
    let detail = format!(
        "orders → {upstream} at {addr}: {method}: {:?}: {}",
        status.code(),
        status.message()
    );
    match status.code() {
        // CANCELLED is how tonic reports the client's own timeout.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            UpstreamError::Unavailable { upstream, detail }
        }
        _ => UpstreamError::Failed { upstream, detail },
    }
}

/// An answer without the field it must have: a bug, not a refusal.
fn malformed(upstream: &'static str, addr: &Upstream, method: &str) -> UpstreamError {
    UpstreamError::Failed {
        upstream,
        detail: format!(
            "orders → {upstream} at {addr}: {method}: the response lacks a required field"
        ),
    }
}

/// A call the saga retries on its own (see `saga.rs`): the channel must not.
fn saga_call<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(NoRetry);
    request
}

/// Inventory over gRPC.
#[derive(Clone, Debug)]
pub(crate) struct InventoryClient {
    client: InventoryServiceClient<Channel>,
    budget: Arc<RetryBudget>,
    addr: Upstream,
}

impl InventoryClient {
    pub(crate) fn new(addr: Upstream, config: &ClientConfig) -> Self {
        let channel = shared::client::channel(addr.clone(), config, contracts::RETRY_SAFE_METHODS);
        Self {
            budget: channel.retry_budget(),
            client: InventoryServiceClient::new(channel),
            addr,
        }
    }

    fn error(&self, method: &str, status: &Status) -> UpstreamError {
        upstream_error("inventory", &self.addr, method, status)
    }
}

#[async_trait]
impl Inventory for InventoryClient {
    async fn unit_price(&self, sku: &str) -> Result<Option<Money>, UpstreamError> {
        let request = inventory_pb::GetProductRequest {
            sku: sku.to_owned(),
        };
        match self.client.clone().get_product(request).await {
            Ok(response) => {
                let price = response.into_inner().product.and_then(|p| p.price);
                let price =
                    price.ok_or_else(|| malformed("inventory", &self.addr, "GetProduct"))?;
                Ok(Some(Money::new(price.currency_code, price.amount_minor)))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(self.error("GetProduct", &status)),
        }
    }

    async fn reserve(&self, reservation_id: &str, items: &[Item]) -> Result<(), UpstreamError> {
        let request = inventory_pb::ReserveStockRequest {
            reservation_id: reservation_id.to_owned(),
            items: items
                .iter()
                .map(|item| inventory_pb::ReservationItem {
                    sku: item.sku.clone(),
                    quantity: item.quantity,
                })
                .collect(),
        };
        match self.client.clone().reserve_stock(saga_call(request)).await {
            Ok(_) => Ok(()),
            // Too little stock, or a product gone since it was priced; the message says which.
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                Err(UpstreamError::Refused(status.message().to_owned()))
            }
            Err(status) => Err(self.error("ReserveStock", &status)),
        }
    }

    async fn commit(&self, reservation_id: &str) -> Result<(), UpstreamError> {
        let request = inventory_pb::CommitReservationRequest {
            reservation_id: reservation_id.to_owned(),
        };
        match self
            .client
            .clone()
            .commit_reservation(saga_call(request))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) => Err(self.error("CommitReservation", &status)),
        }
    }

    async fn release(&self, reservation_id: &str) -> Result<Release, UpstreamError> {
        let request = inventory_pb::ReleaseReservationRequest {
            reservation_id: reservation_id.to_owned(),
        };
        match self
            .client
            .clone()
            .release_reservation(saga_call(request))
            .await
        {
            Ok(_) => Ok(Release::Released),
            // The one precondition of a release: the reservation is not committed.
            Err(status) if status.code() == Code::FailedPrecondition => {
                Ok(Release::AlreadyCommitted)
            }
            Err(status) => Err(self.error("ReleaseReservation", &status)),
        }
    }

    fn may_retry(&self) -> bool {
        self.budget.try_retry()
    }
}

/// Payments over gRPC.
#[derive(Clone, Debug)]
pub(crate) struct PaymentsClient {
    client: PaymentServiceClient<Channel>,
    budget: Arc<RetryBudget>,
    addr: Upstream,
}

impl PaymentsClient {
    pub(crate) fn new(addr: Upstream, config: &ClientConfig) -> Self {
        let channel = shared::client::channel(addr.clone(), config, contracts::RETRY_SAFE_METHODS);
        Self {
            budget: channel.retry_budget(),
            client: PaymentServiceClient::new(channel),
            addr,
        }
    }

    fn error(&self, method: &str, status: &Status) -> UpstreamError {
        upstream_error("payments", &self.addr, method, status)
    }
}

/// The `ErrorInfo.reason` payments gives a declined card.
const CARD_DECLINED: &str = "CARD_DECLINED";

#[async_trait]
impl Payments for PaymentsClient {
    async fn charge(&self, charge: &Charge) -> Result<String, UpstreamError> {
        let request = payments_pb::ChargeRequest {
            request_id: charge.request_id.clone(),
            order_id: charge.order_id.clone(),
            customer_id: charge.customer_id.clone(),
            amount: Some(common::Money {
                currency_code: charge.amount.currency.clone(),
                amount_minor: charge.amount.minor,
            }),
            card_token: charge.card_token.clone(),
        };
        match self.client.clone().charge(saga_call(request)).await {
            Ok(response) => {
                let payment = response.into_inner().payment;
                let payment = payment.ok_or_else(|| malformed("payments", &self.addr, "Charge"))?;
                Ok(payment.payment_id)
            }
            Err(status)
                if status
                    .get_details_error_info()
                    .is_some_and(|info| info.reason == CARD_DECLINED) =>
            {
                Err(UpstreamError::Refused(status.message().to_owned()))
            }
            Err(status) => Err(self.error("Charge", &status)),
        }
    }

    async fn refund(&self, payment_id: &str, reason: &str) -> Result<(), UpstreamError> {
        let request = payments_pb::RefundRequest {
            payment_id: payment_id.to_owned(),
            reason: reason.to_owned(),
        };
        match self.client.clone().refund(saga_call(request)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(self.error("Refund", &status)),
        }
    }

    async fn captured(&self, order_id: &str) -> Result<Vec<String>, UpstreamError> {
        let mut captured = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = payments_pb::ListPaymentsRequest {
                order_id: order_id.to_owned(),
                page_size: 0,
                page_token,
            };
            let page = match self.client.clone().list_payments(saga_call(request)).await {
                Ok(response) => response.into_inner(),
                Err(status) => return Err(self.error("ListPayments", &status)),
            };
            // A pending payment may yet be captured: refunding it now applies when
            // its authorization ends.
            let is_captured = |p: &payments_pb::Payment| {
                matches!(
                    p.status(),
                    payments_pb::PaymentStatus::Captured | payments_pb::PaymentStatus::Pending
                )
            };
            captured.extend(
                page.payments
                    .into_iter()
                    .filter(is_captured)
                    .map(|p| p.payment_id),
            );
            if page.next_page_token.is_empty() {
                return Ok(captured);
            }
            page_token = page.next_page_token;
        }
    }

    fn may_retry(&self) -> bool {
        self.budget.try_retry()
    }
}
