//! What each MicroService serves, learnt through gRPC server reflection ([`reflection`]) from one
//! of its ready endpoints and cached per image (or commit): the snapshot asks for what it misses
//! ([`Discovery::want`]), and the MicroService controller reports the state as `Routed`.
//!
//! Nothing here writes to the API server.

pub mod reflection;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use microplane_crds::MicroService;
use tokio::sync::{Notify, Semaphore, mpsc};

use self::reflection::{Discovered, ReflectionError};

/// How long one discovery may take.
pub(crate) const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Discoveries running at once.
pub(crate) const DISCOVERY_CONCURRENCY: usize = 8;

/// Wait before retrying a failed discovery: 2 s doubling to 5 min.
const RETRY: microplane_runtime::Backoff =
    microplane_runtime::Backoff::new(Duration::from_secs(2), Duration::from_secs(300));

/// Wait before retrying after `attempts` failed discoveries in a row.
pub(crate) fn retry_after(attempts: u32) -> Duration {
    RETRY.delay(attempts)
}

/// Descriptors are cached per image that runs: one discovery serves every MicroService running
/// the same image, and nothing else. A source build's image is pinned by digest, so two services
/// built from different paths of one commit, or one path rebuilt, never share an entry; an image
/// service's status names its image by digest when known, else the spec's reference is the key.
pub(crate) fn key_of(ms: &MicroService) -> Option<String> {
    let pinned = ms
        .status
        .as_ref()
        .and_then(|s| s.image.as_deref())
        .filter(|i| i.contains("@sha256:"));
    if let Some(image) = pinned {
        return Some(format!("image:{image}"));
    }
    if ms.spec.source.is_some() {
        // Nothing built runs yet.
        return None;
    }
    ms.spec.image.clone().map(|i| format!("image:{i}"))
}

/// How long a descriptor set no snapshot uses is kept (a service scaled to zero and back, a
/// rollback) before [`Discovery::evict_unused`] forgets it.
pub(crate) const UNUSED_FOR: Duration = Duration::from_secs(600);

/// A discovery the snapshot needs: the key, an endpoint to ask, and who waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The cache key.
    pub(crate) key: String,
    /// A ready endpoint, `ip:port`.
    pub(crate) address: String,
    /// MicroServices using this key.
    pub(crate) services: Vec<ObjectRef<MicroService>>,
}

#[derive(Clone, Debug)]
enum Entry {
    InFlight,
    Ready(Arc<Discovered>),
    Failed {
        error: ReflectionError,
        attempts: u32,
        retry_at: Instant,
    },
}

/// What is known about a MicroService's descriptors.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DiscoveryState {
    /// Not asked yet (no ready endpoint) or in flight.
    Pending,
    /// Known.
    Ready(Arc<Discovered>),
    /// The last attempt failed.
    Failed(ReflectionError),
}

/// The descriptor cache, keyed by image (or commit), and the discoveries in flight.
pub(crate) struct Discovery {
    entries: Mutex<HashMap<String, Entry>>,
    /// When a snapshot last used each entry (or it was recorded). Locked after `entries`.
    last_used: Mutex<HashMap<String, Instant>>,
    limit: Arc<Semaphore>,
    changed: Arc<Notify>,
    reconcile: mpsc::UnboundedSender<ObjectRef<MicroService>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").finish_non_exhaustive()
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Self::new(Arc::new(Notify::new()), mpsc::unbounded_channel().0)
    }
}

impl Discovery {
    /// A cache that wakes `changed` and asks for reconciles of the waiting MicroServices when a
    /// discovery ends.
    pub(crate) fn new(changed: Arc<Notify>, reconcile: mpsc::UnboundedSender<ObjectRef<MicroService>>) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            last_used: Mutex::new(HashMap::new()),
            limit: Arc::new(Semaphore::new(DISCOVERY_CONCURRENCY)),
            changed,
            reconcile,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state for a key.
    pub(crate) fn state(&self, key: &str) -> DiscoveryState {
        match self.lock().get(key) {
            Some(Entry::Ready(d)) => DiscoveryState::Ready(d.clone()),
            Some(Entry::Failed { error, .. }) => DiscoveryState::Failed(error.clone()),
            _ => DiscoveryState::Pending,
        }
    }

