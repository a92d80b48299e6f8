//! Who is calling, and may they: OAuth 2.0 bearer tokens (RFC 6750) that are JWTs
//! signed by the keys of a JWKS file, with scopes per route; and the admission of each
//! request — authentication, then the client's rate, then the route's scope.
//!
//! A token is accepted when:
//! - its header names an asymmetric algorithm (EdDSA, ES256, ES384, RS256–512,
//!   PS256–512) and, when it has a `kid`, a key of that id; `none` and the HMAC
//!   algorithms are refused whatever the keys, so a public key can never be used as
//!   an HMAC secret (algorithm confusion);
//! - a key of the file with exactly that algorithm verifies its signature (a key's
//!   algorithm is its `alg`, or follows from its type and curve);
//! - it has `exp`, `iss`, `aud` and `sub`; `exp` and `nbf` (when present) hold with
//!   [`LEEWAY_SECONDS`] for clock skew, `iss` is `GATEWAY_JWT_ISSUER` and `aud` contains
//!   `GATEWAY_JWT_AUDIENCE`.
//!
//! Its `scope` claim (space-separated, RFC 8693) then says which routes it opens: each
//! route declares its scope in its proto (`option (gateway.v1.route).scope`), and is
//! registered behind it ([`scoped`]).
//!
//! jsonwebtoken parses and validates the tokens; the signatures are checked by `ring`
//! (the crypto of rustls, already in the build) through jsonwebtoken's
//! `CryptoProvider`, instead of either crypto backend that jsonwebtoken ships.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey, Validation, signature};
use serde::Deserialize;
use shared::metrics::IntCounterVec;

use crate::error::ApiError;
use crate::rate_limit::{Client, RateLimiter};

/// Clock skew allowed between the token's issuer and the gateway, on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

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

/// The public keys tokens may be signed with, and what every token must say.
#[derive(Clone, Debug)]
pub struct Authenticator {
    keys: Arc<[Key]>,
}

#[derive(Clone, Debug)]
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    decoding: DecodingKey,
    /// `algorithm` only, and the claims every token must hold.
    validation: Validation,
}

impl Authenticator {
    /// The signing keys of JWKS document `jwks` (RFC 7517), for tokens of `issuer`
    /// meant for `audience`. Keys marked for encryption (`"use": "enc"`) are skipped;
    /// a symmetric key (`oct`), a key of an unsupported type or curve, or a key whose
    /// `alg` does not fit it is an error, as is a set without signing keys.
    pub fn from_jwks(jwks: &str, issuer: &str, audience: &str) -> Result<Self, String> {
        install_ring_provider();
        let set: JwkSet = serde_json::from_str(jwks).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let name = jwk
                .common
                .key_id
                .as_deref()
                .map_or_else(|| format!("key {i}"), |kid| format!("key {kid:?}"));
            let algorithm = algorithm_of(jwk).map_err(|e| format!("{name}: {e}"))?;
            let decoding = DecodingKey::from_jwk(jwk).map_err(|e| format!("{name}: {e}"))?;
            let mut validation = Validation::new(algorithm);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_nbf = true;
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                decoding,
                validation,
            });
        }
        if keys.is_empty() {
            return Err("no signing key in the set".to_owned());
        }
        Ok(Self { keys: keys.into() })
    }

    /// How many signing keys tokens are checked against.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The caller a request's `Authorization` header proves.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Rejection> {
        let token = bearer_token(headers)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if !is_asymmetric(header.alg) {
            return Err(Rejection::Algorithm);
        }
        let candidates = self.keys.iter().filter(|key| {
            key.algorithm == header.alg
                && header
                    .kid
                    .as_ref()
                    .is_none_or(|kid| key.kid.as_ref() == Some(kid))
        });
        let mut found = false;
        for key in candidates {
            found = true;
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation) {
                Ok(data) => return Caller::new(data.claims),
                // Another key of the same algorithm (during a rotation) may verify it.
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => {}
                Err(e) => return Err(Rejection::from(e.kind())),
            }
        }
        Err(if found {
            Rejection::Signature
        } else {
            Rejection::UnknownKey
        })
    }
}

