//! The bearer token of a request, verified by the keys of a JWKS file.

use std::sync::Arc;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;

use super::caller::{Caller, Claims};
use super::jwks::{self, Key};
use super::rejection::Rejection;
use super::ring::install_ring_provider;

/// The public keys tokens may be signed with, and what every token must say.
#[derive(Clone, Debug)]
pub struct Authenticator {
    keys: Arc<[Key]>,
}

impl Authenticator {
    /// The signing keys of JWKS document `document` (RFC 7517), for tokens of `issuer`
    /// meant for `audience`. Keys marked for encryption (`"use": "enc"`) are skipped;
    /// a symmetric key (`oct`), a key of an unsupported type or curve, or a key whose
    /// `alg` does not fit it is an error, as is a set without signing keys.
    pub fn from_jwks(document: &str, issuer: &str, audience: &str) -> Result<Self, String> {
        install_ring_provider();
        let keys = jwks::signing_keys(document, issuer, audience)?;
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

#[cfg(test)]
mod tests;
