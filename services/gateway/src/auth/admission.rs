//! The admission of each request: authentication, then the client's rate, then the
//! route's scope.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use std::future::Future;

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use shared::metrics::IntCounterVec;

use super::caller::{Identity, OnBehalf};
use super::jwt::Authenticator;
use crate::error::ApiError;
use crate::rate_limit::{Client, RateLimiter};

/// `gateway_auth_failures_total{reason}`: requests refused with 401 or 403, by reason
/// (a fixed set: [`Rejection::reason`] and `insufficient_scope`).
static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    shared::metrics::counter(
        "gateway_auth_failures_total",
        "Requests the gateway refused with 401 or 403, by reason.",
        &["reason"],
    )
});

/// `gateway_rate_limited_total{client}`: requests refused with 429, by the kind of key
/// they were counted under (`subject` or `peer_ip`).
static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    shared::metrics::counter(
        "gateway_rate_limited_total",
        "Requests the gateway refused with 429, by the kind of client key (subject or peer_ip).",
        &["client"],
    )
});

/// What admission needs; `None` turns a step off.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    pub(crate) authenticator: Option<Authenticator>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
}

impl Admission {
    /// Admits `request` to a route that requires `scope` (`None`: no route matched;
    /// its 404 or 405 is answered after admission all the same, so that no route can
    /// be probed for without a token) and hands it to `handle` with who it is for; or
    /// answers for it, in this order:
    /// 1. the caller: the token's subject, or anyone when authentication is off; an
    ///    invalid or missing token is remembered, not answered yet;
    /// 2. the rate: each request is charged to the subject when the token is valid,
    ///    else to the peer's IP address (so a flood of bad tokens is limited too) —
    ///    429 when over it;
    /// 3. the token: 401 when it was missing or invalid;
    /// 4. the route's scope: 403 when the token does not grant it.
    pub(crate) async fn run<F, Fut>(
        &self,
        scope: Option<&str>,
        request: Request,
        handle: F,
    ) -> Response
    where
        F: FnOnce(OnBehalf, Request) -> Fut,
        Fut: Future<Output = Response>,
    {
        let identity = match &self.authenticator {
            None => Ok(Identity::Anyone),
            Some(authenticator) => authenticator
                .authenticate(request.headers())
                .map(Identity::Caller),
        };
        if let Some(limiter) = &self.limiter {
            let client = match &identity {
                Ok(Identity::Caller(caller)) => Client::Subject(caller.subject.clone()),
                _ => Client::peer(
                    request
                        .extensions()
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|info| info.0.ip()),
                ),
            };
            if let Err(retry_after) = limiter.check(&client) {
                RATE_LIMITED.with_label_values(&[client.kind()]).inc();
                return ApiError::rate_limited(retry_after).into_response();
            }
        }
        let identity = match identity {
            Ok(identity) => identity,
            Err(rejection) => {
                AUTH_FAILURES.with_label_values(&[rejection.reason()]).inc();
                tracing::debug!(reason = rejection.reason(), "bearer token refused");
                return ApiError::unauthenticated(rejection.problem()).into_response();
            }
        };
        if let Identity::Caller(caller) = &identity {
            // The OpenTelemetry attribute of the authenticated user.
            tracing::Span::current().record("enduser.id", caller.subject.as_str());
            if let Some(scope) = scope
                && !caller.grants(scope)
            {
                AUTH_FAILURES
                    .with_label_values(&["insufficient_scope"])
                    .inc();
                return ApiError::insufficient_scope(scope).into_response();
            }
        }
        handle(OnBehalf::of(identity), request).await
    }
}
