//! The services the gateway calls: one lazily connected channel each, and their
//! readiness, asked in the background and read by `/readyz`. The transcoder calls a
//! route's upstream through the channel of the route's service ([`Upstreams::channel_of`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use shared::ClientConfig;
use shared::client::{Channel, channel};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config;
use crate::error::code_name;

/// How long a readiness check waits for an upstream's answer: below the 1 s that a
/// Kubernetes probe waits by default, so that the probe gets the gateway's answer.
const READINESS_TIMEOUT: Duration = Duration::from_millis(800);

/// Every upstream. Cheap to clone: clones share the channels.
#[derive(Clone, Debug)]
pub(crate) struct Upstreams {
    all: Arc<[Upstream]>,
}

/// One upstream: its channel, and what the readiness check asks it.
#[derive(Clone, Debug)]
struct Upstream {
    /// The upstream's name in `/readyz` answers, e.g. `orders`.
    name: Arc<str>,
    /// The gRPC service the gateway needs from it, e.g. `orders.v1.OrderService`.
    service: Arc<str>,
    channel: Channel,
}

impl Upstreams {
    /// Channels to `addrs`. Nothing is dialled yet: the gateway starts while its
    /// upstreams are still coming up, and `/readyz` says when they are there.
    pub(crate) fn new(addrs: &config::Upstreams, config: &ClientConfig) -> Self {
        let all = addrs.services.iter().map(|upstream| Upstream {
            name: upstream.name.as_str().into(),
            service: upstream.service.as_str().into(),
            channel: channel(upstream.addr.clone(), config, contracts::RETRY_SAFE_METHODS),
        });
        Self { all: all.collect() }
    }

    /// The channel of the upstream that serves gRPC service `service` (e.g.
    /// `orders.v1.OrderService`), if there is one.
    pub(crate) fn channel_of(&self, service: &str) -> Option<Channel> {
        let upstream = self.all.iter().find(|u| &*u.service == service);
        upstream.map(|u| u.channel.clone())
    }

    /// Asks every upstream, at once, whether the service the gateway needs from it is
    /// SERVING (`grpc.health.v1.Health/Check`). Returns each upstream's answer by name:
    /// `SERVING`, `NOT_SERVING`, …, or the gRPC code of a failed check (`UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`).
    pub(crate) async fn readiness(&self) -> BTreeMap<Arc<str>, &'static str> {
        let mut checks = JoinSet::new();
        for upstream in self.all.iter().cloned() {
            checks.spawn(async move { (Arc::clone(&upstream.name), upstream.check().await) });
        }
        // An upstream whose check got lost (its task panicked) stays UNKNOWN: not ready.
        let mut answers: BTreeMap<_, _> = self
            .all
            .iter()
            .map(|u| (Arc::clone(&u.name), "UNKNOWN"))
            .collect();
        while let Some(joined) = checks.join_next().await {
            if let Ok((name, answer)) = joined {
                answers.insert(name, answer);
            }
        }
        answers
    }
}

/// Each upstream's last health answer, by name, as [`Upstreams::readiness`] gives it.
pub(crate) type Health = BTreeMap<Arc<str>, &'static str>;

/// The upstreams' health as last asked: `/readyz` reads it, so that a probe costs the
/// upstreams nothing and a flood of probes cannot become a flood of health checks.
/// Every upstream is `UNKNOWN` (not ready) until the first answers arrive. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub(crate) struct Readiness {
    upstreams: Upstreams,
    health: watch::Sender<Health>,
}

impl Readiness {
    pub(crate) fn new(upstreams: Upstreams) -> Self {
        let unknown = upstreams
            .all
            .iter()
            .map(|u| (Arc::clone(&u.name), "UNKNOWN"))
            .collect();
        Self {
            upstreams,
            health: watch::Sender::new(unknown),
        }
    }

    /// The last answers.
    pub(crate) fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Asks every upstream now, then every `period` (measured from the start of one
    /// round to the next), for as long as the future is polled: the server that owns
    /// it drops it when it stops.
    pub(crate) async fn refresh_every(self, period: Duration) -> Infallible {
        let mut ticks = tokio::time::interval(period);
        // A slow round is not followed by a burst of catch-up rounds.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.health.send_replace(self.upstreams.readiness().await);
        }
    }
}

impl Upstream {
    async fn check(self) -> &'static str {
        let request = HealthCheckRequest {
            service: self.service.to_string(),
        };
        let mut health = HealthClient::new(self.channel);
        let answer = tokio::time::timeout(READINESS_TIMEOUT, health.check(request)).await;
        match answer {
            Err(_elapsed) => "DEADLINE_EXCEEDED",
            Ok(Err(status)) => {
                tracing::debug!(upstream = &*self.name, %status, "readiness check failed");
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
