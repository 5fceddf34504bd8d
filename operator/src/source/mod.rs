//! Source mode: a MicroService with `spec.source.git` is resolved to a commit (git2, on blocking
//! threads, bounded and cached), built into an image by a Job, and deployed pinned to that commit.
//!
//! - [`strategy`]: which build the tree at `path` gets (pure).
//! - [`git`]: resolution and inspection with git2 over an on-disk cache of bare repositories.
//! - [`job`]: the build Job (pure) and how to read its outcome.
//! - [`Resolver`]: when to resolve again (spec change, `pollInterval`, backoff after a failure).

pub mod git;
pub mod job;
pub mod strategy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use microplane_crds::{GitSource, Source};

use self::git::{Credentials, Request, Resolved, Revision, SourceError};
use microplane_crds::Reason;

/// Settings of source mode, from flags.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// Directory of the bare-repository cache.
    pub cache_dir: PathBuf,
    /// Upper bound of the cache; least recently used repositories go first.
    pub cache_max_bytes: u64,
    /// Largest pack one fetch may receive.
    pub max_repo_bytes: u64,
    /// How long one resolution may take.
    pub timeout: Duration,
    /// Admit `http://` and `file://` URLs (tests and dev only).
    pub allow_insecure: bool,
    /// Build Jobs.
    pub build: job::BuildSettings,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self {
            cache_dir: std::env::temp_dir().join("microplane-git-cache"),
            cache_max_bytes: 2 << 30,
            max_repo_bytes: 512 << 20,
            timeout: Duration::from_secs(60),
            allow_insecure: false,
            build: job::BuildSettings::default(),
        }
    }
}

/// The resolution request of a source, or why the spec itself is unusable.
pub fn request(source: &Source) -> Result<Request, SourceError> {
    let GitSource {
        url, reference, path, ..
    } = &source.git;
    let path = strategy::clean_path(path.as_deref()).ok_or_else(|| {
        SourceError::new(
            Reason::PathEscapesRepository,
            format!(
                "path {} leaves the repository: give a relative path without '..'",
                path.as_deref().unwrap_or_default()
            ),
        )
    })?;
    let build = source.build.clone().unwrap_or_default();
    let dockerfile = strategy::clean_dockerfile(build.dockerfile.as_deref()).ok_or_else(|| {
        SourceError::new(
            Reason::PathEscapesRepository,
            "build.dockerfile must be a relative file path inside the source path, without '..'",
        )
    })?;
    let r = reference.clone().unwrap_or_default();
    let revision = match (r.branch, r.tag, r.commit) {
        (Some(b), _, _) => Revision::Branch(b),
        (_, Some(t), _) => Revision::Tag(t),
        (_, _, Some(c)) => Revision::Commit(c.to_ascii_lowercase()),
        _ => Revision::Default,
    };
    Ok(Request {
        url: url.clone(),
        revision,
        path,
        strategy: build.strategy,
        dockerfile,
    })
}

struct Memo {
    request: Request,
    secret: Option<String>,
    outcome: Result<Resolved, SourceError>,
    at: Instant,
    failures: u32,
}

/// Resolutions per MicroService and the rules for doing them again.
pub struct Resolver {
    memo: Mutex<HashMap<String, Memo>>,
    limit: tokio::sync::Semaphore,
    repos: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            memo: Mutex::default(),
            limit: tokio::sync::Semaphore::new(4),
            repos: Mutex::default(),
        }
    }
}

/// The shortest `pollInterval` followed (the CRD refuses shorter ones): every poll asks the git
/// host for its branches.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Delay before resolving again after `failures` failures in a row: 5 s doubling to 5 minutes.
pub fn retry_delay(failures: u32) -> Duration {
    const RETRY: microplane_runtime::Backoff =
        microplane_runtime::Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    RETRY.delay(failures)
}

/// What the resolver says for one reconcile.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The resolution (possibly cached).
    pub outcome: Result<Resolved, SourceError>,
    /// When to look again (poll or retry), if ever without a change.
    pub again_in: Option<Duration>,
}

impl Resolver {
    /// Whether `key` has a usable resolution for this request (no network needed).
    pub fn known(&self, key: &str, req: &Request, secret: Option<&str>) -> bool {
        self.memo
            .lock()
            .ok()
            .and_then(|m| m.get(key).map(|e| e.request == *req && e.secret.as_deref() == secret))
            .unwrap_or(false)
    }

