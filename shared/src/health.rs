//! The gRPC health service (`grpc.health.v1.Health`), driven by the server's life cycle.
//!
//! Besides `""` and each service, two names exist for probes: `readiness` (follows `""`:
//! NOT_SERVING until the server serves and from the first moment of shutdown) and
//! `liveness` (SERVING for as long as the process serves, drain included, so a
//! draining pod is not restarted).
//!
//! Why not `tonic_health::server::HealthReporter`: it reports the overall service `""`
//! as SERVING from the start, and its `Watch` streams never end, which keeps
//! `serve_with_shutdown` waiting for ever. Here every name starts NOT_SERVING, the
//! server flips them together, and [`Health::close`] ends every `Watch` stream with a
//! final NOT_SERVING so that a draining server is not held open by its watchers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{self, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What a `Watch` stream sees: a status, or the end of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Status(ServingStatus),
    Closed,
}

/// The probe name that stays SERVING while the server drains.
pub const LIVENESS: &str = "liveness";
/// The probe name that turns NOT_SERVING as soon as shutdown begins.
pub const READINESS: &str = "readiness";

/// The health of one server: the overall `""`, the probe names, and each service it
/// serves, by full name.
#[derive(Clone, Debug)]
pub struct Health {
    statuses: Arc<HashMap<String, watch::Sender<State>>>,
}

impl Health {
    /// A registry for `""`, [`LIVENESS`], [`READINESS`] and `services`, all NOT_SERVING.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let names = ["", LIVENESS, READINESS].into_iter().chain(services);
        let statuses = names
            .map(|name| {
                let (tx, _) = watch::channel(State::Status(ServingStatus::NotServing));
                (name.to_owned(), tx)
            })
            .collect();
        Self {
            statuses: Arc::new(statuses),
        }
    }

    /// The server serves: every name turns SERVING.
    pub fn serving(&self) {
        self.set(ServingStatus::Serving, |_| true);
    }

    /// Shutdown began: every name but [`LIVENESS`] turns NOT_SERVING.
    pub fn draining(&self) {
        self.set(ServingStatus::NotServing, |name| name != LIVENESS);
    }

    /// The service is broken beyond what a drain fixes (a background task died): every
    /// name, [`LIVENESS`] included, turns NOT_SERVING, so that the pod is restarted.
    pub fn failing(&self) {
        self.set(ServingStatus::NotServing, |_| true);
    }

    fn set(&self, status: ServingStatus, applies: impl Fn(&str) -> bool) {
        for (name, tx) in self.statuses.iter() {
            if !applies(name) {
                continue;
            }
            tx.send_if_modified(|state| {
                let changed = *state != State::Closed && *state != State::Status(status);
                if changed {
                    *state = State::Status(status);
                }
                changed
            });
        }
    }

    /// Reports NOT_SERVING for good and ends every `Watch` stream.
    pub fn close(&self) {
        for tx in self.statuses.values() {
            tx.send_replace(State::Closed);
        }
    }

    /// The current status of `service`, `None` if it is not registered.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.statuses.get(service).map(|tx| match *tx.borrow() {
            State::Status(status) => status,
            State::Closed => ServingStatus::NotServing,
        })
    }

    /// The tonic service answering `grpc.health.v1.Health`.
    pub fn service(&self) -> HealthServer<Self> {
        HealthServer::new(self.clone())
    }
}

/// Serves `health` (and nothing else: any other service is UNIMPLEMENTED) in plaintext
/// on `listener` until `shutdown` resolves. This is the port for probes that cannot
/// speak TLS while the gRPC port does: it shares the registry, so probes see readiness
/// flip and the drain; [`Health::close`] ends its `Watch` streams with the others.
pub async fn serve_plaintext(
    listener: TcpListener,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        // Probes make one call at a time; a handful of streams is plenty, and the
        // same guard against reset floods as the gRPC port.
        .max_concurrent_streams(Some(16))
        .http2_max_local_error_reset_streams(Some(1024))
        .add_service(health.service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        match self.status(service) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status.into(),
            })),
            // The name is the caller's, of any length: the message is bounded.
            None => Err(crate::status::new(
                tonic::Code::NotFound,
                format!("unknown service {service:?}"),
            )),
        }
    }

    type WatchStream = HealthWatch;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Per the health protocol, an unknown service is not an error for Watch: the
        // stream says SERVICE_UNKNOWN (and would update if it ever got registered).
        let receiver = match self.statuses.get(&request.get_ref().service) {
            Some(tx) => tx.subscribe(),
            None => watch::channel(State::Status(ServingStatus::ServiceUnknown)).1,
        };
        Ok(Response::new(HealthWatch {
            inner: WatchStream::new(receiver),
            done: false,
        }))
    }
}

/// A `Watch` response stream: the current status, each change, and a last
/// NOT_SERVING when the server closes.
#[derive(Debug)]
pub struct HealthWatch {
    inner: WatchStream<State>,
    done: bool,
}

impl Stream for HealthWatch {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let status = match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(State::Status(status))) => status,
            Poll::Ready(Some(State::Closed) | None) => {
                self.done = true;
                ServingStatus::NotServing
            }
        };
        Poll::Ready(Some(Ok(HealthCheckResponse {
            status: status.into(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_server::Health as _;
    use tokio_stream::StreamExt;

    fn request(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.to_owned(),
        })
    }

    async fn check(health: &Health, service: &str) -> Result<i32, Status> {
        Ok(health.check(request(service)).await?.into_inner().status)
    }

    #[tokio::test]
    async fn an_unknown_service_of_any_length_gets_a_bounded_not_found() {
        let health = Health::new(["a.v1.A"]);
        let status = check(&health, &"x".repeat(1 << 20)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().len() <= crate::status::MAX_MESSAGE_BYTES);
    }

    #[tokio::test]
    async fn everything_starts_not_serving_and_flips_together() {
        let health = Health::new(["a.v1.A"]);
        for name in ["", LIVENESS, READINESS, "a.v1.A"] {
            assert_eq!(
                check(&health, name).await.unwrap(),
                ServingStatus::NotServing as i32
            );
        }
        health.serving();
        for name in ["", LIVENESS, READINESS, "a.v1.A"] {
            assert_eq!(
                check(&health, name).await.unwrap(),
                ServingStatus::Serving as i32
            );
        }
        health.draining();
        for name in ["", READINESS, "a.v1.A"] {
            assert_eq!(
                check(&health, name).await.unwrap(),
                ServingStatus::NotServing as i32
            );
        }
        assert_eq!(
            check(&health, LIVENESS).await.unwrap(),
            ServingStatus::Serving as i32
        );
        let err = check(&health, "b.v1.B").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn watch_sees_changes_and_ends_on_close() {
        let health = Health::new(["a.v1.A"]);
        health.serving();
        let mut stream = health.watch(request("a.v1.A")).await.unwrap().into_inner();
        let next = |s: Option<Result<HealthCheckResponse, Status>>| s.unwrap().unwrap().status;
        assert_eq!(next(stream.next().await), ServingStatus::Serving as i32);
        health.draining();
        assert_eq!(next(stream.next().await), ServingStatus::NotServing as i32);
        health.close();
        assert_eq!(next(stream.next().await), ServingStatus::NotServing as i32);
        assert!(stream.next().await.is_none());
        // Closed stays closed: nothing can revive it.
        health.serving();
        assert_eq!(health.status("a.v1.A"), Some(ServingStatus::NotServing));
    }

    #[tokio::test]
    async fn watch_of_an_unknown_service_says_service_unknown() {
        let health = Health::new([]);
        let mut stream = health.watch(request("nope")).await.unwrap().into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
    }
}
