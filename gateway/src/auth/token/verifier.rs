//! Token verification against the trusted issuers, with a cache of verified tokens.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny};

use super::claims::{PayloadSeed, UnverifiedIssuer};
use super::keys::Fingerprint;
use super::{Alg, PublicKey, TokenError, TokenUse, Verified};

/// The default scopes claim.
pub const DEFAULT_SCOPES_CLAIM: &str = "scopes";
/// The largest clock skew a [`Verifier`] allows, whatever its settings say: 5 minutes.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// The largest token a [`Verifier`] can be set to accept: 64 KiB.
pub const MAX_TOKEN_BYTES_LIMIT: usize = 64 * 1024;

/// An issuer whose tokens the gateway accepts, and the tenant it vouches for: the tenant's own
/// platform issuer or one of its configured external issuers.
#[derive(Clone, Debug)]
pub struct Issuer {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// The tenant its tokens belong to.
    pub tenant: String,
    /// The algorithms its tokens may use; empty means the algorithms of its keys.
    pub algorithms: Vec<Alg>,
    /// Accepted audiences; a token must name one of them in `aud`. Empty: `aud` is not checked.
    pub audiences: Vec<String>,
    /// The claim holding the scopes, as a space-separated string (OAuth `scope`) or an array of
    /// strings (`scp`, `scopes`). `None`: `scopes`.
    pub scopes_claim: Option<String>,
    /// Its verification keys.
    pub keys: Vec<PublicKey>,
}

impl Issuer {
    /// An issuer with the algorithms of its keys, no audience check and the `scopes` claim.
    pub fn new(issuer: impl Into<String>, tenant: impl Into<String>, keys: Vec<PublicKey>) -> Self {
        Issuer {
            issuer: issuer.into(),
            tenant: tenant.into(),
            algorithms: Vec::new(),
            audiences: Vec::new(),
            scopes_claim: None,
            keys,
        }
    }
}

/// Limits of a [`Verifier`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierSettings {
    /// Clock skew allowed on `exp` and `nbf`, in seconds; capped at [`MAX_CLOCK_SKEW_SECS`].
    /// Default 60.
    pub clock_skew_secs: u64,
    /// Longer tokens are refused before any parsing; capped at [`MAX_TOKEN_BYTES_LIMIT`].
    /// Default 8 KiB.
    pub max_token_bytes: usize,
    /// How many verified tokens are remembered; 0 turns the cache off. Default 10 000.
    pub cache_capacity: usize,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        VerifierSettings {
            clock_skew_secs: 60,
            max_token_bytes: 8 * 1024,
            cache_capacity: 10_000,
        }
    }
}

/// An [`Issuer`] prepared for verification.
struct Trusted {
    issuer: String,
    tenant: String,
    algorithms: Vec<Alg>,
    audiences: Vec<String>,
    scopes_claim: String,
    keys: Vec<TrustedKey>,
}

/// A key of a [`Trusted`] issuer, with what binds a verification to it.
struct TrustedKey {
    key: PublicKey,
    /// [`PublicKey::fingerprint`], computed once.
    fingerprint: [u8; 32],
    /// SHA-256 over the issuer's settings (issuer, tenant, algorithms, audiences, scopes claim) and
    /// the key's fingerprint: a cached verification counts only while a verifier trusts exactly
    /// this issuer with exactly this key.
    binding: [u8; 32],
}

/// A verified token as the cache keeps it.
struct Cached {
    verified: Verified,
    not_before: i64,
    /// The [`TrustedKey::binding`] of the key that verified it.
    binding: [u8; 32],
}

