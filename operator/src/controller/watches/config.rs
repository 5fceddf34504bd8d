//! The Config controller's watches: Configs, the ConfigMaps and Secrets they own, and the metadata
//! of the Secrets they reference.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, reflector as reflect, watcher};
use microplane_crds::Config;

use super::{Cache, Wiring, any, error_policy, on_leadership, trimmed};
use crate::controller::config;
use crate::labels;

/// Runs the Config controller until shutdown.
pub(in crate::controller) async fn controller<S>(w: &Wiring<S>, configs: Cache<Config>)
where
    S: std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = &w.client;
    let config_stream = reflect(configs.writer, trimmed(Api::<Config>::all(client.clone()), any()))
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let config_labels = watcher::Config::default().labels(labels::CONFIG_LABEL).any_semantic();
    // Metadata only: Secret values never reach this process through the watch.
    let secrets_meta =
        watcher(Api::<kube::core::PartialObjectMeta<Secret>>::all(client.clone()), any()).touched_objects();
    Controller::for_stream(config_stream, configs.store.clone())
        .with_config(w.config())
        .owns(Api::<ConfigMap>::all(client.clone()), config_labels.clone())
        .owns(Api::<Secret>::all(client.clone()), config_labels)
        .watches_stream(secrets_meta, {
            let store = configs.store;
            move |s: kube::core::PartialObjectMeta<Secret>| {
                let ns = s.namespace();
                let name = s.name_any();
                store
                    .state()
                    .iter()
                    .filter(|c| c.namespace() == ns && c.spec.secrets.iter().any(|e| e.secret_key_ref.name == name))
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            }
        })
        .reconcile_all_on(on_leadership(w.leader.clone()))
        .graceful_shutdown_on(w.shutdown.clone())
        .run(config::reconcile, error_policy, w.ctx.clone())
        .for_each(|_| async {})
        .await;
}
