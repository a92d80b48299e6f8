//! The admission of each request: authentication, then the client's rate, then the
//! route's scope.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use shared::metrics::IntCounterVec;

use super::caller::Identity;
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
    /// The layer of every route but the health probes.
    pub(crate) fn layer<S: Clone + Send + Sync + 'static>(
        self,
        router: axum::Router<S>,
    ) -> axum::Router<S> {
        router.layer(middleware::from_fn_with_state(self, admit))
    }
}

/// Admits a request or answers for it, in this order:
/// 1. the caller: the token's subject, or anyone when authentication is off; an
///    invalid or missing token is remembered, not answered yet;
/// 2. the rate: each request is charged to the subject when the token is valid, else
///    to the peer's IP address (so a flood of bad tokens is limited too) — 429 when
///    over it;
/// 3. the token: 401 when it was missing or invalid.
///
/// The route's own scope comes after, in [`scoped`].
async fn admit(State(admission): State<Admission>, mut request: Request, next: Next) -> Response {
    let identity = match &admission.authenticator {
        None => Ok(Identity::Anyone),
        Some(authenticator) => authenticator
            .authenticate(request.headers())
            .map(Identity::Caller),
    };
    if let Some(limiter) = &admission.limiter {
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
    match identity {
        Err(rejection) => {
            AUTH_FAILURES.with_label_values(&[rejection.reason()]).inc();
            tracing::debug!(reason = rejection.reason(), "bearer token refused");
            ApiError::unauthenticated(rejection.problem()).into_response()
        }
        Ok(identity) => {
            if let Identity::Caller(caller) = &identity {
                // The OpenTelemetry attribute of the authenticated user.
                tracing::Span::current().record("enduser.id", caller.subject.as_str());
            }
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
    }
}

/// `route`, open only to tokens that grant `scope` (to anyone when authentication is
/// off): 403 otherwise.
pub(crate) fn scoped<S: Clone + Send + Sync + 'static>(
    scope: String,
    route: MethodRouter<S>,
) -> MethodRouter<S> {
    let scope: Arc<str> = scope.into();
    route.route_layer(middleware::from_fn_with_state(scope, require_scope))
}

async fn require_scope(State(scope): State<Arc<str>>, request: Request, next: Next) -> Response {
    match request.extensions().get::<Identity>() {
        Some(Identity::Anyone) => next.run(request).await,
        Some(Identity::Caller(caller)) if caller.grants(&scope) => next.run(request).await,
        Some(Identity::Caller(_)) => {
            AUTH_FAILURES
                .with_label_values(&["insufficient_scope"])
                .inc();
            ApiError::insufficient_scope(&scope).into_response()
        }
        // A scoped route registered outside admission: closed rather than open.
        None => ApiError::internal("a scoped route without admission").into_response(),
    }
}
