//! The errors of token handling. Every message is a fixed text: nothing a client sent (and never
//! the token) ends up in a `Display`, a `Debug` or a metric label.

/// Why a token (or the request's credentials) was refused.
///
/// The messages are safe to log and to send back; [`category`](Self::category) is a bounded label
/// for metrics.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is longer than the verifier accepts; it was not parsed at all.
    #[error("token is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Not a compact JWS: not three base64url parts, or a header that is not the JSON it must be.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is refused: `none`, an HMAC algorithm, an unknown one, or one the issuer
    /// does not allow.
    #[error("token algorithm refused: {0}")]
    Algorithm(&'static str),
    /// The `iss` claim names no configured issuer.
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    /// The issuer has no key with the token's `kid` (or, for a token without `kid`, no key for its
    /// `alg`): the key may be newer than the key set the gateway holds.
    #[error("token key is not known: no key of the issuer has this kid")]
    UnknownKid,
    /// A key of the issuer has the token's `kid` but does not fit it (another `alg`), or the token
    /// names no `kid` and several keys could be meant.
    #[error("token key is not known: {0}")]
    UnknownKey(&'static str),
    /// The signature does not verify with the issuer's key.
    #[error("token signature is invalid")]
    Signature,
    /// `exp` is past, beyond the allowed clock skew.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future, beyond the allowed clock skew.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The verified `iss` is not exactly the issuer whose key verified it.
    #[error("token issuer does not match")]
    IssuerMismatch,
    /// The issuer requires an audience and the token's `aud` is missing or names none of them.
    #[error("token audience is not accepted")]
    Audience,
    /// A claim is missing or has the wrong type (`exp` as a string, scopes that are not strings…).
    #[error("token claims are invalid: {0}")]
    Claims(&'static str),
    /// A refresh token used as an access token, or the other way round.
    #[error("token is not {0} token")]
    WrongUse(&'static str),
    /// The request's `Authorization` header or `micro-token` cookie cannot be used.
    #[error("credentials refused: {0}")]
    Credentials(&'static str),
    /// Signing a token failed.
    #[error("token signing failed")]
    Signing,
}

impl TokenError {
    /// A bounded label for metrics and logs: one of `too_large`, `malformed`, `algorithm`,
    /// `issuer`, `key`, `signature`, `expired`, `not_yet_valid`, `audience`, `claims`,
    /// `token_use`, `credentials`, `signing`.
    pub fn category(&self) -> &'static str {
        match self {
            TokenError::TooLarge { .. } => "too_large",
            TokenError::Malformed(_) => "malformed",
            TokenError::Algorithm(_) => "algorithm",
            TokenError::UnknownIssuer | TokenError::IssuerMismatch => "issuer",
            TokenError::UnknownKey(_) | TokenError::UnknownKid => "key",
            TokenError::Signature => "signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Audience => "audience",
            TokenError::Claims(_) => "claims",
            TokenError::WrongUse(_) => "token_use",
            TokenError::Credentials(_) => "credentials",
            TokenError::Signing => "signing",
        }
    }
}

/// Why a key (a JWK, a key set, a signing key) cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not valid JSON, not an object, a field of the wrong type or a bad base64url value.
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    /// A `kty` other than `RSA`, `EC` and `OKP`.
    #[error("unsupported key type")]
    UnsupportedKeyType,
    /// A symmetric (`oct`) key: HMAC is never accepted.
    #[error("symmetric keys are never accepted")]
    Symmetric,
    /// An `alg` that is not one of [`Alg`](super::Alg), or that does not fit the key type.
    #[error("unsupported or unfitting algorithm")]
    UnsupportedAlgorithm,
    /// A curve other than P-256, P-384 (EC) and Ed25519 (OKP).
    #[error("unsupported curve")]
    UnsupportedCurve,
    /// `use` is not `sig`, or `key_ops` lacks `verify`.
    #[error("key is not for verifying signatures")]
    NotForSignatures,
    /// The JWK carries private key material (`d`); a key set must only publish public keys.
    #[error("key carries private key material")]
    PrivateKey,
    /// The key material is not a valid key (too short an RSA modulus, a point not on the curve…).
    #[error("invalid key: {0}")]
    Invalid(&'static str),
    /// The key set has no key the gateway can use.
    #[error("the key set has no usable key")]
    NoUsableKeys,
    /// Generating a key failed.
    #[error("key generation failed")]
    Generate,
}
