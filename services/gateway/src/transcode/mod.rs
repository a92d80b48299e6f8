//! The transcoding gateway: every route of [`Routes`] served by one generic handler,
//! which turns the HTTP request into the RPC's request message (`request.rs`), calls
//! the upstream through its `shared::client` channel with a codec of messages known
//! at run time (`codec.rs`), and turns the answer, a message or a stream of them,
//! into JSON or Server-Sent Events (`response.rs`). No route has code of its own: a
//! method annotated with `google.api.http` is on HTTP after a rebuild.
//!
//! Each route is registered with axum by its verb and path, so that routing and 405
//! with `Allow` work as for any axum route; its handler runs the request through the
//! edge (`edge.rs`: span, limits, admission, the route's scope). The path is
//! registered with its variables named by position (`/v1/orders/{0}`: two templates
//! may name the variable of one segment apart); the span names the template.

mod codec;
mod hidden;
mod json;
mod request;
mod response;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Query, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use http::header::CONTENT_TYPE;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use prost_reflect::{DynamicMessage, Value};
use shared::client::Channel;
use tonic::Status;

use crate::auth::OnBehalf;
use crate::edge::{Edge, SpanNames};
use crate::error::ApiError;
use crate::routes::{Body, Route, Routes, Segment};
use crate::upstream::Upstreams;
use codec::DynamicCodec;

#[doc(hidden)]
pub(crate) use hidden::Hidden;
#[doc(hidden)]
pub(crate) use json::to_vec as write_json;
#[doc(hidden)]
pub(crate) use request::decode_json;

/// A router of every route of `routes`, calling `upstreams`, reading request bodies
/// of up to `max_body_bytes` (`GATEWAY_MAX_BODY_BYTES`; named in the 413), each behind `edge` (its span, the limits,
/// admission and its scope). A route whose service has no upstream is an error
/// naming it.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(
    routes: &Routes,
    upstreams: &Upstreams,
    max_body_bytes: usize,
    edge: &Arc<Edge>,
) -> Result<Router<S>, String> {
    let mut router = Router::new();
    let mut by_path: Vec<(String, Vec<Arc<Endpoint>>)> = Vec::new();
    for route in routes {
        let service = route.method.parent_service().full_name().to_owned();
        let channel = upstreams.channel_of(&service).ok_or_else(|| {
            format!(
                "{} {} calls {service}, which has no upstream",
                route.verb, route.path.template
            )
        })?;
        let endpoint = Endpoint::new(route.clone(), channel, Arc::clone(edge), max_body_bytes);
        let path = axum_path(route);
        match by_path.iter_mut().find(|(p, _)| *p == path) {
            Some((_, endpoints)) => endpoints.push(Arc::new(endpoint)),
            None => by_path.push((path, vec![Arc::new(endpoint)])),
        }
    }
    for (path, endpoints) in by_path {
        let mut methods = axum::routing::MethodRouter::new();
        for endpoint in endpoints {
            let filter = method_filter(&endpoint.route.verb)?;
            let handler = move |request: Request| {
                let endpoint = Arc::clone(&endpoint);
                async move { endpoint.answer(request).await }
            };
            methods = methods.merge(on(filter, handler));
        }
        router = router.route(&path, methods);
    }
    Ok(router)
}

/// The route's path for axum, its variables named by position: `/v1/orders/{0}`.
fn axum_path(route: &Route) -> String {
    let mut path = String::new();
    let mut n = 0;
    for segment in &route.path.segments {
        path.push('/');
        match segment {
            Segment::Literal(literal) => path.push_str(literal),
            Segment::Variable(_) => {
                path.push_str(&format!("{{{n}}}"));
                n += 1;
            }
        }
    }
    path
}

fn method_filter(verb: &Method) -> Result<MethodFilter, String> {
    MethodFilter::try_from(verb.clone()).map_err(|e| format!("{verb}: {e}"))
}

/// One route, ready to serve.
#[derive(Debug)]
struct Endpoint {
    route: Arc<Route>,
    /// Its span's name and route, made once.
    span: SpanNames,
    /// `/package.Service/Method`.
    grpc_path: PathAndQuery,
    channel: Channel,
    /// The fields its answers leave out.
    hidden: Arc<Hidden>,
    /// What the request goes through before it is served.
    edge: Arc<Edge>,
    /// `GATEWAY_MAX_BODY_BYTES`, for the 413.
    max_body_bytes: usize,
}

