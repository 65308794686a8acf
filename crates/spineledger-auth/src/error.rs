//! Everything authentication can fail with.

use std::path::PathBuf;

/// Why a caller is not let in, or why the keys could not be loaded.
///
/// Request errors carry no token content: a message may be shown to the caller and
/// logged, and a token is a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer …` metadata.
    #[error("this call needs an `authorization: Bearer <token>` header")]
    MissingToken,
    /// Not a compact JWS, or its header or claims do not parse.
    #[error("the bearer token is not a well-formed JWT: {0}")]
    Malformed(String),
    /// Signed with an algorithm the service does not accept (HS*, none, …).
    #[error(
        "the bearer token's algorithm {0} is not accepted (EdDSA, ES256, ES384, RS256-512, PS256-512 are)"
    )]
    UnsupportedAlgorithm(String),
    /// No trusted key has the token's `kid` (or, without one, its algorithm).
    #[error("the bearer token is signed by a key the service does not trust")]
    UnknownKey,
    /// The signature does not verify with the trusted key.
    #[error("the bearer token's signature does not verify")]
    BadSignature,
    /// Past `exp` (beyond the clock leeway).
    #[error("the bearer token has expired")]
    Expired,
    /// Before `nbf` (beyond the clock leeway).
    #[error("the bearer token is not valid yet")]
    NotYetValid,
    /// `iss` is not the issuer the signing key belongs to.
    #[error("the bearer token's issuer is not the one its signing key belongs to")]
    WrongIssuer,
    /// `aud` does not name this service.
    #[error("the bearer token is meant for another audience")]
    WrongAudience,
    /// A required registered claim is absent.
    #[error("the bearer token lacks the {0} claim")]
    MissingClaim(String),
    /// A verified token whose spineledger claims grant nothing usable.
    #[error("the token's claims cannot be used: {0}")]
    UnusableClaims(String),
    /// The token is valid but its role may not call this RPC.
    #[error("the {role} role may not call {rpc}")]
    RoleNotAllowed {
        /// The token's role.
        role: crate::Role,
        /// The RPC path.
        rpc: String,
    },
    /// The RPC is not in the role table: nobody may call it.
    #[error("{0} is not open to any role")]
    Unlisted(String),
    /// A key file (JWKS or the development key) cannot be read or used.
    #[error("cannot use the key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key set or signing key given in memory is not usable.
    #[error("unusable key: {0}")]
    Key(String),
}

impl AuthError {
    /// Whether the credentials themselves failed (UNAUTHENTICATED: try another token), as
    /// opposed to valid credentials that do not permit the call (PERMISSION_DENIED).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(
            self,
            Self::UnusableClaims(_) | Self::RoleNotAllowed { .. } | Self::Unlisted(_)
        )
    }

    /// The `ErrorInfo` reason (UPPER_SNAKE) a client can act on.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "TOKEN_MISSING",
            Self::Malformed(_) => "TOKEN_MALFORMED",
            Self::UnsupportedAlgorithm(_) => "TOKEN_ALGORITHM_NOT_ACCEPTED",
            Self::UnknownKey => "TOKEN_KEY_UNKNOWN",
            Self::BadSignature => "TOKEN_SIGNATURE_INVALID",
            Self::Expired => "TOKEN_EXPIRED",
            Self::NotYetValid => "TOKEN_NOT_YET_VALID",
            Self::WrongIssuer => "TOKEN_ISSUER_INVALID",
            Self::WrongAudience => "TOKEN_AUDIENCE_INVALID",
            Self::MissingClaim(_) => "TOKEN_CLAIM_MISSING",
            Self::UnusableClaims(_) => "TOKEN_CLAIMS_UNUSABLE",
            Self::RoleNotAllowed { .. } | Self::Unlisted(_) => "ROLE_NOT_ALLOWED",
            Self::KeyFile { .. } | Self::Key(_) => "KEYS_UNAVAILABLE",
        }
    }
}