/// The cache of verified tokens, by the token's SHA-256 (the token itself is never stored).
///
/// It outlives the [`Verifier`]s that use it: the gateway builds a new verifier whenever a snapshot
/// or an external key set changes and hands it the same cache, so a change of rules or routes does
/// not make every token pay a signature check again. An entry remembers the key that verified it
/// and counts only while the verifier at hand trusts that very key with the same issuer settings:
/// a key removed from a key set (or an issuer removed or reconfigured) stops verifying at once, its
/// cached tokens included. Cloning shares the cache.
#[derive(Clone, Default)]
pub struct TokenCache {
    inner: Option<Arc<quick_cache::sync::Cache<[u8; 32], Arc<Cached>>>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache").field("len", &self.len()).finish()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 is no cache at all.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: (capacity > 0).then(|| Arc::new(quick_cache::sync::Cache::new(capacity))),
        }
    }

    /// How many verified tokens it holds (some may no longer count: see [`TokenCache`]).
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn binding(
    issuer: &str,
    tenant: &str,
    algorithms: &[Alg],
    audiences: &[String],
    scopes_claim: &str,
    key: &PublicKey,
) -> [u8; 32] {
    let mut h = Fingerprint::new();
    h.field(issuer.as_bytes());
    h.field(tenant.as_bytes());
    h.field(&(algorithms.len() as u64).to_be_bytes());
    for alg in algorithms {
        h.field(alg.name().as_bytes());
    }
    h.field(&(audiences.len() as u64).to_be_bytes());
    for aud in audiences {
        h.field(aud.as_bytes());
    }
    h.field(scopes_claim.as_bytes());
    h.field(&key.fingerprint());
    h.finish()
}

/// The header fields verification reads.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// Verifies bearer tokens for a fixed set of issuers (docs/auth.md).
///
/// Immutable once built: when issuers or keys change, build a new one, with the same
/// [`TokenCache`] ([`Verifier::with_cache`]) or a new one; either way a removed key stops verifying
/// at once, its cached tokens included.
///
/// What `verify` checks, in order:
/// 1. the size limit, before anything else;
/// 2. the cache: a token verified before (looked up by its SHA-256; the token itself is never
///    stored) is accepted again while `now < exp` (no skew on cached entries), if this verifier
///    still trusts the key that verified it, with the same issuer settings;
/// 3. three non-empty base64url parts; a JSON header whose `alg` is not `none`, not `HS*`, one of
///    [`Alg`], and without `crit` (no extension is understood);
/// 4. the *unverified* `iss` only chooses the candidate issuers; the `alg` must be in one's
///    allow-list; the key is the one with the token's `kid` and that `alg` (a token without `kid`
///    uses the only key of that `alg`, if there is exactly one); no such key is
///    [`TokenError::UnknownKid`], the sign that a key set may have rotated;
/// 5. the signature, with that one key and its algorithm (aws-lc, the key parsed once when it was
///    built; ECDSA signatures in the fixed `r || s` form);
/// 6. only then the payload, read strictly: each claim at most once; `iss`, `sub` (non-empty) and
///    `exp` required; `exp`/`nbf` numbers (a string is refused); `aud` and the scopes claim a
///    string or an array of strings. `iss` must equal the issuer exactly; when the issuer has
///    audiences, `aud` must name one (a token without `aud` is refused); `exp` and `nbf` are
///    checked against `now` with the bounded skew (expired when `now >= exp + skew`); `token_use`
///    must be the expected one (a token without `token_use`, from an external issuer, is an
///    access token).
///
/// Several issuers may share one `iss`: two tenants trusting the same external issuer, each with
/// its own policy (audiences, algorithms, scopes claim) and its own key source. Each is a candidate
/// of its own, tried in turn — the called tenant's first ([`Verifier::verify_for`]), then the
/// others in the order given — and the token belongs to the first whose key, signature and policy
/// all accept it: the called tenant's account when its own policy accepts the token, else a
/// foreign account of the tenant whose policy does (docs/auth.md#foreign-accounts). One tenant's
/// policy or keys never decide for another.
pub struct Verifier {
    issuers: HashMap<String, Vec<Trusted>>,
    /// Every [`TrustedKey::binding`]: what a cache hit must name.
    bindings: HashSet<[u8; 32]>,
    skew: i64,
    max_token_bytes: usize,
    cache: TokenCache,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .field("skew", &self.skew)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("cache_len", &self.cache.len())
            .finish()
    }
}

fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// Refuses `none` and HMAC outright; anything else must be one of [`Alg`].
fn header_alg(name: &str) -> Result<Alg, TokenError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(TokenError::Algorithm("alg none is never accepted"));
    }
    if name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("hs")) {
        return Err(TokenError::Algorithm("HMAC algorithms are never accepted"));
    }
    Alg::from_name(name).ok_or(TokenError::Algorithm("unsupported alg"))
}

impl Verifier {
    /// A verifier for `issuers`, with a cache of its own (`settings.cache_capacity`).
    ///
    /// An issuer's keys that its allow-list excludes are dropped, and so are keys whose `alg` no
    /// longer fits their material; a later key with the same `kid` and `alg` is dropped as well.
    pub fn new(issuers: Vec<Issuer>, settings: VerifierSettings) -> Self {
        let cache = TokenCache::new(settings.cache_capacity);
        Self::with_cache(issuers, settings, cache)
    }

    /// A verifier for `issuers` that shares `cache` (`settings.cache_capacity` is not used): the
    /// tokens it holds count again only where this verifier trusts the key that verified them.
    pub fn with_cache(issuers: Vec<Issuer>, settings: VerifierSettings, cache: TokenCache) -> Self {
        let skew = settings.clock_skew_secs.min(MAX_CLOCK_SKEW_SECS);
        let mut by_iss: HashMap<String, Vec<Trusted>> = HashMap::new();
        let mut bindings = HashSet::new();
        for issuer in issuers {
            let algorithms: Vec<Alg> = if issuer.algorithms.is_empty() {
                let mut algs: Vec<Alg> = issuer.keys.iter().map(|k| k.alg).collect();
                algs.dedup();
                algs
            } else {
                issuer.algorithms.clone()
            };
            let scopes_claim = issuer
                .scopes_claim
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| DEFAULT_SCOPES_CLAIM.to_owned());
            let mut keys: Vec<TrustedKey> = Vec::with_capacity(issuer.keys.len());
            for key in issuer.keys {
                let usable = key.consistent() && algorithms.contains(&key.alg);
                let duplicate = keys.iter().any(|k| k.key.kid == key.kid && k.key.alg == key.alg);
                if !usable || duplicate {
                    tracing::debug!(issuer = %issuer.issuer, kid = %key.kid, "issuer key not used");
                    continue;
                }
                let binding = binding(
                    &issuer.issuer,
                    &issuer.tenant,
                    &algorithms,
                    &issuer.audiences,
                    &scopes_claim,
                    &key,
                );
                bindings.insert(binding);
                keys.push(TrustedKey {
                    fingerprint: key.fingerprint(),
                    key,
                    binding,
                });
            }
            if keys.is_empty() {
                tracing::warn!(issuer = %issuer.issuer, tenant = %issuer.tenant, "issuer has no usable key");
            }
            let trusted = Trusted {
                issuer: issuer.issuer.clone(),
                tenant: issuer.tenant,
                algorithms,
                audiences: issuer.audiences,
                scopes_claim,
                keys,
            };
            by_iss.entry(issuer.issuer).or_default().push(trusted);
        }
        Verifier {
            issuers: by_iss,
            bindings,
            skew: i64::try_from(skew).unwrap_or(0),
            max_token_bytes: settings.max_token_bytes.min(MAX_TOKEN_BYTES_LIMIT),
            cache,
        }
    }

    /// Verifies an access token at `now_unix` (seconds since the epoch), no tenant preferred.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Verified, TokenError> {
        self.verify_for(token, now_unix, TokenUse::Access, None)
    }

    /// Verifies a refresh token (`token_use: "refresh"`) at `now_unix`, no tenant preferred.
    pub fn verify_refresh(&self, token: &str, now_unix: i64) -> Result<Verified, TokenError> {
        self.verify_for(token, now_unix, TokenUse::Refresh, None)
    }

    /// Verifies a token of the given use at `now_unix` for a call to `tenant`: where several
    /// issuers share the token's `iss`, `tenant`'s own comes first. See [`Verifier`] for the rules.
    pub fn verify_for(
        &self,
        token: &str,
        now_unix: i64,
        expected: TokenUse,
        tenant: Option<&str>,
    ) -> Result<Verified, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge {
                limit: self.max_token_bytes,
            });
        }
        let Some(cache) = &self.cache.inner else {
            return self
                .verify_uncached(token, now_unix, expected, tenant)
                .map(|c| c.verified);
        };
        // Which tenant was preferred is part of the key: the same token may be one tenant's own
        // account and another's foreign one.
        let digest = cache_key(token, tenant);
        if let Some(hit) = cache.get(&digest)
            && now_unix < hit.verified.expires_at
            && now_unix.saturating_add(self.skew) >= hit.not_before
            && hit.verified.token_use == expected.as_str()
            && self.bindings.contains(&hit.binding)
        {
            return Ok(hit.verified.clone());
        }
        let cached = self.verify_uncached(token, now_unix, expected, tenant)?;
        let verified = cached.verified.clone();
        if now_unix < verified.expires_at {
            cache.insert(digest, Arc::new(cached));
        }
        Ok(verified)
    }

    /// How many verified tokens the cache holds.
    pub fn cached_len(&self) -> usize {
        self.cache.len()
    }

    /// The cache of verified tokens, to hand to the verifier that replaces this one.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    fn verify_uncached(
        &self,
        token: &str,
        now: i64,
        expected: TokenUse,
        tenant: Option<&str>,
    ) -> Result<Cached, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("a token has three dot-separated parts"));
        };
        if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
            return Err(TokenError::Malformed("a token part is empty"));
        }
        let header = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
        let header: RawHeader = serde_json::from_slice(&header)
            .map_err(|_| TokenError::Malformed("the header is not a JSON object with a string alg"))?;
        let alg = header_alg(&header.alg)?;
        if header.crit.is_some() {
            return Err(TokenError::Malformed("critical header extensions are not supported"));
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenError::Malformed("the payload is not base64url"))?;
        // Unverified: only used to choose the candidate issuers and their keys.
        let iss = serde_json::from_slice::<UnverifiedIssuer>(&payload)
            .map_err(|_| TokenError::Claims("iss is required and must be a string"))?
            .iss;
        let candidates = self.issuers.get(&iss).ok_or(TokenError::UnknownIssuer)?;
        if !candidates.iter().any(|t| t.algorithms.contains(&alg)) {
            return Err(TokenError::Algorithm("alg is not allowed for this issuer"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
        // The signed message is the token up to the second dot.
        let message = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];

        // The called tenant's issuer first, then the others in order.
        let preferred = candidates.iter().filter(|t| tenant == Some(t.tenant.as_str()));
        let others = candidates.iter().filter(|t| tenant != Some(t.tenant.as_str()));
        // The first refusal is the answer when no candidate accepts; a key's signature check is
        // done once, however many tenants trust that key.
        let mut first_error = None;
        let mut checked: Vec<([u8; 32], bool)> = Vec::new();
        for trusted in preferred.chain(others).filter(|t| t.algorithms.contains(&alg)) {
            let key = match select_key(trusted, alg, header.kid.as_deref()) {
                Ok(k) => k,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let valid = match checked.iter().find(|(f, _)| *f == key.fingerprint) {
                Some((_, v)) => *v,
                None => {
                    let v = key.key.verify_signature(message, &signature);
                    checked.push((key.fingerprint, v));
                    v
                }
            };
            if !valid {
                first_error.get_or_insert(TokenError::Signature);
                continue;
            }
            match check_claims(trusted, key, &payload, now, self.skew, expected) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(TokenError::UnknownKid))
    }
}

/// The cache key of `token` verified with `tenant` preferred.
fn cache_key(token: &str, tenant: Option<&str>) -> [u8; 32] {
    match tenant {
        None => sha256(token),
        Some(t) => {
            let mut ctx = digest::Context::new(&digest::SHA256);
            ctx.update(&(t.len() as u64).to_be_bytes());
            ctx.update(t.as_bytes());
            ctx.update(token.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            out
        }
    }
}

/// The payload of a token whose signature `key` of `trusted` verified, read strictly and checked
/// against `trusted`'s policy.
fn check_claims(
    trusted: &Trusted,
    key: &TrustedKey,
    payload: &[u8],
    now: i64,
    skew: i64,
    expected: TokenUse,
) -> Result<Cached, TokenError> {
    let problem = Cell::new("the claims are not a JSON object");
    let mut de = serde_json::Deserializer::from_slice(payload);
    let claims = PayloadSeed {
        scopes_claim: &trusted.scopes_claim,
        problem: &problem,
    }
    .deserialize(&mut de)
    .and_then(|claims| de.end().map(|()| claims))
    .map_err(|_| TokenError::Claims(problem.get()))?;

    if claims.iss != trusted.issuer {
        return Err(TokenError::IssuerMismatch);
    }
    if !trusted.audiences.is_empty() {
        let named = claims.aud.as_deref().unwrap_or_default();
        if !named.iter().any(|aud| trusted.audiences.contains(aud)) {
            return Err(TokenError::Audience);
        }
    }
    if claims.sub.is_empty() {
        return Err(TokenError::Claims("sub is empty"));
    }
    if now >= claims.exp.saturating_add(skew) {
        return Err(TokenError::Expired);
    }
    let not_before = claims.nbf.unwrap_or(i64::MIN);
    if not_before > now.saturating_add(skew) {
        return Err(TokenError::NotYetValid);
    }
    let token_use = claims.token_use.unwrap_or_else(|| TokenUse::Access.as_str().to_owned());
    if token_use != expected.as_str() {
        return Err(TokenError::WrongUse(match expected {
            TokenUse::Access => "an access",
            TokenUse::Refresh => "a refresh",
        }));
    }
    Ok(Cached {
        verified: Verified {
            account_id: claims.sub,
            account_type: claims.account_type.unwrap_or_else(|| "user".to_owned()),
            scopes: claims.scopes,
            tenant: trusted.tenant.clone(),
            issuer: claims.iss,
            expires_at: claims.exp,
            token_use,
            audiences: claims.aud.clone().unwrap_or_default(),
        },
        not_before,
        binding: key.binding,
    })
}

/// The `iss` a token claims, read without verifying anything: only to tell which issuer's keys a
/// token refused with [`TokenError::UnknownKid`] asked for. `None` when the token is not a JWT
/// with a string `iss`.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<UnverifiedIssuer>(&payload).ok().map(|u| u.iss)
}

/// The key of `trusted` for a token's `alg` and `kid` (a token without `kid` uses the only key of
/// that `alg`, if there is exactly one).
fn select_key<'a>(trusted: &'a Trusted, alg: Alg, kid: Option<&str>) -> Result<&'a TrustedKey, TokenError> {
    match kid {
        Some(kid) => {
            let mut other_alg = false;
            for key in &trusted.keys {
                if key.key.kid == kid {
                    if key.key.alg == alg {
                        return Ok(key);
                    }
                    other_alg = true;
                }
            }
            Err(if other_alg {
                TokenError::UnknownKey("the key with this kid is for another alg")
            } else {
                TokenError::UnknownKid
            })
        }
        None => {
            let mut of_alg = trusted.keys.iter().filter(|k| k.key.alg == alg);
            match (of_alg.next(), of_alg.next()) {
                (Some(key), None) => Ok(key),
                (Some(_), Some(_)) => Err(TokenError::UnknownKey(
                    "no kid, and the issuer has several keys for the alg",
                )),
                (None, _) => Err(TokenError::UnknownKid),
            }
        }
    }
}
