//! The `notifications.v1.NotificationService` handlers: proto in, domain call, proto out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use contracts::notifications::v1::notification_service_server::{
    NotificationService, NotificationServiceServer,
};
use contracts::notifications::v1::{self as pb};
use shared::ServerConfig;
use shared::identity;
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status};

use crate::domain::{self, Notification};
use crate::store::{Feed, Store};

/// The tonic service over `store`, with the server's message size limits. `draining`
/// ends `StreamNotifications` streams when the server shuts down.
pub(crate) fn service(
    store: Arc<dyn Store>,
    draining: CancellationToken,
    config: &ServerConfig,
) -> NotificationServiceServer<NotificationsApi> {
    NotificationServiceServer::new(NotificationsApi { store, draining })
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size)
}

pub(crate) struct NotificationsApi {
    store: Arc<dyn Store>,
    draining: CancellationToken,
}

#[tonic::async_trait]
impl NotificationService for NotificationsApi {
    #[tracing::instrument(skip_all, fields(customer_id = %request.get_ref().customer_id))]
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = identity::caller(&request)?;
        let r = request.into_inner();
        let page = domain::list_request(&r.customer_id, r.page_size, &r.page_token)?;
        domain::may_read(caller.as_ref(), &r.customer_id)?;
        let notifications = self.store.notifications(&r.customer_id, &page).await?;
        let (notifications, next_page_token) = page.finish(notifications, |(key, _)| key);
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: notifications.into_iter().map(|(_, n)| n.into()).collect(),
            next_page_token,
        }))
    }

    type StreamNotificationsStream = NotificationStream;

    #[tracing::instrument(skip_all, fields(customer_id = %request.get_ref().customer_id))]
    async fn stream_notifications(
        &self,
        request: Request<pb::StreamNotificationsRequest>,
    ) -> Result<Response<Self::StreamNotificationsStream>, Status> {
        let caller = identity::caller(&request)?;
        let customer_id = request.into_inner().customer_id;
        domain::validate_customer_id(&customer_id)?;
        domain::may_read(caller.as_ref(), &customer_id)?;
        Ok(Response::new(NotificationStream {
            feed: BroadcastStream::new(self.store.subscribe()),
            customer_id,
            draining: Box::pin(self.draining.clone().cancelled_owned()),
            done: false,
        }))
    }
}

/// A `StreamNotifications` response stream: each new notification of one customer.
/// It ends with UNAVAILABLE when the server drains (stream again, elsewhere), and with
/// RESOURCE_EXHAUSTED if it falls too far behind (list to catch up, then stream again):
/// never by skipping notifications silently.
pub(crate) struct NotificationStream {
    feed: BroadcastStream<Feed>,
    customer_id: String,
    draining: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl Stream for NotificationStream {
    type Item = Result<pb::StreamNotificationsResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.draining.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(Status::unavailable(
                "the server is shutting down; stream again",
            ))));
        }
        loop {
            match ready!(Pin::new(&mut self.feed).poll_next(cx)) {
                Some(Ok(Feed::Added(notification)))
                    if notification.customer_id == self.customer_id =>
                {
                    return Poll::Ready(Some(Ok(pb::StreamNotificationsResponse {
                        notification: Some(notification.into()),
                    })));
                }
                // Another customer's.
                Some(Ok(Feed::Added(_))) => {}
                Some(Ok(Feed::Interrupted)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(Status::unavailable(
                        "the live feed was interrupted; list the notifications, then stream again",
                    ))));
                }
                Some(Err(BroadcastStreamRecvError::Lagged(missed))) => {
                    self.done = true;
                    let message = format!(
                        "the stream fell {missed} notifications behind; list them, then stream again"
                    );
                    return Poll::Ready(Some(Err(Status::resource_exhausted(message))));
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

impl From<Notification> for pb::Notification {
    fn from(n: Notification) -> Self {
        Self {
            notification_id: n.id,
            customer_id: n.customer_id,
            order_id: n.order_id,
            event_id: n.event_id,
            message: n.message,
            create_time: Some(n.create_time.into()),
        }
    }
}
