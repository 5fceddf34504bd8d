//! The MicroService controller's watches: MicroServices; the children they own (Deployment,
//! Service, PodDisruptionBudget, HPA); their pods (container waiting reasons); tenants and Configs
//! they read; their build Jobs and pods in the build namespace; and finished discoveries.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, predicates, reflector as reflect, watcher};
use microplane_crds::{Config, MicroService, Namespace};
use tokio::sync::mpsc;

use super::{Cache, Wiring, any, error_policy, on_leadership, trimmed};
use crate::controller::microservice;
use crate::labels;

/// The caches of what MicroServices own or start.
pub(in crate::controller) struct Children {
    pub(in crate::controller) deployments: Cache<Deployment>,
    pub(in crate::controller) services: Cache<Service>,
    pub(in crate::controller) pdbs: Cache<PodDisruptionBudget>,
    pub(in crate::controller) hpas: Cache<HorizontalPodAutoscaler>,
    /// Pods of MicroServices.
    pub(in crate::controller) pods: Cache<Pod>,
    /// Build Jobs.
    pub(in crate::controller) jobs: Cache<Job>,
    /// Pods of build Jobs.
    pub(in crate::controller) build_pods: Cache<Pod>,
}

/// Runs the MicroService controller until shutdown.
pub(in crate::controller) async fn controller<S>(
    w: &Wiring<S>,
    microservices: Cache<MicroService>,
    children: Children,
    tenant_events: Option<ReflectHandle<Namespace>>,
    config_events: Option<ReflectHandle<Config>>,
    rediscovered: mpsc::UnboundedReceiver<ObjectRef<MicroService>>,
) where
    S: std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = &w.client;
    let owned = watcher::Config::default().labels(labels::SERVICE_LABEL).any_semantic();
    let changed_by_ms = w.changed.clone();
    let ms_stream = reflect(
        microservices.writer,
        trimmed(Api::<MicroService>::all(client.clone()), any()),
    )
    .inspect(move |_| changed_by_ms.notify_one())
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let deployments = reflect(
        children.deployments.writer,
        trimmed(Api::<Deployment>::all(client.clone()), owned.clone()),
    )
    .applied_objects();
    let pods = reflect(
        children.pods.writer,
        trimmed(Api::<Pod>::all(client.clone()), owned.clone()),
    )
    .applied_objects()
    .predicate_filter(pod_signal, Default::default());
    // Build Jobs live in the build namespace (no owner reference across namespaces): their labels
    // name the MicroService.
    let build_ns = w.ctx.settings.source.build.namespace.clone();
    let built = watcher::Config::default().labels(labels::BUILD_OF_LABEL).any_semantic();
    let build_jobs = reflect(
        children.jobs.writer,
        trimmed(Api::<Job>::namespaced(client.clone(), &build_ns), built.clone()),
    )
    .applied_objects()
    .predicate_filter(job_signal, Default::default());
    let build_pods = reflect(
        children.build_pods.writer,
        trimmed(Api::<Pod>::namespaced(client.clone(), &build_ns), built),
    )
    .applied_objects()
    .predicate_filter(build_pod_signal, Default::default());
    let ms_in_ns = {
        let store = microservices.store.clone();
        move |ns: &str| -> Vec<ObjectRef<MicroService>> {
            store
                .state()
                .iter()
                .filter(|m| m.namespace().as_deref() == Some(ns))
                .map(|m| ObjectRef::from_obj(m.as_ref()))
                .collect()
        }
    };
    Controller::for_stream(ms_stream, microservices.store.clone())
        .with_config(w.config())
        .owns_stream(deployments)
        .owns_stream(
            reflect(
                children.services.writer,
                trimmed(Api::<Service>::all(client.clone()), owned.clone()),
            )
            .applied_objects(),
        )
        .owns_stream(
            reflect(
                children.pdbs.writer,
                trimmed(Api::<PodDisruptionBudget>::all(client.clone()), owned.clone()),
            )
            .applied_objects(),
        )
        .owns_stream(
            reflect(
                children.hpas.writer,
                trimmed(Api::<HorizontalPodAutoscaler>::all(client.clone()), owned.clone()),
            )
            .applied_objects(),
        )
        .watches_stream(pods, |pod: Pod| {
            let name = pod.labels().get(labels::SERVICE_LABEL).cloned();
            name.zip(pod.namespace()).map(|(n, ns)| ObjectRef::new(&n).within(&ns))
        })
        .watches_shared_stream(
            futures::stream::iter(tenant_events).flatten(),
            move |t: Arc<Namespace>| ms_in_ns(&t.name_any()),
        )
        .watches_shared_stream(futures::stream::iter(config_events).flatten(), {
            let store = microservices.store.clone();
            move |c: Arc<Config>| {
                let ns = c.namespace();
                let name = c.name_any();
                store
                    .state()
                    .iter()
                    .filter(|m| m.namespace() == ns && m.spec.config.contains(&name))
                    .map(|m| ObjectRef::from_obj(m.as_ref()))
                    .collect::<Vec<_>>()
            }
        })
        .watches_stream(build_jobs, |job: Job| build_owner(job.labels()))
        .watches_stream(build_pods, |pod: Pod| build_owner(pod.labels()))
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(rediscovered))
        .reconcile_all_on(on_leadership(w.leader.clone()))
        .graceful_shutdown_on(w.shutdown.clone())
        .run(microservice::reconcile, error_policy, w.ctx.clone())
        .for_each(|_| async {})
        .await;
}

/// Removes build Jobs of MicroServices that are gone (no owner reference reaches across
/// namespaces), and their cached resolutions, until shutdown.
pub(in crate::controller) async fn orphan_builds<S>(w: &Wiring<S>, microservices: Store<MicroService>)
where
    S: std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
{
    super::until(
        microservice::collect_orphan_builds(w.ctx.clone(), microservices),
        w.shutdown.clone(),
    )
    .await;
}

fn pod_signal(pod: &Pod) -> Option<u64> {
    // Pods matter to a MicroService only through container waiting reasons (image pulls, crash loops);
    // readiness reaches it through the Deployment.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for cs in pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()) {
        cs.state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_ref())
            .hash(&mut h);
    }
    Some(h.finish())
}

fn job_signal(job: &Job) -> Option<u64> {
    // A build matters when it finishes.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in job.status.iter().flat_map(|s| s.conditions.iter().flatten()) {
        (&c.type_, &c.status).hash(&mut h);
    }
    Some(h.finish())
}

fn build_pod_signal(pod: &Pod) -> Option<u64> {
    // The termination message of a finished step (digest or log tail).
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let st = pod.status.as_ref();
    for cs in st.iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
    }) {
        let t = cs.state.as_ref().and_then(|s| s.terminated.as_ref());
        (&cs.name, t.map(|t| (t.exit_code, &t.message))).hash(&mut h);
    }
    Some(h.finish())
}

/// The MicroService a build Job or pod belongs to, from its labels.
fn build_owner(labels: &std::collections::BTreeMap<String, String>) -> Option<ObjectRef<MicroService>> {
    let name = labels.get(labels::BUILD_OF_LABEL)?;
    let ns = labels.get(labels::TENANT_LABEL)?;
    Some(ObjectRef::new(name).within(ns))
}
