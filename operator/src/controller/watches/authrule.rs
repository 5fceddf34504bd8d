//! The AuthRule controller's watches: AuthRules, and the tenants they belong to.

use std::sync::Arc;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, ReflectHandle};
use kube::runtime::{WatchStreamExt, predicates, reflector as reflect};
use microplane_crds::{AuthRule, Namespace};

use super::{Cache, Wiring, any, error_policy, on_leadership, trimmed};
use crate::controller::authrule;

/// Runs the AuthRule controller until shutdown.
pub(in crate::controller) async fn controller<S>(
    w: &Wiring<S>,
    rules: Cache<AuthRule>,
    tenant_events: Option<ReflectHandle<Namespace>>,
) where
    S: std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
{
    // Rule changes (deletions included) reach the gateways through the next snapshot.
    let changed_by_rules = w.changed.clone();
    let rule_stream = reflect(rules.writer, trimmed(Api::<AuthRule>::all(w.client.clone()), any()))
        .inspect(move |_| changed_by_rules.notify_one())
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(rule_stream, rules.store.clone())
        .with_config(w.config())
        .watches_shared_stream(futures::stream::iter(tenant_events).flatten(), {
            let store = rules.store;
            move |t: Arc<Namespace>| {
                let ns = t.name_any();
                store
                    .state()
                    .iter()
                    .filter(|r| r.namespace().as_deref() == Some(ns.as_str()))
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect::<Vec<_>>()
            }
        })
        .reconcile_all_on(on_leadership(w.leader.clone()))
        .graceful_shutdown_on(w.shutdown.clone())
        .run(authrule::reconcile, error_policy, w.ctx.clone())
        .for_each(|_| async {})
        .await;
}
