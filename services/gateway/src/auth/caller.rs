//! Who a valid token says is calling, and who a request is for.

use std::collections::HashSet;

use serde::Deserialize;

use super::rejection::Rejection;
use crate::error::ApiError;

/// The claims the gateway reads; the others are checked by jsonwebtoken's validation.
#[derive(Debug, Deserialize)]
pub(super) struct Claims {
    /// Required by the validation, so that a missing one is reported as such.
    sub: Option<String>,
    /// Space-separated scopes; none when absent.
    #[serde(default)]
    scope: String,
}

/// An authenticated caller: the token's subject and the scopes it grants.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) subject: String,
    scopes: HashSet<String>,
    /// What the services are told of the caller (`shared::identity`).
    identity: shared::identity::Caller,
}

impl Caller {
    /// The caller of valid claims. The subject is the customer the caller is, and
    /// travels to the services as metadata: an empty one, or one longer than 256
    /// characters or not visible ASCII, is no valid subject.
    pub(super) fn new(claims: Claims) -> Result<Self, Rejection> {
        let subject = claims.sub.unwrap_or_default();
        let identity =
            shared::identity::Caller::new(&subject, claims.scope.split_ascii_whitespace())
                .ok_or(Rejection::MissingClaim)?;
        Ok(Self {
            subject,
            scopes: claims
                .scope
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            identity,
        })
    }

    pub(super) fn grants(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}

/// Who a request is for, as the services are told: the token's caller, or nobody
/// when authentication is off. A handler passes it on with every upstream call
/// ([`OnBehalf::request`]); the services decide what the caller may see and do.
#[derive(Clone, Debug)]
pub(crate) struct OnBehalf(Option<shared::identity::Caller>);

impl OnBehalf {
    /// `message` as a gRPC request that names the caller in its metadata.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(caller) = &self.0 {
            caller.insert_into(request.metadata_mut());
        }
        request
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OnBehalf {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        match parts.extensions.get::<Identity>() {
            Some(Identity::Anyone) => Ok(Self(None)),
            Some(Identity::Caller(caller)) => Ok(Self(Some(caller.identity.clone()))),
            // A handler outside admission: refused rather than served as nobody.
            None => Err(ApiError::internal("a route without admission")),
        }
    }
}

/// Who a request comes from, as admission left it in the request's extensions.
#[derive(Clone, Debug)]
pub(super) enum Identity {
    /// Authentication is off (no `GATEWAY_JWT_KEYS_FILE`): every route is open.
    Anyone,
    Caller(Caller),
}
