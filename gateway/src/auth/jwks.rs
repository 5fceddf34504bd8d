//! External issuers' key sets: fetched from `jwksUri` with timeouts, cached, refreshed in the
//! background (stale-while-revalidate: the cached keys keep verifying while a refresh runs or
//! fails), one task per issuer (so one fetch in flight per issuer). A key set that cannot be fetched
//! is never replaced by anything: the last good one stays, or, before any success, the issuer has
//! no keys and its tokens are refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use microplane_sync::v1;
use tokio::sync::Notify;

use super::token::{PublicKey, parse_jwks};

/// How often a key set is fetched again after a success.
pub const REFRESH: Duration = Duration::from_secs(300);
/// Time limit of one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 << 10;

/// Retry delay after `n` consecutive failures: 1 s doubling to 60 s.
pub fn retry_after(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The key sets of every external issuer the snapshot names.
pub struct JwksCache {
    keys: ArcSwap<HashMap<String, Vec<PublicKey>>>,
    tasks: Mutex<HashMap<String, (String, tokio::task::JoinHandle<()>)>>,
    changed: Arc<Notify>,
    client: reqwest::Client,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("issuers", &self.keys.load().len())
            .finish()
    }
}

impl JwksCache {
    /// An empty cache that wakes `changed` whenever a key set changes.
    pub fn new(changed: Arc<Notify>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            keys: ArcSwap::from_pointee(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            changed,
            client,
        }
    }

    /// Keys by issuer.
    pub fn keys(&self) -> Arc<HashMap<String, Vec<PublicKey>>> {
        self.keys.load_full()
    }

    fn set(keys: &ArcSwap<HashMap<String, Vec<PublicKey>>>, issuer: &str, set: Option<Vec<PublicKey>>) {
        keys.rcu(|cur| {
            let mut next = HashMap::clone(cur);
            match &set {
                Some(k) => {
                    next.insert(issuer.to_string(), k.clone());
                }
                None => {
                    next.remove(issuer);
                }
            }
            next
        });
    }

    /// Follows the external issuers of a snapshot: inline key sets are parsed at once, fetched ones
    /// get a background task; issuers no longer named are dropped. Returns whether keys changed now.
    pub fn follow(self: &Arc<Self>, issuers: &[&v1::ExternalIssuer]) -> bool {
        let mut changed = false;
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let wanted: HashMap<&str, &v1::ExternalIssuer> = issuers.iter().map(|i| (i.issuer.as_str(), *i)).collect();
        // Stop what is gone or changed its URI.
        let stale: Vec<String> = tasks
            .iter()
            .filter(|(iss, (uri, _))| wanted.get(iss.as_str()).is_none_or(|w| &w.jwks_uri != uri))
            .map(|(iss, _)| iss.clone())
            .collect();
        for iss in stale {
            if let Some((_, h)) = tasks.remove(&iss) {
                h.abort();
            }
        }
        for (iss, e) in &wanted {
            if !e.jwks.is_empty() {
                let parsed = parse_jwks(e.jwks.as_bytes()).ok();
                let now = self.keys.load().get(*iss).cloned();
                if parsed.is_some() && parsed != now {
                    Self::set(&self.keys, iss, parsed);
                    changed = true;
                }
            } else if !e.jwks_uri.is_empty() && !tasks.contains_key(*iss) {
                let this = self.clone();
                let (issuer, uri) = (iss.to_string(), e.jwks_uri.clone());
                let h = tokio::spawn(async move { this.refresh_loop(issuer, uri).await });
                tasks.insert(iss.to_string(), (e.jwks_uri.clone(), h));
            }
        }
        // Forget keys of issuers no longer named.
        let known: Vec<String> = self.keys.load().keys().cloned().collect();
        for iss in known {
            if !wanted.contains_key(iss.as_str()) {
                Self::set(&self.keys, &iss, None);
                changed = true;
            }
        }
        changed
    }

    async fn refresh_loop(self: Arc<Self>, issuer: String, uri: String) {
        let mut failures = 0u32;
        loop {
            match self.fetch(&uri).await {
                Ok(keys) => {
                    failures = 0;
                    if self.keys.load().get(&issuer) != Some(&keys) {
                        tracing::info!(%issuer, keys = keys.len(), "external issuer keys updated");
                        Self::set(&self.keys, &issuer, Some(keys));
                        self.changed.notify_one();
                    }
                    tokio::time::sleep(REFRESH).await;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%issuer, error = %e, "fetching the issuer's keys failed; keeping the last good ones");
                    tokio::time::sleep(retry_after(failures)).await;
                }
            }
        }
    }

    async fn fetch(&self, uri: &str) -> Result<Vec<PublicKey>, String> {
        let resp = self.client.get(uri).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        if resp.content_length().is_some_and(|l| l > MAX_JWKS_BYTES as u64) {
            return Err("key set too large".into());
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("key set too large".into());
        }
        parse_jwks(&body).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_are_bounded() {
        assert_eq!(retry_after(1), Duration::from_secs(1));
        assert_eq!(retry_after(3), Duration::from_secs(4));
        assert_eq!(retry_after(50), Duration::from_secs(60));
    }
}
