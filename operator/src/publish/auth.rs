//! Who may follow the sync stream. Two modes:
//!
//! - **static token**: every gateway presents the token of a shared file (host-process setups);
//!   compared in constant time;
//! - **TokenReview**: a gateway presents its projected ServiceAccount token (audience
//!   `--sync-audience`, rotated by the kubelet); the operator asks the API server to review it
//!   (`authentication.k8s.io/v1`, the audience required) and admits only the configured
//!   ServiceAccounts. No Secret to create or rotate.
//!
//! Successful reviews are cached briefly (keyed by a SHA-256 of the token, bounded) so that a
//! reconnect storm does not become a review storm. Tokens never reach logs.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::Client;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a successful review is trusted.
pub const REVIEW_TTL: Duration = Duration::from_secs(60);
/// Most reviews cached at once.
pub const REVIEW_CACHE_MAX: usize = 1024;

/// Why a [`TokenReviewer`] cannot be made from the flags.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewerError {
    /// An allowed entry is neither `namespace/name` nor a ServiceAccount's username.
    #[error("not a ServiceAccount (namespace/name): {0}")]
    NotServiceAccount(String),
    /// No ServiceAccount is allowed.
    #[error("no ServiceAccount is allowed to follow the sync stream")]
    NoneAllowed,
    /// The audience is empty.
    #[error("the sync audience is empty")]
    EmptyAudience,
}

/// Why a caller is refused. Never carries the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No bearer token.
    #[error("no bearer token")]
    Missing,
    /// Not the shared token.
    #[error("wrong sync token")]
    WrongToken,
    /// The API server did not authenticate the token (or not for the sync audience).
    #[error("token not authenticated: {0}")]
    NotAuthenticated(String),
    /// Authenticated, but not an admitted ServiceAccount.
    #[error("{0} may not follow the sync stream")]
    NotAllowed(String),
    /// The review itself failed (API server away, RBAC).
    #[error("token review failed: {0}")]
    ReviewFailed(String),
}

/// How callers authenticate.
pub enum SyncAuth {
    /// A shared token.
    Static(String),
    /// TokenReview of projected ServiceAccount tokens.
    Review(TokenReviewer),
}

impl SyncAuth {
    /// Checks a presented bearer token; returns who it is (`gateway` for the shared token).
    pub async fn check(&self, presented: &str) -> Result<String, Refused> {
        if presented.is_empty() {
            return Err(Refused::Missing);
        }
        match self {
            Self::Static(token) => {
                if !token.is_empty() && bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
                    Ok("gateway".into())
                } else {
                    Err(Refused::WrongToken)
                }
            }
            Self::Review(r) => r.check(presented).await,
        }
    }
}

/// `ns/name` (or the full `system:serviceaccount:ns:name`) as the username the API server gives a
/// ServiceAccount.
pub fn service_account_user(s: &str) -> Option<String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("system:serviceaccount:") {
        let (ns, name) = rest.split_once(':')?;
        return (!ns.is_empty() && !name.is_empty()).then(|| s.to_string());
    }
    let (ns, name) = s.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| format!("system:serviceaccount:{ns}:{name}"))
}

