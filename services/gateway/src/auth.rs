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
//! checked by admission ([`Admission::run`]).
//!
//! jsonwebtoken parses and validates the tokens; the signatures are checked by `ring`
//! (the crypto of rustls, already in the build) through jsonwebtoken's
//! `CryptoProvider`, instead of either crypto backend that jsonwebtoken ships.
//!
//! - `jwt.rs`: the [`Authenticator`]: the bearer token of a request, verified.
//! - `jwks.rs`: the signing keys of a JWKS file, each with its one algorithm.
//! - `caller.rs`: who a valid token says is calling, and who a request is for.
//! - `rejection.rs`: why a token was refused.
//! - `admission.rs`: authentication, the rate, the route's scope, for each request.
//! - `ring.rs`: jsonwebtoken's crypto, by ring.

mod admission;
mod caller;
mod jwks;
mod jwt;
mod rejection;
mod ring;

pub(crate) use admission::Admission;
pub(crate) use caller::OnBehalf;
pub use jwks::LEEWAY_SECONDS;
pub use jwt::Authenticator;
