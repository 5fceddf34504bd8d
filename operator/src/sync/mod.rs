//! The operator → gateway routing sync (docs/gateway.md): caches → snapshot → gRPC stream.
//!
//! Every replica runs it (standbys keep their caches warm), so any replica can serve gateways.
//! Nothing here writes to the API server; MicroService status (`endpoints`, `Routed`) is written by
//! the MicroService controller from what [`Discovery`] knows.

pub mod auth;
pub mod reflection;
pub mod server;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{ObjectRef, Store};
use microplane_crds::{MicroService, Namespace};
use microplane_sync::v1;
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use self::reflection::Discovered;

/// How long one discovery may take.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Discoveries running at once.
pub const DISCOVERY_CONCURRENCY: usize = 8;
/// Quiet time that coalesces a burst of changes into one snapshot.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// Wait before retrying a failed discovery: 2 s doubling to 5 min.
pub fn retry_after(attempts: u32) -> Duration {
    Duration::from_secs(2u64 << attempts.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

#[derive(Clone, Debug)]
enum Entry {
    InFlight,
    Ready(Arc<Discovered>),
    Failed {
        error: String,
        attempts: u32,
        retry_at: Instant,
    },
}

/// What is known about a MicroService's descriptors.
#[derive(Clone, Debug, PartialEq)]
pub enum DiscoveryState {
    /// Not asked yet (no ready endpoint) or in flight.
    Pending,
    /// Known.
    Ready(Arc<Discovered>),
    /// The last attempt failed.
    Failed(String),
}

/// The descriptor cache, keyed by image (or commit), and the discoveries in flight.
pub struct Discovery {
    entries: Mutex<HashMap<String, Entry>>,
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
    pub fn new(changed: Arc<Notify>, reconcile: mpsc::UnboundedSender<ObjectRef<MicroService>>) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            limit: Arc::new(Semaphore::new(DISCOVERY_CONCURRENCY)),
            changed,
            reconcile,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state for a key.
    pub fn state(&self, key: &str) -> DiscoveryState {
        match self.lock().get(key) {
            Some(Entry::Ready(d)) => DiscoveryState::Ready(d.clone()),
            Some(Entry::Failed { error, .. }) => DiscoveryState::Failed(error.clone()),
            _ => DiscoveryState::Pending,
        }
    }

    /// Every known descriptor set.
    pub fn ready(&self) -> HashMap<String, Arc<Discovered>> {
        self.lock()
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Ready(d) => Some((k.clone(), d.clone())),
                _ => None,
            })
            .collect()
    }

    /// Records a result (also used by tests).
    pub fn record(&self, key: &str, result: Result<Discovered, String>) {
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
    }

    /// Starts the discovery `w` unless it is known, running, or waiting out its backoff.
    pub fn want(self: &Arc<Self>, w: snapshot::Wanted) {
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
            this.record(&w.key, result.map_err(|e| e.to_string()));
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

/// The caches the snapshot is built from.
#[derive(Clone)]
pub struct Sources {
    /// Tenants.
    pub tenants: Store<Namespace>,
    /// MicroServices.
    pub services: Store<MicroService>,
    /// EndpointSlices of MicroServices' Services.
    pub slices: Store<EndpointSlice>,
    /// AuthRules.
    pub rules: Store<microplane_crds::AuthRule>,
    /// Tenants' issuer-key Secrets.
    pub keys: Store<k8s_openapi::api::core::v1::Secret>,
    /// Account Secrets (hashed).
    pub accounts: Store<k8s_openapi::api::core::v1::Secret>,
    /// Base of tenants' issuer URLs.
    pub issuer_base: Option<String>,
}

/// Builds a snapshot whenever `changed` fires (after the caches are synced), and publishes it with a
/// new version when its content differs from the last one.
pub async fn publish(
    sources: Sources,
    discovery: Arc<Discovery>,
    changed: Arc<Notify>,
    source_id: String,
    out: watch::Sender<Option<Arc<v1::Snapshot>>>,
    metrics: crate::metrics::SyncMetrics,
) {
    // An empty snapshot from half-filled caches would wipe the gateways' routes.
    // Sequential waits: each returns at once once its cache is synced.
    let synced = sources.tenants.wait_until_ready().await.is_ok()
        && sources.services.wait_until_ready().await.is_ok()
        && sources.slices.wait_until_ready().await.is_ok()
        && sources.rules.wait_until_ready().await.is_ok()
        && sources.keys.wait_until_ready().await.is_ok()
        && sources.accounts.wait_until_ready().await.is_ok();
    if !synced {
        return;
    }
    let mut version = 0u64;
    let mut last: Option<v1::Snapshot> = None;
    loop {
        let (tenants, services, slices) = (
            sources.tenants.state(),
            sources.services.state(),
            sources.slices.state(),
        );
        let (rules, keys, accounts) = (sources.rules.state(), sources.keys.state(), sources.accounts.state());
        let discovered = discovery.ready();
        let built = snapshot::build(snapshot::Inputs {
            tenants: &tenants,
            services: &services,
            slices: &slices,
            discovered: Some(&discovered),
            rules: &rules,
            keys: &keys,
            accounts: &accounts,
            issuer_base: sources.issuer_base.as_deref(),
        });
        for w in built.wanted {
            discovery.want(w);
        }
        if last.as_ref() != Some(&built.snapshot) {
            version += 1;
            let mut s = built.snapshot.clone();
            s.version = version;
            s.source = source_id.clone();
            s.built_unix_nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            tracing::debug!(version, services = s.services.len(), "snapshot published");
            out.send_replace(Some(Arc::new(s)));
            metrics.published(version);
            last = Some(built.snapshot);
        }
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
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
        d.record("k", Err("refused".into()));
        assert_eq!(d.state("k"), DiscoveryState::Failed("refused".into()));
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
}
