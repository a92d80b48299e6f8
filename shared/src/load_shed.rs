//! Load shedding: a limit on the calls one server handles at once, over all its
//! connections. A call beyond it is answered RESOURCE_EXHAUSTED at once, without
//! running its handler.
//!
//! Why shed rather than queue: past saturation a queue only grows, and every call in it
//! waits longer than the one before, until all of them miss their deadlines. Refusing
//! the excess quickly keeps the accepted calls fast and tells clients (and their retry
//! budgets and breakers) to back off, while the work already taken on finishes. HTTP/2's
//! `MAX_CONCURRENT_STREAMS` bounds one connection; this bounds the whole server.
//!
//! A call holds its place until its handler has answered: a server-streaming call
//! (`WatchOrder`) counts while it starts, not for the life of its stream, which
//! `MAX_CONCURRENT_STREAMS` and the drain bound instead. Health checks are never
//! refused, so an overloaded server is not also declared dead and restarted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tower::{Layer, Service};

/// The path prefix of the calls that are never shed.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Applies [`LoadShed`] to a service; every service it wraps shares one limit.
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
}

impl LoadShedLayer {
    /// At most `limit` calls at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = LoadShedFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let permit = if request.uri().path().starts_with(HEALTH_PREFIX) {
            None
        } else if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            Some(permit)
        } else {
            let status = Status::resource_exhausted("the server is overloaded; retry later");
            return LoadShedFuture {
                inner: None,
                shed: Some(status.into_http()),
                permit: None,
            };
        };
        LoadShedFuture {
            inner: Some(self.inner.call(request)),
            shed: None,
            permit,
        }
    }
}

pin_project! {
    /// The answer of [`LoadShed`]: the inner service's, holding the place until it
    /// comes, or RESOURCE_EXHAUSTED at once.
    #[derive(Debug)]
    pub struct LoadShedFuture<F, B> {
        #[pin]
        inner: Option<F>,
        shed: Option<http::Response<B>>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F, B, E> Future for LoadShedFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let shed = this.shed.take().expect("polled after completion");
            return Poll::Ready(Ok(shed));
        };
        let response = std::task::ready!(inner.poll(cx));
        this.permit.take();
        Poll::Ready(response)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;

    type Response = http::Response<tonic::body::Body>;
    type Call = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    const APP: &str = "/inventory.v1.InventoryService/GetProduct";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    /// A server whose handlers answer once `release` is cancelled, behind a limit of 2.
    fn limited(release: &CancellationToken) -> impl FnMut(&str) -> Call {
        let release = release.clone();
        let handler = tower::service_fn(move |_: http::Request<()>| {
            let release = release.clone();
            async move {
                release.cancelled().await;
                Ok::<_, Infallible>(Response::default())
            }
        });
        let mut service = LoadShedLayer::new(2).layer(handler);
        // `call` takes the place (or refuses) at once, before the answer is awaited.
        move |path| Box::pin(service.call(http::Request::builder().uri(path).body(()).unwrap()))
    }

    async fn grpc_status(call: Call) -> Option<String> {
        let response = call.await.unwrap();
        let status = response.headers().get("grpc-status")?;
        Some(status.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn calls_over_the_limit_are_refused_at_once_but_health_checks_never() {
        let release = CancellationToken::new();
        let mut call = limited(&release);
        let in_flight = [call(APP), call(APP)];
        assert_eq!(grpc_status(call(APP)).await.as_deref(), Some("8"));
        let health = call(HEALTH);

        release.cancel();
        for answer in in_flight.into_iter().chain([health]) {
            assert_eq!(grpc_status(answer).await, None, "served");
        }
        // The places are free again.
        assert_eq!(grpc_status(call(APP)).await, None);
    }

    #[tokio::test]
    async fn the_limit_is_shared_by_every_connection() {
        let release = CancellationToken::new();
        let layer = LoadShedLayer::new(1);
        let handler = tower::service_fn(|_: http::Request<()>| {
            let release = release.clone();
            async move {
                release.cancelled().await;
                Ok::<_, Infallible>(Response::default())
            }
        });
        // tonic makes one service per connection from the same layer.
        let mut first = layer.layer(handler);
        let mut second = layer.layer(handler);
        let request = || http::Request::builder().uri(APP).body(()).unwrap();
        let held = Box::pin(first.ready().await.unwrap().call(request()));
        let refused = Box::pin(second.ready().await.unwrap().call(request()));
        assert_eq!(grpc_status(refused).await.as_deref(), Some("8"));
        release.cancel();
        assert_eq!(grpc_status(held).await, None);
    }
}