    /// Every known descriptor set.
    pub(crate) fn ready(&self) -> HashMap<String, Arc<Discovered>> {
        self.lock()
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Ready(d) => Some((k.clone(), d.clone())),
                _ => None,
            })
            .collect()
    }

    /// Records a result (also used by tests).
    pub(crate) fn record(&self, key: &str, result: Result<Discovered, ReflectionError>) {
        let mut map = self.lock();
        let attempts = match map.get(key) {
            Some(Entry::Failed { attempts, .. }) => *attempts,
            _ => 0,
        };
        let entry = match result {
            Ok(d) => Entry::Ready(Arc::new(d)),
            Err(error) => Entry::Failed {
                error,
                attempts: attempts + 1,
                retry_at: Instant::now() + retry_after(attempts + 1),
            },
        };
        map.insert(key.to_string(), entry);
        self.last_used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_string(), Instant::now());
    }

    /// Marks `in_use` (the keys of the last snapshot and its wanted discoveries) as used now and
    /// forgets entries unused for `idle`: images that no longer run. Returns how many it forgot.
    pub(crate) fn evict_unused<'a>(
        &self,
        in_use: impl IntoIterator<Item = &'a str>,
        idle: Duration,
        now: Instant,
    ) -> usize {
        let mut entries = self.lock();
        let mut used = self.last_used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in in_use {
            used.insert(key.to_string(), now);
        }
        let before = entries.len();
        entries.retain(|key, entry| {
            matches!(entry, Entry::InFlight) || used.get(key).is_some_and(|t| now.saturating_duration_since(*t) < idle)
        });
        used.retain(|key, _| entries.contains_key(key));
        before - entries.len()
    }

    /// Starts the discovery `w` unless it is known, running, or waiting out its backoff.
    pub(crate) fn want(self: &Arc<Self>, w: Wanted) {
        {
            let mut map = self.lock();
            match map.get(&w.key) {
                Some(Entry::Ready(_) | Entry::InFlight) => return,
                Some(Entry::Failed { retry_at, .. }) if *retry_at > Instant::now() => return,
                Some(Entry::Failed { .. }) => {
                    // Keep the failure (for its attempt count) until the new result arrives.
                }
                None => {
                    map.insert(w.key.clone(), Entry::InFlight);
                }
            }
            if let Some(Entry::Failed { retry_at, .. }) = map.get_mut(&w.key) {
                // Not due again until this attempt ends.
                *retry_at = Instant::now() + Duration::from_secs(3600);
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            let result = {
                let _permit = this.limit.clone().acquire_owned().await;
                reflection::discover(&w.address, DISCOVERY_TIMEOUT).await
            };
            let failed_for = match &result {
                Ok(d) => {
                    tracing::info!(key = %w.key, endpoints = d.endpoints.len(), "descriptors discovered");
                    None
                }
                Err(e) => {
                    tracing::info!(key = %w.key, error = %e, "descriptor discovery failed");
                    Some(())
                }
            };
            this.record(&w.key, result);
            for r in &w.services {
                let _ = this.reconcile.send(r.clone());
            }
            this.changed.notify_one();
            if failed_for.is_some() {
                let attempts = match this.lock().get(&w.key) {
                    Some(Entry::Failed { attempts, .. }) => *attempts,
                    _ => 1,
                };
                tokio::time::sleep(retry_after(attempts)).await;
                this.changed.notify_one();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_are_bounded() {
        assert_eq!(retry_after(1), Duration::from_secs(2));
        assert_eq!(retry_after(2), Duration::from_secs(4));
        assert_eq!(retry_after(30), Duration::from_secs(300));
    }

    #[test]
    fn records_results() {
        let d = Discovery::default();
        assert_eq!(d.state("k"), DiscoveryState::Pending);
        let refused = ReflectionError::Call("10.0.0.1:9000".into(), "connection refused".into());
        d.record("k", Err(refused.clone()));
        assert_eq!(d.state("k"), DiscoveryState::Failed(refused));
        assert!(d.ready().is_empty());
        d.record(
            "k",
            Ok(Discovered {
                file_descriptor_set: vec![],
                services: vec![],
                endpoints: vec!["A.B".into()],
            }),
        );
        assert!(matches!(d.state("k"), DiscoveryState::Ready(_)));
        assert_eq!(d.ready().len(), 1);
    }

    fn found(endpoint: &str) -> Result<Discovered, ReflectionError> {
        Ok(Discovered {
            file_descriptor_set: vec![],
            services: vec![],
            endpoints: vec![endpoint.into()],
        })
    }

    #[test]
    fn unused_entries_are_forgotten_after_their_grace() {
        let d = Discovery::default();
        d.record("image:a", found("A.Call"));
        d.record("image:b", found("B.Call"));
        let now = Instant::now();
        // Just recorded: kept though no snapshot used them yet.
        assert_eq!(d.evict_unused(["image:a"], Duration::from_secs(60), now), 0);
        // A minute later, b unused for longer than the grace: forgotten; a used by this snapshot: kept.
        let later = now + Duration::from_secs(61);
        assert_eq!(d.evict_unused(["image:a"], Duration::from_secs(60), later), 1);
        assert_eq!(d.state("image:b"), DiscoveryState::Pending);
        assert!(matches!(d.state("image:a"), DiscoveryState::Ready(_)));
    }

    fn ms(yaml: &str) -> MicroService {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn descriptors_are_keyed_by_the_image_that_runs() {
        let monorepo = |path: &str, digest: &str| {
            ms(&format!(
                "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {{name: {path}, namespace: t}}\n\
                 spec: {{source: {{git: {{url: 'https://git.example/r', path: {path}}}}}}}\n\
                 status: {{commit: c0ffee, image: 'reg/t/{path}@sha256:{digest}'}}"
            ))
        };
        // Two services built from one commit at different paths: two keys.
        let a = key_of(&monorepo("users", "aa")).unwrap();
        let b = key_of(&monorepo("orders", "bb")).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, "image:reg/t/users@sha256:aa");
        // Built from source but nothing built runs yet: no key, so no discovery.
        let unbuilt = ms(
            "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {name: x, namespace: t}\n\
             spec: {source: {git: {url: 'https://git.example/r'}}}\nstatus: {commit: c0ffee}",
        );
        assert_eq!(key_of(&unbuilt), None);
        // An image service: its reference, or the digest its status pins.
        let tagged = ms(
            "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {name: x, namespace: t}\nspec: {image: 'reg/x:1'}",
        );
        assert_eq!(key_of(&tagged).as_deref(), Some("image:reg/x:1"));
        let pinned = ms(
            "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {name: x, namespace: t}\n\
             spec: {image: 'reg/x:1'}\nstatus: {image: 'reg/x@sha256:cc'}",
        );
        assert_eq!(key_of(&pinned).as_deref(), Some("image:reg/x@sha256:cc"));
    }
}
