//! The HTTP server's routes: the API's routes, read from the protos and served by
//! the transcoder (`transcode/`), the probes, and the layers around them. The only
//! file that sees axum's routing.
//!
//! | route | scope | upstream call |
//! |---|---|---|
//! | every method with `option (google.api.http)` | its `(gateway.v1.route).scope` | the method |
//! | `GET /healthz` | — | — (liveness: the process serves) |
//! | `GET /readyz` | — | none: the upstreams' health as last asked (`grpc.health.v1.Health/Check`, every second) |
//!
//! Every route but the two probes is bounded (`limits.rs`: requests in flight, 503;
//! time, 504), then goes through admission (`auth/admission.rs`): a bearer token
//! when authentication is on (401), the client's rate (429), then the route's scope
//! (403). The probes are answered whatever the load and without a token: the kubelet
//! and load balancers have none.
//!
//! With authentication on, the token's subject is the customer: every upstream call
//! names the caller in its metadata (`shared::identity`), and the services hold it
//! to its own customer: an order for another `customerId` is 403, another customer's
//! order or notifications 404, unless the token holds `orders:admin`
//! (`notifications:admin`).
//!
//! Every error, the gateway's own included (bad JSON, a body too large, an unknown
//! route), is answered in the JSON shape of [`ApiError`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use http::StatusCode;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::auth::Admission;
use crate::edge::{Edge, http_span, record_status};
use crate::error::ApiError;
use crate::limits::Limits;
use crate::routes::Routes;
use crate::transcode;
use crate::upstream::{Readiness, Upstreams};

/// What the probes reach.
#[derive(Clone, Debug)]
struct AppState {
    readiness: Readiness,
    /// Cancelled when shutdown begins: `/readyz` turns 503 so that no new traffic comes.
    draining: CancellationToken,
}

/// The routes and the layers around them. A route the gateway cannot serve (its
/// service has no upstream) is an error naming it.
pub(crate) fn router(
    routes: &Routes,
    upstreams: &Upstreams,
    readiness: Readiness,
    draining: CancellationToken,
    max_body_bytes: usize,
    limits: Limits,
    admission: Admission,
) -> Result<Router, String> {
    let state = AppState {
        readiness,
        draining,
    };
    let edge = Arc::new(Edge::new(limits, admission));
    let api = transcode::router(routes, upstreams, max_body_bytes, &edge)?;
    let no_route = {
        let edge = Arc::clone(&edge);
        move |request: Request| async move {
            edge.serve(None, None, request, |_, request| async move {
                ApiError::no_route(request.uri().path()).into_response()
            })
            .await
        }
    };
    let method_not_allowed = move |request: Request| async move {
        edge.serve(None, None, request, |_, request| async move {
            ApiError::method_not_allowed(request.method(), request.uri().path()).into_response()
        })
        .await
    };
    let api = api
        // Unknown paths and methods get the JSON error shape too (axum keeps the
        // `Allow` header on 405); behind admission, so that no route can be probed
        // for without a token.
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed);
    // The probes, the API's description and its explorer: no limits, no admission.
    let public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The API's description and its explorer, public like the probes: they say
        // what a token may do, not what is behind it.
        .merge(crate::openapi::router())
        .merge(crate::explorer::router())
        // One span per request, as on the API's routes.
        .layer(middleware::from_fn(public_span));
    // No body limit layer: the API's routes read their bodies up to
    // `max_body_bytes` (`transcode/`), the public ones read none.
    Ok(api.merge(public).with_state(state))
}

/// The span of a request to a public route: the probes, the OpenAPI document and
/// the explorer.
async fn public_span(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{} {route}", request.method()),
        None => request.method().to_string(),
    };
    let span = http_span(&name, route.as_deref(), &request);
    let response = next.run(request).instrument(span.clone()).await;
    record_status(&span, &response);
    response
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize)]
struct Probe {
    /// `SERVING` or `NOT_SERVING`, as in gRPC health.
    status: &'static str,
    /// Why not, when `upstreams` does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// Each upstream's health, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    upstreams: BTreeMap<Arc<str>, &'static str>,
}

/// Liveness: the process serves requests, also while it drains (restarting a
/// draining gateway would cut its in-flight requests). Asks no upstream: a restart
/// cannot fix an upstream.
async fn healthz() -> Json<Probe> {
    Json(Probe {
        status: "SERVING",
        reason: None,
        upstreams: BTreeMap::new(),
    })
}

/// Readiness: 200 when every upstream answered its last health check (asked every
/// second in the background, `upstream::Readiness`) with SERVING, else 503 naming
/// each upstream's state; 503 as soon as shutdown begins.
///
/// Depending on upstreams means that an outage of one takes every gateway replica
/// out of its load balancer: clients then get a connection error instead of a JSON
/// 503. That is the trade chosen here; drop the checks if you prefer the JSON 503s.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    if state.draining.is_cancelled() {
        let probe = Probe {
            status: "NOT_SERVING",
            reason: Some("shutting down"),
            upstreams: BTreeMap::new(),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(probe));
    }
    let upstreams = state.readiness.health();
    let ready = upstreams.values().all(|status| *status == "SERVING");
    let (code, status) = if ready {
        (StatusCode::OK, "SERVING")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING")
    };
    let probe = Probe {
        status,
        reason: None,
        upstreams,
    };
    (code, Json(probe))
}