/// The claims the gateway reads; the others are checked by jsonwebtoken's validation.
#[derive(Debug, Deserialize)]
struct Claims {
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
    fn new(claims: Claims) -> Result<Self, Rejection> {
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

    fn grants(&self, scope: &str) -> bool {
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
enum Identity {
    /// Authentication is off (no `GATEWAY_JWT_KEYS_FILE`): every route is open.
    Anyone,
    Caller(Caller),
}

/// Why a token was refused: a short reason for the 401's message and the metric's
/// label, never what the cryptography found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not three base64url segments with a JSON header, or claims of the wrong type.
    Malformed,
    /// `none`, an HMAC algorithm, or one the gateway does not know.
    Algorithm,
    /// No key of the file has the token's `kid` and algorithm.
    UnknownKey,
    /// No key of the file verifies the signature.
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    /// A required claim (`exp`, `iss`, `aud`, `sub`) is missing, empty or of the
    /// wrong type, or the subject is not one the services accept (see [`Caller::new`]).
    MissingClaim,
}

impl Rejection {
    /// The label of `gateway_auth_failures_total`.
    fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::MissingClaim => "missing_claim",
        }
    }

    /// What the caller is told (`error_description` of the challenge).
    fn problem(self) -> Option<&'static str> {
        Some(match self {
            Self::Missing => return None,
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm not accepted",
            Self::UnknownKey => "unknown signing key",
            Self::Signature => "bad signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not yet valid",
            Self::Issuer => "wrong issuer",
            Self::Audience => "wrong audience",
            Self::MissingClaim => "a required claim (exp, iss, aud, sub) is missing or not valid",
        })
    }
}

impl From<&ErrorKind> for Rejection {
    fn from(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::MissingRequiredClaim(_) => Self::MissingClaim,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => Self::Algorithm,
            _ => Self::Malformed,
        }
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive).
/// Another scheme, or none, counts as no token (RFC 6750, section 3.1).
fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(AUTHORIZATION) {
            Rejection::Malformed
        } else {
            Rejection::Missing
        });
    };
    let value = value.to_str().map_err(|_| Rejection::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Rejection::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Rejection::Malformed);
    }
    Ok(token)
}

fn is_asymmetric(algorithm: Algorithm) -> bool {
    !matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

/// The algorithm a JWK signs with: its `alg`, which must fit its type and curve, or
/// the one its type and curve imply (RSA keys: RS256, the common default).
fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, String> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => None,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            ref other => return Err(format!("unsupported curve {other:?}")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
            ref other => return Err(format!("unsupported curve {other:?}")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (oct) key: only public keys belong here".to_owned());
        }
        _ => return Err("unsupported key type".to_owned()),
    };
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512) => {
            return Err("an HMAC algorithm: only asymmetric ones are accepted".to_owned());
        }
        Some(alg) => Some(
            Algorithm::try_from(alg)
                .map_err(|_| format!("{alg:?} is not a signature algorithm"))?,
        ),
    };
    match (declared, implied) {
        (Some(declared), Some(implied)) if declared != implied => Err(format!(
            "alg {declared:?} does not fit the key's curve ({implied:?})"
        )),
        (Some(declared), _) if declared.family() != family_of(jwk) => {
            Err(format!("alg {declared:?} does not fit the key's type"))
        }
        (Some(algorithm), _) | (None, Some(algorithm)) => Ok(algorithm),
        (None, None) => Ok(Algorithm::RS256),
    }
}

fn family_of(jwk: &Jwk) -> jsonwebtoken::AlgorithmFamily {
    use jsonwebtoken::AlgorithmFamily;
    match jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
        _ => AlgorithmFamily::Hmac,
    }
}

// ---------------------------------------------------------------------------------------
// Admission: authentication, rate, scope.

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

// ---------------------------------------------------------------------------------------
// jsonwebtoken's crypto, by ring.

/// Makes `ring` jsonwebtoken's crypto for this process. A provider installed before
/// (by whoever links this library) stays: jsonwebtoken keeps the first.
fn install_ring_provider() {
    static RING: CryptoProvider = CryptoProvider {
        signer_factory: ring_signer,
        verifier_factory: ring_verifier,
        key_utils: KeyUtils::new_unimplemented(),
    };
    let _ = RING.install_default();
}

