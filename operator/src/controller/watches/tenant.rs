//! The tenant controller's watches: tenants, and the core Namespaces and ResourceQuotas they own.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace as CoreNamespace, ResourceQuota};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::{WatchStreamExt, predicates, reflector as reflect, watcher};
use microplane_crds::Namespace;

use super::{Cache, Wiring, any, error_policy, on_leadership, trimmed};
use crate::controller::tenant;
use crate::labels;

/// Runs the tenant controller until shutdown.
pub(in crate::controller) async fn controller<S>(w: &Wiring<S>, tenants: Cache<Namespace>)
where
    S: std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = &w.client;
    let tenant_stream = reflect(tenants.writer, trimmed(Api::<Namespace>::all(client.clone()), any()))
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(tenant_stream, tenants.store)
        .with_config(w.config())
        .owns(
            Api::<ResourceQuota>::all(client.clone()),
            watcher::Config::default().labels(labels::TENANT_LABEL).any_semantic(),
        )
        .owns(
            Api::<CoreNamespace>::all(client.clone()),
            watcher::Config::default().labels(labels::TENANT_LABEL).any_semantic(),
        )
        .reconcile_all_on(on_leadership(w.leader.clone()))
        .graceful_shutdown_on(w.shutdown.clone())
        .run(tenant::reconcile, error_policy, w.ctx.clone())
        .for_each(|_| async {})
        .await;
}
