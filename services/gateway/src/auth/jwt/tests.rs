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
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    // Uncompressed point: 0x04, x, y.
    let point = key.public_key().as_ref();
    let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..]));
    let auth = jwks(serde_json::json!([{"kty": "EC", "crv": "P-256", "x": x, "y": y}])).unwrap();
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
