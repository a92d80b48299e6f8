//! The HTTP routes of the API, read from the protos: every method with
//! `option (google.api.http)` is a route, with the scope and bindings of its
//! `option (gateway.v1.route)` (`proto/gateway/v1/options.proto`).
//!
//! [`Routes::from_descriptor_set`] reads them once, at start-up, from the descriptor
//! set the `contracts` crate embeds; a route that the gateway could not serve (a path
//! variable naming no field, a body on GET, a missing scope, two methods on one path)
//! is an error there, naming the method. The gateway serves these routes
//! (`transcode/`), and the OpenAPI document describes them: both read this model,
//! and nothing else, so a new annotated RPC is on HTTP, and documented, after a
//! rebuild.
//!
//! Supported from `google.api.http`: the verbs `get`, `put`, `post`, `delete`,
//! `patch`; path templates of literal segments and variables that each fill one
//! whole segment, `{field}` or `{field=*}`, where `field` may be a path into nested
//! messages (`{order.order_id}`); `body` `*`, one field, or none; `response_body`.
//! Not supported (refused at start-up rather than served wrongly): `**` and
//! multi-segment variables, custom verbs (`:cancel`), `custom` patterns and
//! `additional_bindings`.

use std::collections::HashSet;
use std::fmt;

use http::{HeaderName, Method, StatusCode};
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, ReflectMessage as _, ServiceDescriptor,
};

mod path;

pub use path::{FieldPath, PathTemplate, Segment};

/// The full name of the standard HTTP annotation.
const HTTP_EXTENSION: &str = "google.api.http";
/// The full name of the project's route option.
const ROUTE_EXTENSION: &str = "gateway.v1.route";

/// Every annotated method of a descriptor set, as routes, in the order of the set
/// (file, service, method).
#[derive(Clone, Debug)]
pub struct Routes {
    pool: DescriptorPool,
    routes: Vec<Route>,
}

/// One route: an RPC on HTTP.
#[derive(Clone, Debug)]
pub struct Route {
    /// The RPC: its service, input and output messages, and its comments
    /// (`method.parent_file()` … `source_code_info`).
    pub method: MethodDescriptor,
    /// The HTTP verb.
    pub verb: Method,
    /// The path template, with the request fields its variables fill.
    pub path: PathTemplate,
    /// What the request body fills.
    pub body: Body,
    /// The response field the answer's body is made of; `None`: the whole response.
    pub response_body: Option<FieldPath>,
    /// The OAuth scope a bearer token must grant (`gateway.v1.route.scope`).
    pub scope: String,
    /// The header that fills a request field with an idempotency key, if any.
    pub idempotency_key: Option<HeaderField>,
    /// Set when a success creates a resource: answered 201 with this `Location`,
    /// a template over the response message.
    pub location: Option<PathTemplate>,
}

/// What the request body fills (`google.api.http` `body`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body: every field the path does not bind comes from the query string.
    None,
    /// `*`: the whole request message, but for the fields the path or a header binds.
    Whole,
    /// One field of the request (a message or a repeated field, in practice); the
    /// other fields not bound by the path come from the query string.
    Field(FieldPath),
}

/// A request field filled from an HTTP header.
#[derive(Clone, Debug)]
pub struct HeaderField {
    /// The header, e.g. `Idempotency-Key`.
    pub header: HeaderName,
    /// The field it fills (a singular string).
    pub field: FieldPath,
}

/// A route the gateway could not serve as annotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// The method, e.g. `orders.v1.OrderService.PlaceOrder`; empty for the set itself.
    pub method: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.method.is_empty() {
            write!(f, "HTTP routes: {}", self.problem)
        } else {
            write!(f, "HTTP route of {}: {}", self.method, self.problem)
        }
    }
}

impl std::error::Error for RouteError {}

impl Routes {
    /// The routes of the project's own descriptor set (`contracts`).
    pub fn contracts() -> Result<Self, RouteError> {
        Self::from_descriptor_set(contracts::FILE_DESCRIPTOR_SET)
    }

