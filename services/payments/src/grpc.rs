//! The `payments.v1.PaymentService` handlers: proto in, domain call, proto out.

use std::sync::Arc;

use contracts::common::v1 as common;
use contracts::payments::v1::payment_service_server::{PaymentService, PaymentServiceServer};
use contracts::payments::v1::{self as pb};
use shared::{PageRequest, ServerConfig};
use tonic::{Request, Response, Status};

use crate::domain::{self, Charge, Payment, PaymentStatus, Payments};

/// The tonic service over `payments`, with the server's message size limits.
pub(crate) fn service(
    payments: Arc<Payments>,
    config: &ServerConfig,
) -> PaymentServiceServer<PaymentsApi> {
    PaymentServiceServer::new(PaymentsApi { payments })
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size)
}

pub(crate) struct PaymentsApi {
    payments: Arc<Payments>,
}

#[tonic::async_trait]
impl PaymentService for PaymentsApi {
    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id, order_id = %request.get_ref().order_id))]
    async fn charge(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        let r = request.into_inner();
        let charge = Charge::new(
            r.request_id,
            r.order_id,
            r.customer_id,
            r.amount.as_ref(),
            r.card_token,
        )?;
        let payment = self.payments.charge(charge).await?;
        Ok(Response::new(pb::ChargeResponse {
            payment: Some(payment.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(payment_id = %request.get_ref().payment_id))]
    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        let r = request.into_inner();
        domain::validate_refund(&r.payment_id, &r.reason)?;
        let payment = self.payments.refund(&r.payment_id, &r.reason).await?;
        Ok(Response::new(pb::RefundResponse {
            payment: Some(payment.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(payment_id = %request.get_ref().payment_id))]
    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let id = request.into_inner().payment_id;
        domain::validate_payment_id(&id)?;
        let payment = self.payments.store().payment(&id).await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let r = request.into_inner();
        let page = PageRequest::new(r.page_size, &r.page_token)?;
        let order_id = Some(r.order_id.as_str()).filter(|o| !o.is_empty());
        let payments = self.payments.store().payments(order_id, &page).await?;
        let (payments, next_page_token) = page.finish(payments, |(key, _)| key);
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: payments.into_iter().map(|(_, p)| p.into()).collect(),
            next_page_token,
        }))
    }
}

impl From<Payment> for pb::Payment {
    fn from(p: Payment) -> Self {
        let status = match p.status {
            PaymentStatus::Pending => pb::PaymentStatus::Pending,
            PaymentStatus::Captured => pb::PaymentStatus::Captured,
            PaymentStatus::Declined => pb::PaymentStatus::Declined,
            PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        };
        Self {
            payment_id: p.id,
            request_id: p.request_id,
            order_id: p.order_id,
            customer_id: p.customer_id,
            amount: Some(common::Money {
                currency_code: p.amount.currency,
                amount_minor: p.amount.minor,
            }),
            status: status.into(),
            status_reason: p.status_reason,
            create_time: Some(p.create_time.into()),
            update_time: Some(p.update_time.into()),
        }
    }
}
