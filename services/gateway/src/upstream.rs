//! The services the gateway calls: a generated client on one lazily connected channel
//! each, and the readiness check over all of them.

use std::collections::BTreeMap;
use std::time::Duration;

use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;
use contracts::inventory::v1::inventory_service_server;
use contracts::notifications::v1::notification_service_client::NotificationServiceClient;
use contracts::notifications::v1::notification_service_server;
use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::order_service_server;
use http::Uri;
use shared::ClientConfig;
use shared::client::{Channel, channel};
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config;
use crate::error::code_name;

/// How long a readiness check waits for an upstream's answer: below the 1 s that a
/// Kubernetes probe waits by default, so that the probe gets the gateway's answer.
const READINESS_TIMEOUT: Duration = Duration::from_millis(800);

/// The clients of every upstream. Cheap to clone: clones share the channels.
#[derive(Clone, Debug)]
pub(crate) struct Upstreams {
    orders: OrderServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    notifications: NotificationServiceClient<Channel>,
    health: Vec<Upstream>,
}

/// What the readiness check asks one upstream.
#[derive(Clone, Debug)]
struct Upstream {
    /// The upstream's name in `/readyz` answers, e.g. `orders`.
    name: &'static str,
    /// The gRPC service the gateway needs from it, e.g. `orders.v1.OrderService`.
    service: &'static str,
    health: HealthClient<Channel>,
}

impl Upstreams {
    /// Clients of `addrs`. Nothing is dialled yet: the gateway starts while its
    /// upstreams are still coming up, and `/readyz` says when they are there.
    pub(crate) fn new(addrs: &config::Upstreams, config: &ClientConfig) -> Self {
        let connect = |uri: &Uri| channel(uri.clone(), config);
        let (orders, inventory, notifications) = (
            connect(&addrs.orders),
            connect(&addrs.inventory),
            connect(&addrs.notifications),
        );
        let upstream = |name, service, channel: &Channel| Upstream {
            name,
            service,
            health: HealthClient::new(channel.clone()),
        };
        Self {
            health: vec![
                upstream("orders", order_service_server::SERVICE_NAME, &orders),
                upstream(
                    "inventory",
                    inventory_service_server::SERVICE_NAME,
                    &inventory,
                ),
                upstream(
                    "notifications",
                    notification_service_server::SERVICE_NAME,
                    &notifications,
                ),
            ],
            orders: OrderServiceClient::new(orders),
            inventory: InventoryServiceClient::new(inventory),
            notifications: NotificationServiceClient::new(notifications),
        }
    }

    /// A client of orders, for one call (clones share the channel).
    pub(crate) fn orders(&self) -> OrderServiceClient<Channel> {
        self.orders.clone()
    }

    pub(crate) fn inventory(&self) -> InventoryServiceClient<Channel> {
        self.inventory.clone()
    }

    pub(crate) fn notifications(&self) -> NotificationServiceClient<Channel> {
        self.notifications.clone()
    }

    /// Asks every upstream, at once, whether the service the gateway needs from it is
    /// SERVING (`grpc.health.v1.Health/Check`). Returns each upstream's answer by name:
    /// `SERVING`, `NOT_SERVING`, …, or the gRPC code of a failed check (`UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`).
    pub(crate) async fn readiness(&self) -> BTreeMap<&'static str, &'static str> {
        let mut checks = JoinSet::new();
        for upstream in self.health.clone() {
            checks.spawn(async move { (upstream.name, upstream.check().await) });
        }
        // An upstream whose check got lost (its task panicked) stays UNKNOWN: not ready.
        let mut answers: BTreeMap<_, _> = self.health.iter().map(|u| (u.name, "UNKNOWN")).collect();
        while let Some(joined) = checks.join_next().await {
            if let Ok((name, answer)) = joined {
                answers.insert(name, answer);
            }
        }
        answers
    }
}

impl Upstream {
    async fn check(mut self) -> &'static str {
        let request = HealthCheckRequest {
            service: self.service.to_owned(),
        };
        let answer = tokio::time::timeout(READINESS_TIMEOUT, self.health.check(request)).await;
        match answer {
            Err(_elapsed) => "DEADLINE_EXCEEDED",
            Ok(Err(status)) => {
                tracing::debug!(upstream = self.name, %status, "readiness check failed");
                code_name(status.code())
            }
            Ok(Ok(response)) => match response.into_inner().status() {
                ServingStatus::Serving => "SERVING",
                ServingStatus::NotServing => "NOT_SERVING",
                ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
                ServingStatus::Unknown => "UNKNOWN",
            },
        }
    }
}