    /// The routes of the encoded `FileDescriptorSet` `bytes`: every method with
    /// `option (google.api.http)`.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, RouteError> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| RouteError {
            method: String::new(),
            problem: format!("not a descriptor set: {e}"),
        })?;
        Self::from_pool(pool)
    }

    /// The routes of the methods of `pool`.
    pub fn from_pool(pool: DescriptorPool) -> Result<Self, RouteError> {
        let mut routes = Vec::new();
        // Without the annotation's definition in the set, no method can carry it.
        if let Some(http) = pool.get_extension_by_name(HTTP_EXTENSION) {
            let route = pool.get_extension_by_name(ROUTE_EXTENSION);
            for service in pool.services() {
                for method in service.methods() {
                    let options = method.options();
                    if !options.has_extension(&http) {
                        continue;
                    }
                    let error = |problem: String| RouteError {
                        method: method.full_name().to_owned(),
                        problem,
                    };
                    let rule = message_of(&options, &http);
                    let extra = route
                        .as_ref()
                        .filter(|route| options.has_extension(route))
                        .map(|route| message_of(&options, route));
                    routes.push(Route::new(&method, &rule, extra.as_ref()).map_err(error)?);
                }
            }
        }
        let mut seen = HashSet::new();
        for route in &routes {
            // The same verb on the same path, variables named apart: `{a}` = `{b}`.
            if !seen.insert((route.verb.clone(), route.path.shape())) {
                return Err(RouteError {
                    method: route.method.full_name().to_owned(),
                    problem: format!(
                        "{} {} is also the route of another method",
                        route.verb, route.path.template
                    ),
                });
            }
        }
        Ok(Self { pool, routes })
    }

    /// The routes, in the order of the descriptor set.
    pub fn iter(&self) -> std::slice::Iter<'_, Route> {
        self.routes.iter()
    }

    /// The descriptors they were read from.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The gRPC services that have at least one route, e.g. `orders.v1.OrderService`,
    /// in order and without repeats.
    pub fn services(&self) -> Vec<ServiceDescriptor> {
        let mut services: Vec<ServiceDescriptor> = Vec::new();
        for route in &self.routes {
            let service = route.method.parent_service().clone();
            if !services.contains(&service) {
                services.push(service);
            }
        }
        services
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl<'a> IntoIterator for &'a Routes {
    type Item = &'a Route;
    type IntoIter = std::slice::Iter<'a, Route>;

    fn into_iter(self) -> Self::IntoIter {
        self.routes.iter()
    }
}

/// The full name of the standard field visibility option.
const VISIBILITY_EXTENSION: &str = "google.api.field_visibility";

/// Whether `field` is kept off HTTP: it has a `google.api.field_visibility`
/// restriction (e.g. `"INTERNAL"`). The gateway leaves it out of its answers, and the
/// OpenAPI document out of its schemas.
pub fn is_internal(field: &FieldDescriptor) -> bool {
    let Some(extension) = field
        .parent_pool()
        .get_extension_by_name(VISIBILITY_EXTENSION)
    else {
        return false;
    };
    let options = field.options();
    options.has_extension(&extension)
        && !string(&message_of(&options, &extension), "restriction").is_empty()
}

/// The message value of extension `extension` in `options`.
fn message_of(options: &DynamicMessage, extension: &ExtensionDescriptor) -> DynamicMessage {
    match options.get_extension(extension).as_message() {
        Some(message) => message.clone(),
        None => DynamicMessage::new(
            extension
                .kind()
                .as_message()
                .cloned()
                .unwrap_or_else(|| options.descriptor()),
        ),
    }
}

/// A string field of a dynamic message (empty when unset or not a string).
fn string(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A message field of a dynamic message, when set.
fn submessage(message: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    if !message.has_field_by_name(name) {
        return None;
    }
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_message().cloned())
}

impl Route {
    fn new(
        method: &MethodDescriptor,
        rule: &DynamicMessage,
        extra: Option<&DynamicMessage>,
    ) -> Result<Self, String> {
        if method.is_client_streaming() {
            return Err("client-streaming methods cannot be HTTP routes".to_owned());
        }
        if !rule
            .get_field_by_name("additional_bindings")
            .is_some_and(|v| v.as_list().is_some_and(<[_]>::is_empty))
        {
            return Err("additional_bindings are not supported".to_owned());
        }
        let verbs = [
            ("get", Method::GET),
            ("put", Method::PUT),
            ("post", Method::POST),
            ("delete", Method::DELETE),
            ("patch", Method::PATCH),
        ];
        let (verb, template) = verbs
            .into_iter()
            .find(|(name, _)| rule.has_field_by_name(name))
            .map(|(name, verb)| (verb, string(rule, name)))
            .ok_or_else(|| {
                "the rule has no get, put, post, delete or patch (custom is not supported)"
                    .to_owned()
            })?;
        let input = method.input();
        let path = PathTemplate::parse(&template, &input)?;
        for field in path.variables() {
            let last = field.last();
            if last.is_list() || last.is_map() || matches!(last.kind(), Kind::Message(_)) {
                return Err(format!(
                    "path variable {{{field}}} is not a singular scalar field"
                ));
            }
        }
        let body = match string(rule, "body").as_str() {
            "" => Body::None,
            "*" => Body::Whole,
            field => Body::Field(FieldPath::parse(field, &input)?),
        };
        if body != Body::None && matches!(verb, Method::GET | Method::DELETE) {
            return Err(format!("{verb} takes no body"));
        }
        let response_body = match string(rule, "response_body").as_str() {
            "" => None,
            field => Some(FieldPath::parse(field, &method.output())?),
        };
        let scope = extra.map(|e| string(e, "scope")).unwrap_or_default();
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            return Err(
                "needs option (gateway.v1.route).scope: one OAuth scope, e.g. \"orders:read\""
                    .to_owned(),
            );
        }
        let idempotency_key = match extra.and_then(|e| submessage(e, "idempotency_key")) {
            None => None,
            Some(key) => {
                let name = string(&key, "header");
                let header = HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("idempotency_key.header {name:?} is no header name"))?;
                let field = FieldPath::parse(&string(&key, "field"), &input)?;
                if field.last().kind() != Kind::String || field.last().is_list() {
                    return Err(format!("idempotency_key.field {field} is not a string"));
                }
                Some(HeaderField { header, field })
            }
        };
        let location = match extra.and_then(|e| submessage(e, "created")) {
            None => None,
            Some(created) => {
                if method.is_server_streaming() {
                    return Err("a server-streaming method creates nothing".to_owned());
                }
                let location = PathTemplate::parse(&string(&created, "location"), &method.output())
                    .map_err(|e| format!("created.location: {e}"))?;
                Some(location)
            }
        };
        Ok(Self {
            method: method.clone(),
            verb,
            path,
            body,
            response_body,
            scope,
            idempotency_key,
            location,
        })
    }

    /// The request message.
    pub fn input(&self) -> MessageDescriptor {
        self.method.input()
    }

    /// The response message (of each streamed message, for a server stream).
    pub fn output(&self) -> MessageDescriptor {
        self.method.output()
    }

    /// Whether the RPC answers with a stream (served as Server-Sent Events).
    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }

    /// The gRPC path of the call, e.g. `/orders.v1.OrderService/PlaceOrder`.
    pub fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.method.parent_service().full_name(),
            self.method.name()
        )
    }

    /// The HTTP status of a success: 201 for a route that creates, else 200.
    pub fn status(&self) -> StatusCode {
        if self.location.is_some() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        }
    }

    /// The top-level request fields the query string may set: those the path, the
    /// body and a header do not. (A nested field of one of them is set as
    /// `?parent.child=`.)
    pub fn query_fields(&self) -> Vec<FieldDescriptor> {
        if self.body == Body::Whole {
            return Vec::new();
        }
        let bound = |field: &FieldDescriptor| {
            self.path
                .variables()
                .chain(match &self.body {
                    Body::Field(path) => Some(path),
                    _ => None,
                })
                .chain(self.idempotency_key.iter().map(|key| &key.field))
                .any(|path| path.first() == field)
        };
        self.input().fields().filter(|f| !bound(f)).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
