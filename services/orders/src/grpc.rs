//! The `orders.v1.OrderService` handlers (proto in, domain call, proto out) and the
//! inventory and payments clients behind the saga's ports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use contracts::inventory::v1::{
    self as inventory_pb, inventory_service_client::InventoryServiceClient,
};
use contracts::orders::v1::order_service_server::{OrderService, OrderServiceServer};
use contracts::orders::v1::{self as pb};
use contracts::payments::v1::{self as payments_pb, payment_service_client::PaymentServiceClient};
use shared::client::policy::RetryBudget;
use shared::client::{Channel, NoRetry, Upstream};
use shared::identity;
use shared::{ClientConfig, Money, ServerConfig};
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use crate::domain::{self, Item, NewOrder, Order, Status as OrderStatus};
use crate::error::{Error, UpstreamError};
use crate::saga::{Charge, Inventory, Payments, Release, Saga};
use crate::store::Store;

/// The tonic service, with the server's message size limits. `draining` ends
/// `WatchOrder` streams when the server shuts down.
pub(crate) fn service(
    saga: Arc<Saga>,
    store: Arc<dyn Store>,
    draining: CancellationToken,
    config: &ServerConfig,
) -> OrderServiceServer<OrdersApi> {
    OrderServiceServer::new(OrdersApi {
        saga,
        store,
        draining,
    })
    .max_decoding_message_size(config.max_message_size)
    .max_encoding_message_size(config.max_message_size)
}

pub(crate) struct OrdersApi {
    saga: Arc<Saga>,
    store: Arc<dyn Store>,
    draining: CancellationToken,
}

#[tonic::async_trait]
impl OrderService for OrdersApi {
    #[tracing::instrument(skip_all, fields(request_id = %request.get_ref().request_id))]
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let caller = identity::caller(&request)?;
        let r = request.into_inner();
        let items = r
            .items
            .into_iter()
            .map(|i| Item {
                sku: i.sku,
                quantity: i.quantity,
            })
            .collect();
        let request =
            NewOrder::new(r.request_id, r.customer_id, items, r.card_token)?.by(caller.as_ref())?;
        let order = self.saga.clone().place(request).await?;
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(order.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let caller = identity::caller(&request)?;
        let id = request.into_inner().order_id;
        domain::validate_order_id(&id)?;
        let order = self.store.order(&id).await?;
        if !domain::may_act_for(caller.as_ref(), &order.customer_id) {
            return Err(Error::OrderNotFound { id }.into());
        }
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(customer_id = %request.get_ref().customer_id))]
    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = identity::caller(&request)?;
        let r = request.into_inner();
        let page = domain::list_request(&r.customer_id, r.page_size, &r.page_token)?;
        if !domain::may_act_for(caller.as_ref(), &r.customer_id) {
            return Err(Error::CustomerNotFound { id: r.customer_id }.into());
        }
        let orders = self.store.orders(&r.customer_id, &page).await?;
        let (orders, next_page_token) = page.finish(orders, |(key, _)| key);
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.into_iter().map(|(_, o)| o.into()).collect(),
            next_page_token,
        }))
    }

    type WatchOrderStream = OrderWatch;

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let caller = identity::caller(&request)?;
        let id = request.into_inner().order_id;
        domain::validate_order_id(&id)?;
        let changes = self.store.watch(&id).await?;
        if !domain::may_act_for(caller.as_ref(), &changes.borrow().customer_id) {
            return Err(Error::OrderNotFound { id }.into());
        }
        Ok(Response::new(OrderWatch {
            changes: WatchStream::new(changes),
            draining: Box::pin(self.draining.clone().cancelled_owned()),
            done: false,
        }))
    }
}

/// A `WatchOrder` response stream: the order as it is, then each change. It ends after
/// a final state, or with UNAVAILABLE when the server drains, so that the client knows
/// to watch again (elsewhere) rather than take the last state for the outcome.
pub(crate) struct OrderWatch {
    changes: WatchStream<Order>,
    draining: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl Stream for OrderWatch {
    type Item = Result<pb::WatchOrderResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.draining.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(Status::unavailable(
                "the server is shutting down; watch again",
            ))));
        }
        let Some(order) = ready!(Pin::new(&mut self.changes).poll_next(cx)) else {
            return Poll::Ready(None);
        };
        self.done = order.status.is_final();
        Poll::Ready(Some(Ok(pb::WatchOrderResponse {
            order: Some(order.into()),
        })))
    }
}

impl From<Order> for pb::Order {
    fn from(o: Order) -> Self {
        let (status, status_reason) = match o.status {
            OrderStatus::Pending => (pb::OrderStatus::Pending, String::new()),
            OrderStatus::Confirmed => (pb::OrderStatus::Confirmed, String::new()),
            OrderStatus::Rejected { reason } => (pb::OrderStatus::Rejected, reason),
            OrderStatus::Failed { reason } => (pb::OrderStatus::Failed, reason),
        };
        Self {
            order_id: o.id,
            request_id: o.request_id,
            customer_id: o.customer_id,
            items: o
                .lines
                .into_iter()
                .map(|line| pb::OrderItem {
                    sku: line.sku,
                    quantity: line.quantity,
                    unit_price: Some(line.unit_price.into()),
                })
                .collect(),
            total: Some(o.total.into()),
            status: status.into(),
            status_reason,
            payment_id: o.payment_id.unwrap_or_default(),
            create_time: Some(o.create_time.into()),
            update_time: Some(o.update_time.into()),
        }
    }
}

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
        let channel = shared::client::channel(addr.clone(), config);
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
        let channel = shared::client::channel(addr.clone(), config);
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
            amount: Some(charge.amount.clone().into()),
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
