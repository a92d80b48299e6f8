//! The signing keys of a JWKS file (RFC 7517), each with the one algorithm it verifies.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Clock skew allowed between the token's issuer and the gateway, on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

#[derive(Clone, Debug)]
pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) algorithm: Algorithm,
    pub(super) decoding: DecodingKey,
    /// `algorithm` only, and the claims every token must hold.
    pub(super) validation: Validation,
}

/// The signing keys of JWKS document `jwks`, for tokens of `issuer` meant for
/// `audience` (see [`Authenticator::from_jwks`](super::Authenticator::from_jwks)).
pub(super) fn signing_keys(jwks: &str, issuer: &str, audience: &str) -> Result<Vec<Key>, String> {
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
    Ok(keys)
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