/// Whether a review's status admits the caller: authenticated, for `audience`, as one of
/// `allowed`. Returns the username.
pub fn admit(status: &TokenReviewStatus, audience: &str, allowed: &HashSet<String>) -> Result<String, Refused> {
    if status.authenticated != Some(true) {
        return Err(Refused::NotAuthenticated(
            status.error.clone().unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    // The API server echoes the audiences the token is valid for among those asked; none means it
    // was not checked against ours.
    if !status.audiences.iter().flatten().any(|a| a == audience) {
        return Err(Refused::NotAuthenticated(format!(
            "token is not for audience {audience}"
        )));
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.clone())
        .unwrap_or_default();
    if allowed.contains(&user) {
        Ok(user)
    } else {
        Err(Refused::NotAllowed(user))
    }
}

/// A bounded cache of successful reviews: SHA-256 of the token → (user, valid until).
#[derive(Default)]
pub struct ReviewCache {
    entries: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl ReviewCache {
    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The cached user of `token`, if reviewed less than the TTL ago.
    pub fn get(&self, token: &str, now: Instant) -> Option<String> {
        let m = self.entries.lock().ok()?;
        m.get(&Self::key(token))
            .filter(|(_, until)| *until > now)
            .map(|(u, _)| u.clone())
    }

    /// Remembers a successful review until `now + ttl`; when full, expired entries go first, then
    /// everything (a burst of new tokens is rare: one per gateway and kubelet rotation).
    pub fn put(&self, token: &str, user: String, now: Instant, ttl: Duration) {
        let Ok(mut m) = self.entries.lock() else { return };
        if m.len() >= REVIEW_CACHE_MAX {
            m.retain(|_, (_, until)| *until > now);
            if m.len() >= REVIEW_CACHE_MAX {
                m.clear();
            }
        }
        m.insert(Self::key(token), (user, now + ttl));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |m| m.len())
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reviews tokens with the API server.
pub struct TokenReviewer {
    client: Client,
    audience: String,
    allowed: HashSet<String>,
    cache: ReviewCache,
}

impl TokenReviewer {
    /// A reviewer admitting `allowed` (`ns/name` or full usernames) for `audience`.
    pub fn new(client: Client, audience: String, allowed: &[String]) -> Result<Self, ReviewerError> {
        let allowed = allowed
            .iter()
            .map(|a| service_account_user(a).ok_or_else(|| ReviewerError::NotServiceAccount(a.clone())))
            .collect::<Result<HashSet<_>, _>>()?;
        if allowed.is_empty() {
            return Err(ReviewerError::NoneAllowed);
        }
        if audience.is_empty() {
            return Err(ReviewerError::EmptyAudience);
        }
        Ok(Self {
            client,
            audience,
            allowed,
            cache: ReviewCache::default(),
        })
    }

    async fn check(&self, token: &str) -> Result<String, Refused> {
        let now = Instant::now();
        if let Some(user) = self.cache.get(token, now) {
            return Ok(user);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refused::ReviewFailed(e.to_string()))?;
        let user = admit(&answer.status.unwrap_or_default(), &self.audience, &self.allowed)?;
        self.cache.put(token, user.clone(), now, REVIEW_TTL);
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn status(authenticated: bool, audiences: &[&str], user: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    #[test]
    fn service_account_names() {
        assert_eq!(
            service_account_user("microplane-system/microplane-gateway").as_deref(),
            Some("system:serviceaccount:microplane-system:microplane-gateway")
        );
        assert_eq!(
            service_account_user("system:serviceaccount:a:b").as_deref(),
            Some("system:serviceaccount:a:b")
        );
        for bad in ["", "a", "a/", "/b", "a/b/c", "system:serviceaccount:a"] {
            assert_eq!(service_account_user(bad), None, "{bad}");
        }
    }

    #[test]
    fn admission_table() {
        let gw = "system:serviceaccount:microplane-system:microplane-gateway";
        let allowed: HashSet<String> = [gw.to_string()].into();
        let aud = "microplane-sync";
        assert_eq!(admit(&status(true, &[aud], gw), aud, &allowed), Ok(gw.into()));
        assert!(matches!(
            admit(&status(false, &[aud], gw), aud, &allowed),
            Err(Refused::NotAuthenticated(_))
        ));
        // A token for another audience (e.g. the API server's own) is refused.
        assert!(matches!(
            admit(&status(true, &["https://kubernetes.default.svc"], gw), aud, &allowed),
            Err(Refused::NotAuthenticated(_))
        ));
        assert!(matches!(
            admit(&status(true, &[], gw), aud, &allowed),
            Err(Refused::NotAuthenticated(_))
        ));
        assert_eq!(
            admit(&status(true, &[aud], "system:serviceaccount:other:sa"), aud, &allowed),
            Err(Refused::NotAllowed("system:serviceaccount:other:sa".into()))
        );
    }

    #[test]
    fn cache_expires_and_is_bounded() {
        let c = ReviewCache::default();
        let t0 = Instant::now();
        c.put("tok", "u".into(), t0, Duration::from_secs(60));
        assert_eq!(c.get("tok", t0 + Duration::from_secs(59)).as_deref(), Some("u"));
        assert_eq!(c.get("tok", t0 + Duration::from_secs(61)), None);
        assert_eq!(c.get("other", t0), None);
        for i in 0..REVIEW_CACHE_MAX + 10 {
            c.put(&format!("t{i}"), "u".into(), t0, Duration::from_secs(60));
        }
        assert!(c.len() <= REVIEW_CACHE_MAX);
    }

    #[tokio::test]
    async fn static_token() {
        let auth = SyncAuth::Static("s3cret".into());
        assert_eq!(auth.check("s3cret").await, Ok("gateway".into()));
        assert_eq!(auth.check("nope").await, Err(Refused::WrongToken));
        assert_eq!(auth.check("").await, Err(Refused::Missing));
        // The refusal never carries what was presented.
        assert!(!Refused::WrongToken.to_string().contains("nope"));
    }
}
