//! jsonwebtoken's crypto, by ring: the signatures are checked by `ring` (the crypto of
//! rustls, already in the build) through jsonwebtoken's `CryptoProvider`, instead of
//! either crypto backend that jsonwebtoken ships.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey, signature};

/// Makes `ring` jsonwebtoken's crypto for this process. A provider installed before
/// (by whoever links this library) stays: jsonwebtoken keeps the first.
pub(super) fn install_ring_provider() {
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
