//! Getting routing snapshots to gateways (docs/gateway.md): the publisher builds a snapshot from the
//! caches whenever one of them changes and versions it when its content differs ([`run`]); the
//! [`server`] streams the latest one to every gateway that [`auth`] admits.
//!
//! Every replica runs it (standbys keep their caches warm), so any replica can serve gateways.
//! Nothing here writes to the API server.

pub mod auth;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use microplane_crds::{MicroService, Namespace};
use microplane_wire::sync::v1;
use tokio::sync::{Notify, watch};

use crate::discovery::Discovery;
use crate::snapshot;

/// Quiet time that coalesces a burst of changes into one snapshot.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(10);

/// The caches the snapshot is built from.
#[derive(Clone)]
pub(crate) struct Sources {
    /// Tenants.
    pub(crate) tenants: Store<Namespace>,
    /// MicroServices.
    pub(crate) services: Store<MicroService>,
    /// EndpointSlices of MicroServices' Services.
    pub(crate) slices: Store<EndpointSlice>,
    /// AuthRules.
    pub(crate) rules: Store<microplane_crds::AuthRule>,
    /// Tenants' issuer-key Secrets.
    pub(crate) keys: Store<k8s_openapi::api::core::v1::Secret>,
    /// Account Secrets (hashed).
    pub(crate) accounts: Store<k8s_openapi::api::core::v1::Secret>,
    /// Base of tenants' issuer URLs.
    pub(crate) issuer_base: Option<String>,
}

/// Builds a snapshot whenever `changed` fires (after the caches are synced), and publishes it with a
/// new version when its content differs from the last one.
pub(crate) async fn run(
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
        let in_use = (built.snapshot.descriptors.iter().map(|d| d.key.as_str()))
            .chain(built.wanted.iter().map(|w| w.key.as_str()));
        let evicted = discovery.evict_unused(in_use, crate::discovery::UNUSED_FOR, std::time::Instant::now());
        if evicted > 0 {
            tracing::debug!(evicted, "unused descriptor sets forgotten");
        }
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
