//! What the gateway has for notifications, and only for it: the route, its JSON shapes
//! and the client. One line each registers it (marked `remove-service: notifications`):
//! the module in `lib.rs`, the routes in `http.rs`, the upstream in `upstream.rs`, and
//! `NOTIFICATIONS_ADDR` in `config.rs`.
//!
//! | route | scope | upstream call |
//! |---|---|---|
//! | `GET /v1/customers/{id}/notifications?page_size=&page_token=` | `notifications:read` | `notifications.v1.NotificationService/ListNotifications` |
//!
//! With authentication on, a token reads its own subject's notifications; another
//! customer's are 404 unless it holds `notifications:admin` (checked by the service).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use contracts::notifications::v1::notification_service_client::NotificationServiceClient;
use contracts::notifications::v1::{self as proto, ListNotificationsRequest};
use serde::Serialize;
use shared::client::Channel;

use crate::auth::{OnBehalf, scoped};
use crate::dto::PageQuery;
use crate::error::ApiError;
use crate::http::{AppState, PathParam, QueryParams};
use crate::upstream::Upstreams;

/// The gRPC service the gateway needs from it: what readiness asks.
pub(crate) const SERVICE: &str =
    contracts::notifications::v1::notification_service_server::SERVICE_NAME;

/// The scope of its routes.
pub(crate) const NOTIFICATIONS_READ: &str = "notifications:read";

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/customers/{id}/notifications",
        scoped(NOTIFICATIONS_READ, get(list_notifications)),
    )
}

impl Upstreams {
    pub(crate) fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel("notifications"))
    }
}

#[tracing::instrument(skip_all, fields(customer_id = %customer_id))]
async fn list_notifications(
    State(state): State<AppState>,
    caller: OnBehalf,
    PathParam(customer_id): PathParam<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    let (page_size, page_token) = query.parse()?;
    let request = ListNotificationsRequest {
        customer_id,
        page_size,
        page_token,
    };
    let response = state
        .upstreams
        .notifications()
        .list_notifications(caller.request(request))
        .await?;
    Ok(Json(response.into_inner().into()))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    notification_id: String,
    customer_id: String,
    order_id: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_time: Option<String>,
}

impl From<proto::Notification> for Notification {
    fn from(n: proto::Notification) -> Self {
        Self {
            notification_id: n.notification_id,
            customer_id: n.customer_id,
            order_id: n.order_id,
            message: n.message,
            create_time: n.create_time.map(|t| t.to_string()),
        }
    }
}

/// `GET /v1/customers/{id}/notifications`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NotificationPage {
    notifications: Vec<Notification>,
    #[serde(skip_serializing_if = "String::is_empty")]
    next_page_token: String,
}

impl From<proto::ListNotificationsResponse> for NotificationPage {
    fn from(r: proto::ListNotificationsResponse) -> Self {
        Self {
            notifications: r.notifications.into_iter().map(Into::into).collect(),
            next_page_token: r.next_page_token,
        }
    }
}
