//! Why a token was refused.

use jsonwebtoken::errors::ErrorKind;

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
    pub(super) fn reason(self) -> &'static str {
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
    pub(super) fn problem(self) -> Option<&'static str> {
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