impl Endpoint {
    fn new(route: Route, channel: Channel, edge: Arc<Edge>, max_body_bytes: usize) -> Self {
        let grpc_path = PathAndQuery::try_from(route.grpc_path())
            .expect("a method's full name is a valid path");
        Self {
            span: SpanNames::new(&route.verb, &route.path.template),
            hidden: Arc::new(Hidden::of(&route.output())),
            route: Arc::new(route),
            grpc_path,
            channel,
            edge,
            max_body_bytes,
        }
    }

    /// The answer to `request`, behind the edge and the route's scope.
    async fn answer(&self, request: Request) -> Response {
        // On the heap: the call's future is large, and the edge's futures around it
        // would otherwise be moved, with it inside, at each step.
        let serve = |caller, request| {
            Box::pin(async move {
                match self.serve(caller, request).await {
                    Ok(response) => response,
                    Err(error) => error.into_response(),
                }
            })
        };
        self.edge
            .serve(Some(&self.span), Some(&self.route.scope), request, serve)
            .await
    }

    /// The request as the RPC's message, the call, and its answer.
    async fn serve(&self, caller: OnBehalf, request: Request) -> Result<Response, ApiError> {
        let max_body_bytes = self.max_body_bytes;
        let route = &self.route;
        let (mut parts, body) = request.into_parts();
        let mut message = DynamicMessage::new(route.input());

        let params = RawPathParams::from_request_parts(&mut parts, &())
            .await
            .map_err(|rejection| ApiError::invalid(rejection.body_text(), vec![]))?;
        let values: Vec<&str> = params.iter().map(|(_, value)| value).collect();
        request::path(route, &mut message, &values)?;

        let key = match &route.idempotency_key {
            Some(binding) => Some(request::idempotency_key(
                &parts.headers,
                &response::canonical_header(binding.header.as_str()),
            )?),
            None => None,
        };

        if route.body == Body::Whole {
            // Nothing comes from the query: reading it would only risk a 400 over
            // parameters a proxy added.
        } else if parts.uri.query().is_some() {
            let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(&mut parts, &())
                .await
                .map_err(|rejection| ApiError::invalid(rejection.body_text(), vec![]))?;
            request::query(route, &mut message, &pairs)?;
        }

        if route.body != Body::None {
            if !is_json(&parts.headers) {
                return Err(ApiError::not_json());
            }
            // Read up to `GATEWAY_MAX_BODY_BYTES`, never more: beyond it, 413.
            let bytes = Limited::new(body, max_body_bytes)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<LengthLimitError>() {
                        ApiError::body_too_large(max_body_bytes)
                    } else {
                        ApiError::invalid(
                            format!(
                                "cannot read the request body: Failed to buffer the request body: {error}"
                            ),
                            vec![],
                        )
                    }
                })?
                .to_bytes();
            request::body(route, &mut message, &bytes)?;
        }

        if let (Some(binding), Some(key)) = (&route.idempotency_key, &key) {
            let field = binding.field.fields();
            let mut current = &mut message;
            for parent in &field[..field.len() - 1] {
                current = match current.get_field_mut(parent) {
                    Value::Message(inner) => inner,
                    _ => unreachable!("a field path goes through message fields"),
                };
            }
            current.set_field(&field[field.len() - 1], Value::String(key.clone()));
        }

        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| ApiError::from(Status::unavailable(e.to_string())))?;
        let codec = DynamicCodec::new(route.output());
        let upstream_error = |status| response::upstream_error(route, status, key.as_deref());
        if route.server_streaming() {
            let stream = grpc
                .server_streaming(caller.request(message), self.grpc_path.clone(), codec)
                .await
                .map_err(upstream_error)?;
            Ok(response::stream(
                Arc::clone(&self.route),
                stream.into_inner(),
                Arc::clone(&self.hidden),
            ))
        } else {
            let answer = grpc
                .unary(caller.request(message), self.grpc_path.clone(), codec)
                .await
                .map_err(upstream_error)?;
            Ok(response::unary(route, answer.into_inner(), &self.hidden))
        }
    }
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let essence = content_type
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    essence.is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_content_types_are_json() {
        let json = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(json("application/json"));
        assert!(json("Application/JSON; charset=utf-8"));
        assert!(!json("text/plain"));
        assert!(!json("application/jsonl"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn axum_paths_name_variables_by_position() {
        let routes = Routes::contracts().unwrap();
        let paths: Vec<String> = routes.iter().map(axum_path).collect();
        assert!(
            paths.contains(&"/v1/orders/{0}/watch".to_owned()),
            "{paths:?}"
        );
        assert!(paths.contains(&"/v1/products".to_owned()), "{paths:?}");
    }
}