/// The gateway verifies tokens and never signs one.
fn ring_signer(_: &Algorithm, _: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Err(ErrorKind::Provider("the gateway does not sign tokens".to_owned()).into())
}

fn ring_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    use ring::signature as sig;
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let verify: &'static dyn sig::VerificationAlgorithm = match algorithm {
        Algorithm::EdDSA => &sig::ED25519,
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    let rsa: Option<&'static sig::RsaParameters> = match algorithm {
        Algorithm::RS256 => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&sig::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    let key = match (key.kind(), rsa) {
        // A JWK's `n` and `e`.
        (DecodingKeyKind::RsaModulusExponent { n, e }, Some(params)) => RingKey::Rsa {
            params,
            n: n.clone(),
            e: e.clone(),
        },
        // Ed25519: the raw 32 bytes; ECDSA: the uncompressed point; RSA: PKCS#1 DER.
        (DecodingKeyKind::SecretOrDer(bytes), _) => {
            RingKey::Other(sig::UnparsedPublicKey::new(verify, bytes.clone()))
        }
        (DecodingKeyKind::RsaModulusExponent { .. }, None) => {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
    };
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        key,
    }))
}

struct RingVerifier {
    algorithm: Algorithm,
    key: RingKey,
}

enum RingKey {
    Rsa {
        params: &'static ring::signature::RsaParameters,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Other(ring::signature::UnparsedPublicKey<Vec<u8>>),
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verified = match &self.key {
            RingKey::Rsa { params, n, e } => {
                ring::signature::RsaPublicKeyComponents { n, e }.verify(params, message, signature)
            }
            RingKey::Other(key) => key.verify(message, signature),
        };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(keys: serde_json::Value) -> Result<Authenticator, String> {
        Authenticator::from_jwks(&serde_json::json!({ "keys": keys }).to_string(), "i", "a")
    }

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn key_algorithms_follow_from_type_and_curve() {
        let auth = jwks(serde_json::json!([
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "ed"},
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "use": "enc"},
        ]))
        .unwrap();
        assert_eq!(auth.key_count(), 1);
        assert_eq!(auth.keys[0].algorithm, Algorithm::EdDSA);
    }

    #[test]
    fn symmetric_and_mismatched_keys_are_refused() {
        for (keys, expected) in [
            (
                serde_json::json!([{"kty": "oct", "k": "c2VjcmV0"}]),
                "symmetric",
            ),
            (
                serde_json::json!([{"kty": "OKP", "crv": "Ed25519", "x": ED_X, "alg": "HS256"}]),
                "HMAC",
            ),
            (
                serde_json::json!([{"kty": "OKP", "crv": "Ed25519", "x": ED_X, "alg": "ES256"}]),
                "does not fit",
            ),
            (serde_json::json!([]), "no signing key"),
            (
                serde_json::json!([{"kty": "OKP", "crv": "Ed25519", "x": ED_X, "use": "enc"}]),
                "no signing key",
            ),
        ] {
            let error = jwks(keys.clone()).unwrap_err();
            assert!(error.contains(expected), "{keys}: {error}");
        }
        assert!(Authenticator::from_jwks("{", "i", "a").is_err());
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    /// RS256 through ring: a token signed (with openssl) by a 2048-bit key whose private
    /// half was thrown away; `n` and the token are all that is left of it.
    #[test]
    fn rs256_tokens_verify_with_the_jwk_modulus() {
        const N: &str = "rewf1rkX3Wqr6S7WQDTxmeTz5TDzFiwvfc2ghhCj4jCJOMwlZUZMtN4Fb8NcDTrftSc6Be0b17qVacusmKTymxs_ILSsnYvCM8i8m_qPypgWWbBTMhBjtIvl_f10NjYyEchnrVCLJ_aVPVle2DCE4akQ_XYbgUPZ6-amDhOG0fPNJ4NQ-pNlH93MVXLQRr8_xDDrs3fus6wpPQVzBhS7L6xD5NuZe07-Hkz70Dj_5ORU4Up2wH7sWfaYX82Dym6odKTgiP-tAT1PTvqdnE44BaE4NvwbPmbG55t2CvRVh0tM-NKHdbsLRzY0F2mK37C8uvl2mUadQGoPDFo9xajOyQ";
        const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzYSJ9.eyJpc3MiOiJpIiwiYXVkIjoiYSIsInN1YiI6InJzYS11c2VyIiwic2NvcGUiOiJvcmRlcnM6cmVhZCIsImV4cCI6NDEwMjQ0NDgwMH0.RHjDU-7Thh0aJF7pKmMtPaPJjYnGAKR379NqAq4XHXsRvtYejSIrkPjU3aRVgW5VeOyH6hyTf6MO3s1AS-7JfmzzlUsAQpVVH5ehFF4TrBAZqSeSDTdihmlQDStEnLZKBzjWWom_W5dP4DyONSh4Oyw-fp4AI-d2cXRlpEwEmlvI3o88MOIlUQkClZoaM_X7VAcws6IW2F49vJU1eVUXX-xG1rvzAXwEG7RH9FW7hq1YZw_9bAEHHVNBBlUcj8kEbheoUkcPH1dKNAmg1eRkyKLaOXgLU957TxAThyFWybf476viSlffI-AEUKJoxGp3D4Efh9A6K6tqpErX1bGb3A";
        let auth =
            jwks(serde_json::json!([{"kty": "RSA", "n": N, "e": "AQAB", "kid": "rsa"}])).unwrap();
        let caller = auth.authenticate(&bearer(TOKEN)).unwrap();
        assert_eq!(caller.subject, "rsa-user");
        assert!(caller.grants("orders:read"));
        // One bit of the signature changed.
        let (message, signature) = TOKEN.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('R') { "Q" } else { "R" };
        let forged = format!("{message}.{flipped}{}", &signature[1..]);
        assert_eq!(
            auth.authenticate(&bearer(&forged)).unwrap_err(),
            Rejection::Signature
        );
        // The same key declared for PS256 takes no RS256 token.
        let ps =
            jwks(serde_json::json!([{"kty": "RSA", "n": N, "e": "AQAB", "alg": "PS256"}])).unwrap();
        assert_eq!(
            ps.authenticate(&bearer(TOKEN)).unwrap_err(),
            Rejection::UnknownKey
        );
    }

    /// ES256 through ring, with a key pair made for the test.
    #[test]
    fn es256_tokens_verify_with_the_jwk_point() {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // Uncompressed point: 0x04, x, y.
        let point = key.public_key().as_ref();
        let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..]));
        let auth =
            jwks(serde_json::json!([{"kty": "EC", "crv": "P-256", "x": x, "y": y}])).unwrap();
        let header = B64.encode(r#"{"alg":"ES256","typ":"JWT"}"#);
        let claims = B64.encode(r#"{"iss":"i","aud":"a","sub":"ec-user","exp":4102444800}"#);
        let message = format!("{header}.{claims}");
        let signature = key.sign(&rng, message.as_bytes()).unwrap();
        let token = format!("{message}.{}", B64.encode(signature.as_ref()));
        let caller = auth.authenticate(&bearer(&token)).unwrap();
        assert_eq!(caller.subject, "ec-user");
        assert!(!caller.grants("orders:read"));
        // The same token announced as ES384 finds no key.
        let header = B64.encode(r#"{"alg":"ES384","typ":"JWT"}"#);
        let (_, rest) = token.split_once('.').unwrap();
        let relabelled = format!("{header}.{rest}");
        assert_eq!(
            auth.authenticate(&bearer(&relabelled)).unwrap_err(),
            Rejection::UnknownKey
        );
    }

    #[test]
    fn only_bearer_tokens_count() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            headers
        };
        assert_eq!(bearer_token(&HeaderMap::new()), Err(Rejection::Missing));
        assert_eq!(
            bearer_token(&headers("Basic dTpw")),
            Err(Rejection::Missing)
        );
        assert_eq!(bearer_token(&headers("Bearer ")), Err(Rejection::Malformed));
        assert_eq!(bearer_token(&headers("bearer a.b.c")), Ok("a.b.c"));
    }
}
