//! Token verification and signing (docs/auth.md).
//!
//! - [`extract`] finds the request's token: `Authorization: Bearer …` or the `micro-token` cookie.
//! - [`Verifier`] checks it against the trusted [`Issuer`]s: per-issuer algorithm allow-list
//!   (asymmetric only: [`Alg`] cannot name `none` or HMAC), key by `kid`, signature, exact `iss`,
//!   `exp`/`nbf` with a bounded clock skew, `aud` when configured, and `token_use`; the result is a
//!   [`Verified`] identity with the tenant that vouches for it. Verified tokens are cached by
//!   their SHA-256 until they expire, in a [`TokenCache`] that successive verifiers share; an
//!   entry counts only while the key that verified it is still trusted.
//! - [`PublicKey`]s come from JWKs ([`parse_jwks`]); the platform signs its own tokens with
//!   ES256 [`SigningKey`]s and publishes their [`PublicKey::to_jwk`].
//!
//! Signatures are checked with aws-lc-rs, the backend `jsonwebtoken` uses, but with each key parsed
//! once rather than on every token; the claims are read and checked here, strictly, against the
//! caller's clock. Platform tokens are signed with `jsonwebtoken`.
//!
//! Tokens are secrets: nothing here logs them, and no error, `Debug` or metric label shows one.

mod claims;
mod error;
mod extract;
mod keys;
mod verifier;

#[cfg(test)]
mod tests;

pub use claims::{Audience, Claims, TokenUse, Verified};

/// The `aud` of a platform refresh token: this prefix and the account's secret version, so that a
/// changed secret ends every refresh token issued for the old one.
pub const REFRESH_AUDIENCE: &str = "microplane-refresh:";
pub use error::{KeyError, TokenError};
pub use extract::{TOKEN_COOKIE, extract};
pub use keys::{Alg, PublicKey, SigningKey, parse_jwks};
pub use verifier::{
    DEFAULT_SCOPES_CLAIM, Issuer, MAX_CLOCK_SKEW_SECS, MAX_TOKEN_BYTES_LIMIT, TokenCache, Verifier, VerifierSettings,
    unverified_issuer,
};
