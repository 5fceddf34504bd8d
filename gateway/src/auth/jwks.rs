//! External issuers' key sets, by their *source* ([`source_key`]): the `jwksUri` they are fetched
//! from, or the inline JWKS document itself. Keys are never looked up by `iss`: a tenant that names
//! another tenant's issuer with keys of its own (an inline set, another URI) gets those keys for
//! itself only, never for the other tenant (docs/security.md).
//!
//! Fetched sets are fetched with timeouts, cached, refreshed in the background
//! (stale-while-revalidate: the cached keys keep verifying while a refresh runs or fails), one task
//! per URI (so one fetch in flight per URI, shared by every tenant naming it). A key set that
//! cannot be fetched is never replaced by anything: the last good one stays, or, before any
//! success, the source has no keys and tokens needing them are refused.
//!
//! A token whose `kid` the cached set lacks may be signed by a key the issuer has just rotated in:
//! [`JwksCache::refresh_now`] asks that source's task to fetch at once and waits for it (at most
//! the fetch timeout). The task stays the only fetcher (single flight), and such refreshes are
//! rate-limited per source ([`ON_DEMAND_INTERVAL`]), so tokens with made-up kids cannot make the
//! gateway hammer the issuer: within the interval, a caller joins the refresh in flight or, when
//! it has completed, is answered from the keys it brought.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use microplane_wire::sync::v1;
use tokio::sync::{Notify, watch};

use super::token::{PublicKey, parse_jwks};

/// How often a key set is fetched again after a success.
pub(crate) const REFRESH: Duration = Duration::from_secs(300);
/// Time limit of one fetch, and of the wait for an on-demand refresh.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two on-demand refreshes of one fetched key set.
pub(crate) const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(10);
/// Largest JWKS document accepted.
pub(crate) const MAX_JWKS_BYTES: usize = 256 << 10;

/// Where an external issuer's keys come from, as [`JwksCache`] keys them: its inline JWKS document
/// (`inline:` and the document's SHA-256) when it has one, else its `jwksUri`.
pub(crate) fn source_key(e: &v1::ExternalIssuer) -> String {
    if e.jwks.is_empty() {
        e.jwks_uri.clone()
    } else {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, e.jwks.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("inline:{hex}")
    }
}

/// Retry delay after `n` consecutive failures: 1 s doubling to 60 s.
pub(crate) fn retry_after(n: u32) -> Duration {
    const RETRY: microplane_runtime::Backoff =
        microplane_runtime::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    RETRY.delay(n)
}

/// The timing of a [`JwksCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksSettings {
    /// Time between fetches after a success ([`REFRESH`]).
    pub refresh: Duration,
    /// Time limit of a fetch and of the wait for an on-demand refresh ([`FETCH_TIMEOUT`]).
    pub fetch_timeout: Duration,
    /// Least time between two on-demand refreshes of one source ([`ON_DEMAND_INTERVAL`]).
    pub on_demand_interval: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            refresh: REFRESH,
            fetch_timeout: FETCH_TIMEOUT,
            on_demand_interval: ON_DEMAND_INTERVAL,
        }
    }
}

/// Fetches of one key set so far: `started` counts those begun, `completed` those ended
/// (whether or not they brought keys). Fetches run one after another, so fetch `n` has ended once
/// `completed >= n`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    started: u64,
    completed: u64,
}

/// What the background task of one fetched key set shares with on-demand callers.
struct Refresher {
    uri: String,
    /// The `iss` of the (first) issuer naming it, for the logs.
    issuer: String,
    /// The number of the fetch on-demand callers wait for: when it is past the fetches started,
    /// the task starts the next one at once instead of at its scheduled time.
    wanted: watch::Sender<u64>,
    progress: watch::Sender<Progress>,
    /// When the last on-demand refresh was asked for, and the fetch that answers it.
    on_demand: Mutex<Option<(Instant, u64)>>,
}

/// A fetched key set: its refresher and the task that fetches.
struct Fetched {
    refresher: Arc<Refresher>,
    task: tokio::task::JoinHandle<()>,
}

/// The key sets of every external issuer the snapshot names, by [`source_key`].
pub(crate) struct JwksCache {
    keys: ArcSwap<HashMap<String, Vec<PublicKey>>>,
    /// Grows whenever `keys` changes (after the change is visible).
    generation: AtomicU64,
    fetched: Mutex<HashMap<String, Fetched>>,
    changed: Arc<Notify>,
    client: reqwest::Client,
    settings: JwksSettings,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("sources", &self.keys.load().len())
            .field("generation", &self.generation())
            .finish()
    }
}

