//! The watches that feed the routing snapshot and no controller: tenants' issuer keys, the
//! EndpointSlices of MicroServices, and account Secrets (hashed before they are cached); the shared
//! tenant and Config watches; and the publisher that builds snapshots from them.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector as reflect, watcher};
use microplane_crds::{AuthRule, MicroService};

use super::{Cache, Shared, Wiring, any, trimmed, until};
use crate::controller::Routing;
use crate::discovery::Discovery;
use crate::metrics::SyncMetrics;
use crate::{labels, publish, snapshot};

/// What only the routing snapshot reads.
pub(in crate::controller) struct Caches {
    /// Tenants' issuer-key Secrets (also read by the tenant controller).
    pub(in crate::controller) keys: Cache<Secret>,
    /// EndpointSlices of MicroServices' Services.
    pub(in crate::controller) slices: Cache<EndpointSlice>,
    /// Account Secrets, hashed.
    pub(in crate::controller) accounts: Cache<Secret>,
}

/// Fills the shared tenant and Config caches, the issuer keys, the EndpointSlices and the accounts
/// until shutdown; every change but a Config's wakes the publisher.
pub(in crate::controller) async fn feeds<S>(w: &Wiring<S>, shared: Shared, caches: Caches)
where
    S: std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = &w.client;
    let keys = reflect(
        caches.keys.writer,
        watcher(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(labels::KEYS_LABEL).any_semantic(),
        )
        .modify(|s: &mut Secret| s.metadata.managed_fields = None)
        .default_backoff(),
    )
    .for_each(notify(&w.changed));
    let slices = reflect(
        caches.slices.writer,
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(labels::SERVICE_LABEL).any_semantic(),
        )
        .modify(|s: &mut EndpointSlice| s.metadata.managed_fields = None)
        .default_backoff(),
    )
    .for_each(notify(&w.changed));
    let accounts = reflect(
        caches.accounts.writer,
        watcher(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default()
                .fields(&format!("type={}", snapshot::ACCOUNT_TYPE))
                .any_semantic(),
        )
        .modify(snapshot::hash_account)
        .default_backoff(),
    )
    .for_each(notify(&w.changed));
    let feed = {
        let changed_by_tenants = w.changed.clone();
        let tenants = trimmed(Api::<microplane_crds::Namespace>::all(client.clone()), any())
            .default_backoff()
            .reflect_shared(shared.tenants_writer)
            .inspect(move |_| changed_by_tenants.notify_one());
        let configs = trimmed(Api::<microplane_crds::Config>::all(client.clone()), any())
            .default_backoff()
            .reflect_shared(shared.configs_writer);
        futures::future::join(tenants.for_each(|_| async {}), configs.for_each(|_| async {}))
    };
    // Watches that feed caches end with the controllers, or a SIGTERM would never finish.
    futures::future::join(
        until(slices, w.shutdown.clone()),
        until(futures::future::join3(feed, keys, accounts), w.shutdown.clone()),
    )
    .await;
}

/// Wakes the publisher for each event.
fn notify<T>(changed: &Arc<tokio::sync::Notify>) -> impl FnMut(T) -> std::future::Ready<()> + use<T> {
    let changed = changed.clone();
    move |_| {
        changed.notify_one();
        std::future::ready(())
    }
}

/// The caches a snapshot is built from, from every cache that holds them.
pub(in crate::controller) fn sources<S>(
    w: &Wiring<S>,
    tenants: Store<microplane_crds::Namespace>,
    microservices: Store<MicroService>,
    rules: Store<AuthRule>,
    caches: &Caches,
) -> publish::Sources {
    publish::Sources {
        tenants,
        services: microservices,
        slices: caches.slices.store.clone(),
        rules,
        keys: caches.keys.store.clone(),
        accounts: caches.accounts.store.clone(),
        issuer_base: w.ctx.settings.gateway_url.clone(),
    }
}

/// Publishes snapshots of `sources` until shutdown.
pub(in crate::controller) async fn publisher<S>(
    w: &Wiring<S>,
    sources: publish::Sources,
    discovery: Arc<Discovery>,
    routing: Routing,
    metrics: SyncMetrics,
) where
    S: std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
{
    until(
        publish::run(
            sources,
            discovery,
            w.changed.clone(),
            routing.source_id,
            routing.snapshots,
            metrics,
        ),
        w.shutdown.clone(),
    )
    .await;
}