    /// Forgets MicroServices that are gone.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut m) = self.memo.lock() {
            m.retain(|k, _| keep(k));
        }
    }

    /// The resolution of the source of MicroService `owner` (tenant, name): the cached one while
    /// it is current (same request, poll interval not elapsed, retry delay not elapsed), else a
    /// new one, fetched into the tenant's partition of the git cache. `credentials` is awaited
    /// only when the network is used. [`Self::known`] and [`Self::retain`] name it `tenant/name`.
    pub async fn resolve(
        &self,
        owner: (&str, &str),
        req: Request,
        secret: Option<&str>,
        poll: Option<Duration>,
        credentials: impl std::future::Future<Output = Result<Credentials, SourceError>>,
        settings: &SourceSettings,
    ) -> Answer {
        let (tenant, name) = owner;
        let key = format!("{tenant}/{name}");
        let cached = self.memo.lock().ok().and_then(|m| {
            m.get(&key)
                .filter(|e| e.request == req && e.secret.as_deref() == secret)
                .map(|e| (e.outcome.clone(), e.at.elapsed(), e.failures))
        });
        let poll = poll.filter(|_| req.revision.moves());
        if let Some((outcome, age, failures)) = cached.clone() {
            let wait = match &outcome {
                Ok(_) => poll.map(|p| p.saturating_sub(age)),
                Err(_) => Some(retry_delay(failures).saturating_sub(age)),
            };
            if wait.is_none_or(|w| !w.is_zero()) {
                return Answer {
                    outcome,
                    again_in: wait,
                };
            }
        }
        let previous_failures = cached.map_or(0, |c| if c.0.is_err() { c.2 } else { 0 });
        let outcome = self.fetch(tenant, req.clone(), credentials, settings).await;
        let failures = if outcome.is_err() { previous_failures + 1 } else { 0 };
        let again_in = match &outcome {
            Ok(_) => poll,
            Err(_) => Some(retry_delay(failures)),
        };
        if let Ok(mut m) = self.memo.lock() {
            m.insert(
                key,
                Memo {
                    request: req,
                    secret: secret.map(str::to_owned),
                    outcome: outcome.clone(),
                    at: Instant::now(),
                    failures,
                },
            );
        }
        Answer { outcome, again_in }
    }

    async fn fetch(
        &self,
        tenant: &str,
        req: Request,
        credentials: impl std::future::Future<Output = Result<Credentials, SourceError>>,
        settings: &SourceSettings,
    ) -> Result<Resolved, SourceError> {
        let transport = git::transport(&req.url, settings.allow_insecure)?;
        let creds = credentials.await?;
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| SourceError::new(Reason::SourceCacheError, "the resolver is shutting down"))?;
        let path = git::cache_path(&settings.cache_dir, tenant, &req.url);
        let repo_lock = self
            .repos
            .lock()
            .map_err(|_| SourceError::new(Reason::SourceCacheError, "lock poisoned"))?
            .entry(path.clone())
            .or_default()
            .clone();
        let guard = repo_lock.lock_owned().await;
        let repo = path.clone();
        let limits = git::Limits {
            max_bytes: settings.max_repo_bytes,
            deadline: Instant::now() + settings.timeout,
        };
        std::fs::create_dir_all(&settings.cache_dir)
            .map_err(|e| SourceError::new(Reason::SourceCacheError, format!("cannot create the git cache: {e}")))?;
        let url = req.url.clone();
        let task = tokio::task::spawn_blocking(move || {
            let r = git::resolve(&repo, &req, &creds, &transport, limits);
            drop(guard);
            r
        });
        // libgit2's own timeouts and the progress callback end the blocking work; this bounds the wait.
        let result = match tokio::time::timeout(settings.timeout + Duration::from_secs(5), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(SourceError::new(
                Reason::SourceCacheError,
                format!("resolution task failed: {e}"),
            )),
            Err(_) => Err(SourceError::new(
                Reason::SourceTimeout,
                format!("fetching {url} took too long"),
            )),
        };
        self.prune(settings, &path);
        result
    }

    /// Keeps the cache under its bound: least recently used repositories not in use go first.
    fn prune(&self, settings: &SourceSettings, keep: &std::path::Path) {
        let Ok(entries) = std::fs::read_dir(&settings.cache_dir) else {
            return;
        };
        let mut repos: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .map(|p| {
                let used = std::fs::metadata(p.join("microplane-used"))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                let size = git::dir_size(&p);
                (used, p, size)
            })
            .collect();
        let mut total: u64 = repos.iter().map(|r| r.2).sum();
        repos.sort();
        for (_, path, size) in repos {
            if total <= settings.cache_max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            let lock = self.repos.lock().ok().and_then(|m| m.get(&path).cloned());
            let free = lock.as_ref().is_none_or(|l| l.try_lock().is_ok());
            if free && std::fs::remove_dir_all(&path).is_ok() {
                tracing::info!(repository = %path.display(), bytes = size, "pruned from the git cache");
                total = total.saturating_sub(size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_interval(s: &str) -> Option<Duration> {
        microplane_crds::Duration::parse(s)
            .ok()
            .map(microplane_crds::Duration::get)
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_interval("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_interval("0s"), None);
        assert_eq!(parse_interval("1d"), None);
        assert_eq!(parse_interval(""), None);
    }

    #[test]
    fn retries_back_off() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(7), Duration::from_secs(300));
        assert_eq!(retry_delay(50), Duration::from_secs(300));
    }
}
