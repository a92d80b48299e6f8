//! Who a valid token says is calling, and who a request is for.

use std::collections::HashSet;

use serde::Deserialize;

use super::rejection::Rejection;

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
    /// Who admission found the request to be for.
    pub(super) fn of(identity: Identity) -> Self {
        match identity {
            Identity::Anyone => Self(None),
            Identity::Caller(caller) => Self(Some(caller.identity)),
        }
    }

    /// `message` as a gRPC request that names the caller in its metadata.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(caller) = &self.0 {
            caller.insert_into(request.metadata_mut());
        }
        request
    }
}

/// Who a request comes from, as admission found it.
#[derive(Clone, Debug)]
pub(super) enum Identity {
    /// Authentication is off (no `GATEWAY_JWT_KEYS_FILE`): every route is open.
    Anyone,
    Caller(Caller),
}
