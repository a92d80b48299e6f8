//! The `orders.v1.OrderService` handlers (proto in, domain call, proto out); the
//! inventory and payments clients behind the saga's ports are in `grpc/clients.rs`.
//! The only tonic code of the service is here and there.

mod clients;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use contracts::common::v1 as common;
use contracts::orders::v1::order_service_server::{OrderService, OrderServiceServer};
use contracts::orders::v1::{self as pb};
use shared::ServerConfig;
use shared::identity;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status};

use crate::domain::{self, Item, NewOrder, Order, Status as OrderStatus};
use crate::error::Error;
use crate::saga::Saga;
use crate::store::Store;

pub(crate) use clients::{InventoryClient, PaymentsClient};

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
                    unit_price: Some(common::Money {
                        currency_code: line.unit_price.currency,
                        amount_minor: line.unit_price.minor,
                    }),
                })
                .collect(),
            total: Some(common::Money {
                currency_code: o.total.currency,
                amount_minor: o.total.minor,
            }),
            status: status.into(),
            status_reason,
            payment_id: o.payment_id.unwrap_or_default(),
            create_time: Some(o.create_time.into()),
            update_time: Some(o.update_time.into()),
        }
    }
}