impl JwksCache {
    /// An empty cache that wakes `changed` whenever a key set changes, fetching with `settings`'s
    /// timing.
    pub(crate) fn with_settings(changed: Arc<Notify>, settings: JwksSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .connect_timeout(Duration::from_secs(2).min(settings.fetch_timeout))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            keys: ArcSwap::from_pointee(HashMap::new()),
            generation: AtomicU64::new(0),
            fetched: Mutex::new(HashMap::new()),
            changed,
            client,
            settings,
        }
    }

    /// Keys by [`source_key`].
    pub(crate) fn keys(&self) -> Arc<HashMap<String, Vec<PublicKey>>> {
        self.keys.load_full()
    }

    /// How many times the keys changed so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The keys with their generation: the keys are at least as new as the generation says.
    pub(crate) fn snapshot(&self) -> (u64, Arc<HashMap<String, Vec<PublicKey>>>) {
        let generation = self.generation();
        (generation, self.keys())
    }

    fn set(&self, source: &str, set: Option<Vec<PublicKey>>) {
        self.keys.rcu(|cur| {
            let mut next = HashMap::clone(cur);
            match &set {
                Some(k) => {
                    next.insert(source.to_string(), k.clone());
                }
                None => {
                    next.remove(source);
                }
            }
            next
        });
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Follows the external issuers of a snapshot: inline key sets are parsed at once, fetched ones
    /// get a background task (one per URI); sources no longer named are dropped. Returns whether
    /// keys changed now.
    pub(crate) fn follow(self: &Arc<Self>, issuers: &[&v1::ExternalIssuer]) -> bool {
        let mut changed = false;
        let mut fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        let wanted: HashMap<String, &v1::ExternalIssuer> = issuers
            .iter()
            .filter(|i| !i.jwks.is_empty() || !i.jwks_uri.is_empty())
            .map(|i| (source_key(i), *i))
            .collect();
        // Stop what is gone.
        let stale: Vec<String> = fetched
            .keys()
            .filter(|uri| !wanted.contains_key(*uri))
            .cloned()
            .collect();
        for uri in stale {
            if let Some(f) = fetched.remove(&uri) {
                f.task.abort();
            }
        }
        for (source, e) in &wanted {
            if !e.jwks.is_empty() {
                if !self.keys.load().contains_key(source) {
                    // Named by its content: parsed once; unparsable is reported by the auth state.
                    if let Ok(parsed) = parse_jwks(e.jwks.as_bytes()) {
                        self.set(source, Some(parsed));
                        changed = true;
                    }
                }
            } else if !fetched.contains_key(source) {
                let refresher = Arc::new(Refresher {
                    uri: e.jwks_uri.clone(),
                    issuer: e.issuer.clone(),
                    wanted: watch::Sender::new(0),
                    progress: watch::Sender::new(Progress::default()),
                    on_demand: Mutex::new(None),
                });
                let (this, r) = (self.clone(), refresher.clone());
                let task = tokio::spawn(async move { this.refresh_loop(r).await });
                fetched.insert(source.clone(), Fetched { refresher, task });
            }
        }
        // Forget keys of sources no longer named.
        let known: Vec<String> = self.keys.load().keys().cloned().collect();
        for source in known {
            if !wanted.contains_key(source.as_str()) {
                self.set(&source, None);
                changed = true;
            }
        }
        changed
    }

    /// Asks for the key set of `source` ([`source_key`]) to be fetched now, because a token named a
    /// key it lacks, and
    /// waits for that fetch, at most the fetch timeout. Returns whether a fetch that started after
    /// the call (or after the on-demand refresh this call joined) has completed: the keys are then
    /// as current as the issuer serves them, or, when the fetch failed, the last good ones.
    ///
    /// Returns `false` at once for a source that is not fetched (inline, or not named), and when an
    /// on-demand refresh of this source was asked for less than the
    /// on-demand interval ago and has completed (rate limit: its keys are the answer).
    pub(crate) async fn refresh_now(&self, source: &str) -> bool {
        let refresher = {
            let fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
            match fetched.get(source) {
                Some(f) => f.refresher.clone(),
                None => return false,
            }
        };
        let mut progress = refresher.progress.subscribe();
        let target = {
            let mut last = refresher.on_demand.lock().unwrap_or_else(PoisonError::into_inner);
            let now = *progress.borrow_and_update();
            match *last {
                Some((at, target)) if at.elapsed() < self.settings.on_demand_interval => {
                    if now.completed >= target {
                        return false;
                    }
                    target
                }
                _ => {
                    // A fetch in flight began before this call: the answer is the next one.
                    let target = now.started + 1;
                    *last = Some((Instant::now(), target));
                    refresher.wanted.send_modify(|w| *w = (*w).max(target));
                    tracing::debug!(jwks_uri = %source, "token with an unknown kid: refreshing the issuer's keys");
                    target
                }
            }
        };
        matches!(
            tokio::time::timeout(
                self.settings.fetch_timeout,
                progress.wait_for(|p| p.completed >= target)
            )
            .await,
            Ok(Ok(_))
        )
    }

    async fn refresh_loop(self: Arc<Self>, r: Arc<Refresher>) {
        let mut failures = 0u32;
        let mut wanted = r.wanted.subscribe();
        loop {
            let mut number = 0;
            r.progress.send_modify(|p| {
                p.started += 1;
                number = p.started;
            });
            let delay = match self.fetch(&r.uri).await {
                Ok(keys) => {
                    failures = 0;
                    if self.keys.load().get(&r.uri) != Some(&keys) {
                        tracing::info!(issuer = %r.issuer, jwks_uri = %r.uri, keys = keys.len(), "external issuer keys updated");
                        self.set(&r.uri, Some(keys));
                        self.changed.notify_one();
                    }
                    self.settings.refresh
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(issuer = %r.issuer, jwks_uri = %r.uri, error = %e, "fetching the issuer's keys failed; keeping the last good ones");
                    retry_after(failures)
                }
            };
            // Completed only once the keys it brought are visible.
            r.progress.send_modify(|p| p.completed = number);
            // The next fetch at its time, or at once when a caller waits for it. (`r` keeps the
            // sender alive, so the wait ends only that way.)
            let next = number + 1;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = wanted.wait_for(|w| *w >= next) => {}
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

/// A JWKS server on loopback for tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::auth::token::SigningKey;

    /// What the loopback JWKS server answers.
    #[derive(Clone)]
    pub(crate) enum Serve {
        Keys(String),
        Status(u16),
        /// Reads the request and never answers.
        Hang,
    }

    /// A JWKS server on loopback: answers what `serve` says and counts requests.
    pub(crate) struct Server {
        pub(crate) uri: String,
        serve: Arc<Mutex<Serve>>,
        hits: Arc<AtomicUsize>,
        pub(crate) task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        pub(crate) async fn start(serve: Serve) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let uri = format!("http://{}/jwks", listener.local_addr().unwrap());
            let serve = Arc::new(Mutex::new(serve));
            let hits = Arc::new(AtomicUsize::new(0));
            let (s, h) = (serve.clone(), hits.clone());
            let task = tokio::spawn(async move {
                loop {
                    let Ok((mut conn, _)) = listener.accept().await else {
                        return;
                    };
                    let (s, h) = (s.clone(), h.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let mut read = 0;
                        while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf[read..]).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => read += n,
                            }
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                        let what = s.lock().unwrap().clone();
                        let (status, body) = match what {
                            Serve::Keys(body) => (200, body),
                            Serve::Status(code) => (code, "{}".to_string()),
                            Serve::Hang => {
                                std::future::pending::<()>().await;
                                return;
                            }
                        };
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(resp.as_bytes()).await;
                    });
                }
            });
            Self { uri, serve, hits, task }
        }

        pub(crate) fn set(&self, serve: Serve) {
            *self.serve.lock().unwrap() = serve;
        }

        pub(crate) fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    pub(crate) fn jwks(keys: &[&SigningKey]) -> Serve {
        Serve::Keys(
            serde_json::json!({"keys": keys.iter().map(|k| k.public().to_jwk()).collect::<Vec<_>>()}).to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Serve, Server, jwks};
    use super::*;
    use crate::auth::token::SigningKey;

    const ISS: &str = "https://idp.test";

    fn issuer(uri: &str) -> v1::ExternalIssuer {
        v1::ExternalIssuer {
            issuer: ISS.into(),
            jwks_uri: uri.into(),
            ..Default::default()
        }
    }

    fn kids_of(cache: &JwksCache, source: &str) -> Vec<String> {
        cache
            .keys()
            .get(source)
            .map(|ks| ks.iter().map(|k| k.kid.clone()).collect())
            .unwrap_or_default()
    }

    /// A cache following the issuer at `server`, once its first fetch brought keys.
    async fn following(server: &Server, settings: JwksSettings) -> Arc<JwksCache> {
        let changed = Arc::new(Notify::new());
        let cache = Arc::new(JwksCache::with_settings(changed.clone(), settings));
        cache.follow(&[&issuer(&server.uri)]);
        tokio::time::timeout(Duration::from_secs(10), changed.notified())
            .await
            .expect("the first fetch brings keys");
        cache
    }

    #[test]
    fn retries_back_off_and_are_bounded() {
        assert_eq!(retry_after(1), Duration::from_secs(1));
        assert_eq!(retry_after(3), Duration::from_secs(4));
        assert_eq!(retry_after(50), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_at_once_and_at_most_once_per_interval() {
        let (k1, k2) = (SigningKey::generate("k1").unwrap(), SigningKey::generate("k2").unwrap());
        let server = Server::start(jwks(&[&k1])).await;
        let cache = following(&server, JwksSettings::default()).await;
        assert_eq!(kids_of(&cache, &server.uri), ["k1"]);
        let (hits, generation) = (server.hits(), cache.generation());

        // The issuer rotates: the next fetch is on demand, not in 5 minutes.
        server.set(jwks(&[&k2]));
        assert!(cache.refresh_now(&server.uri).await);
        assert_eq!(server.hits(), hits + 1);
        assert_eq!(kids_of(&cache, &server.uri), ["k2"], "the removed key is gone");
        assert!(cache.generation() > generation);

        // Within the interval: answered from the keys just fetched, nothing is fetched.
        server.set(jwks(&[&k1, &k2]));
        for _ in 0..5 {
            assert!(!cache.refresh_now(&server.uri).await);
        }
        assert_eq!(server.hits(), hits + 1);
        assert_eq!(kids_of(&cache, &server.uri), ["k2"]);
    }

    #[tokio::test]
    async fn concurrent_refreshes_share_one_fetch() {
        let (k1, k2) = (SigningKey::generate("k1").unwrap(), SigningKey::generate("k2").unwrap());
        let server = Server::start(jwks(&[&k1])).await;
        let cache = following(&server, JwksSettings::default()).await;
        let hits = server.hits();
        server.set(jwks(&[&k1, &k2]));
        let all = futures::future::join_all((0..32).map(|_| cache.refresh_now(&server.uri))).await;
        assert!(all.iter().all(|r| *r), "every caller waited for the one fetch: {all:?}");
        assert_eq!(server.hits(), hits + 1, "single flight");
        assert_eq!(kids_of(&cache, &server.uri), ["k1", "k2"]);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_keys() {
        let k1 = SigningKey::generate("k1").unwrap();
        let server = Server::start(jwks(&[&k1])).await;
        let settings = JwksSettings {
            on_demand_interval: Duration::ZERO,
            ..JwksSettings::default()
        };
        let cache = following(&server, settings).await;
        let generation = cache.generation();
        for failure in [
            Serve::Status(500),
            Serve::Status(404),
            Serve::Keys("not json".into()),
            Serve::Keys(r#"{"keys":[]}"#.into()),
            Serve::Keys(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.into()),
        ] {
            server.set(failure);
            let hits = server.hits();
            assert!(cache.refresh_now(&server.uri).await, "the refresh ran");
            assert_eq!(server.hits(), hits + 1);
            assert_eq!(kids_of(&cache, &server.uri), ["k1"]);
        }
        // The issuer goes away altogether.
        server.task.abort();
        assert!(server.task.await.is_err_and(|e| e.is_cancelled()));
        assert!(cache.refresh_now(&server.uri).await);
        assert_eq!(kids_of(&cache, &server.uri), ["k1"]);
        assert_eq!(cache.generation(), generation, "the keys never changed");
    }

    #[tokio::test]
    async fn the_wait_for_a_refresh_is_bounded() {
        let k1 = SigningKey::generate("k1").unwrap();
        let server = Server::start(jwks(&[&k1])).await;
        let settings = JwksSettings {
            fetch_timeout: Duration::from_millis(300),
            ..JwksSettings::default()
        };
        let cache = following(&server, settings).await;
        server.set(Serve::Hang);
        let hits = server.hits();
        let started = Instant::now();
        // Whether the wait or the fetch gives up first, the caller is answered within about the
        // fetch timeout, not the issuer's pace.
        let _ = cache.refresh_now(&server.uri).await;
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(server.hits(), hits + 1, "the fetch was asked for");
        assert_eq!(kids_of(&cache, &server.uri), ["k1"]);
    }

    #[tokio::test]
    async fn only_fetched_issuers_refresh() {
        let k1 = SigningKey::generate("k1").unwrap();
        let changed = Arc::new(Notify::new());
        let cache = Arc::new(JwksCache::with_settings(changed, JwksSettings::default()));
        let inline = v1::ExternalIssuer {
            issuer: ISS.into(),
            jwks: serde_json::json!({"keys": [k1.public().to_jwk()]}).to_string(),
            ..Default::default()
        };
        let source = source_key(&inline);
        assert!(source.starts_with("inline:"), "{source}");
        assert!(cache.follow(&[&inline]));
        assert_eq!(kids_of(&cache, &source), ["k1"]);
        assert!(cache.keys().get(ISS).is_none(), "keys are never found by issuer");
        assert!(!cache.refresh_now(&source).await, "inline keys are not fetched");
        assert!(!cache.refresh_now("https://unknown.test").await);
        // No longer named: its keys are dropped.
        assert!(cache.follow(&[]));
        assert!(kids_of(&cache, &source).is_empty());
    }
}
