//! The controllers and how they are wired: one kube-runtime `Controller` per kind, reading shared
//! caches, all gated by the leader flag.

pub mod authrule;
pub mod config;
pub mod issuer;
pub mod microservice;
pub mod tenant;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace as CoreNamespace, Pod, ResourceQuota, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, reflector as reflect, watcher};
use kube::{Client, Resource, ResourceExt};
use microplane_crds::{AuthRule, Config, MicroService, Namespace};
use tokio::sync::watch;

use crate::Error;
use crate::context::{Context, Settings, Stores};

/// Reconciles running at once per controller.
pub const CONCURRENCY: u16 = 16;

/// Caches and their watch streams, built before the controllers so reconciles can read them.
pub struct Caches {
    /// The stores, for the Context.
    pub stores: Stores,
    /// Readers to wait on for readiness.
    ms_store: Store<MicroService>,
    rule_store: Store<AuthRule>,
}

/// A stream that yields once each time the leader flag turns true (at start too, when it is), so a
/// new leader reconciles everything.
fn on_leadership(leader: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold((leader, false), |(mut rx, mut was)| async move {
        loop {
            let now = *rx.borrow_and_update();
            if now && !was {
                return Some(((), (rx, true)));
            }
            was = now;
            rx.changed().await.ok()?;
        }
    })
}

/// A watch whose objects lose what no reconcile reads before they reach a cache: managed fields
/// everywhere, and for the children of MicroServices everything but what the status and the
/// "already applied" check use. At 1000 MicroServices this is most of the operator's memory.
fn trimmed<K>(api: Api<K>, wc: watcher::Config) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Trim + 'static,
{
    watcher(api, wc).modify(|o: &mut K| {
        o.meta_mut().managed_fields = None;
        o.meta_mut().annotations = None;
        o.trim();
    })
}

/// What a cached object can do without.
pub trait Trim {
    /// Drops fields no reconcile reads.
    fn trim(&mut self) {}
}
impl Trim for MicroService {}
impl Trim for Namespace {}
impl Trim for Config {}
impl Trim for AuthRule {}
impl Trim for Deployment {
    fn trim(&mut self) {
        // Rollout state needs spec.replicas and status; the apply check needs the generation.
        self.spec.template = Default::default();
    }
}
impl Trim for Job {
    fn trim(&mut self) {
        // The outcome needs the status; the template is never read back.
        if let Some(spec) = self.spec.as_mut() {
            spec.template = Default::default();
        }
    }
}
impl Trim for Service {
    fn trim(&mut self) {
        self.spec = None;
        self.status = None;
    }
}
impl Trim for PodDisruptionBudget {
    fn trim(&mut self) {
        self.spec = None;
        self.status = None;
    }
}
impl Trim for HorizontalPodAutoscaler {
    fn trim(&mut self) {
        self.status = None;
    }
}
impl Trim for Pod {
    fn trim(&mut self) {
        // Only container waiting reasons matter (pod_problem).
        self.spec = None;
        if let Some(st) = self.status.as_mut() {
            *st = k8s_openapi::api::core::v1::PodStatus {
                container_statuses: st.container_statuses.take(),
                init_container_statuses: st.init_container_statuses.take(),
                ..Default::default()
            };
        }
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    );
    let delay = ctx.backoff(&key);
    tracing::warn!(object = %key, category = error.category(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
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
    let name = labels.get(crate::source::job::BUILD_OF_LABEL)?;
    let ns = labels.get(crate::source::job::TENANT_LABEL)?;
    Some(ObjectRef::new(name).within(ns))
}

/// Where the routing snapshots for gateways go.
pub struct Routing {
    /// Receives each new snapshot.
    pub snapshots: watch::Sender<Option<Arc<microplane_sync::v1::Snapshot>>>,
    /// This process's identity in snapshots.
    pub source_id: String,
}

/// Runs every controller and the snapshot publisher until `shutdown` resolves. `on_ready` is called
/// once all caches are synced.
pub async fn run(
    client: Client,
    metrics: crate::metrics::Metrics,
    settings: Settings,
    leader: watch::Receiver<bool>,
    routing: Routing,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_ready: impl FnOnce(Arc<Context>) + Send + 'static,
) {
    let wc = watcher::Config::default().any_semantic();
    let owned = watcher::Config::default()
        .labels(microservice::build::SERVICE_LABEL)
        .any_semantic();

    let (ms_store, ms_writer) = reflector::store();
    let (dep_store, dep_writer) = reflector::store();
    let (svc_store, svc_writer) = reflector::store();
    let (pdb_store, pdb_writer) = reflector::store();
    let (hpa_store, hpa_writer) = reflector::store();
    let (pod_store, pod_writer) = reflector::store();
    let (tenant_store, tenant_writer) = reflector::store();
    let (config_store, config_writer) = reflector::store();
    let (rule_store, rule_writer) = reflector::store();
    // What a MicroService (or AuthRule) reconcile reads about tenants and Configs comes from the same
    // watch that triggers it, so a reconcile never runs on a cache that has not seen its trigger yet.
    let (shared_tenants, shared_tenants_writer) = reflector::store_shared::<Namespace>(1024);
    let (shared_configs, shared_configs_writer) = reflector::store_shared::<Config>(1024);
    let tenant_events = shared_tenants_writer.subscribe();
    let tenant_events_for_rules = shared_tenants_writer.subscribe();
    let config_events = shared_configs_writer.subscribe();
    // Any change to tenants, MicroServices or their EndpointSlices wakes the snapshot publisher.
    let changed = Arc::new(tokio::sync::Notify::new());
    let (rediscovered_tx, rediscovered_rx) = tokio::sync::mpsc::unbounded_channel();
    let discovery = Arc::new(crate::sync::Discovery::new(changed.clone(), rediscovered_tx));
    let (job_store, job_writer) = reflector::store();
    let (build_pod_store, build_pod_writer) = reflector::store();
    let (slice_store, slice_writer) = reflector::store();
    let (keys_store, keys_writer) = reflector::store();
    let keys = {
        let changed = changed.clone();
        reflect(
            keys_writer,
            watcher(
                Api::<Secret>::all(client.clone()),
                watcher::Config::default().labels(issuer::KEYS_LABEL).any_semantic(),
            )
            .modify(|s: &mut Secret| s.metadata.managed_fields = None)
            .default_backoff(),
        )
        .for_each(move |_| {
            changed.notify_one();
            async {}
        })
    };
    let slices = {
        let changed = changed.clone();
        reflect(
            slice_writer,
            watcher(
                Api::<EndpointSlice>::all(client.clone()),
                watcher::Config::default()
                    .labels(microservice::build::SERVICE_LABEL)
                    .any_semantic(),
            )
            .modify(|s: &mut EndpointSlice| s.metadata.managed_fields = None)
            .default_backoff(),
        )
        .for_each(move |_| {
            changed.notify_one();
            async {}
        })
    };
    let (account_store, account_writer) = reflector::store();
    let accounts = {
        let changed = changed.clone();
        reflect(
            account_writer,
            watcher(
                Api::<Secret>::all(client.clone()),
                watcher::Config::default()
                    .fields(&format!("type={}", crate::sync::snapshot::ACCOUNT_TYPE))
                    .any_semantic(),
            )
            .modify(crate::sync::snapshot::hash_account)
            .default_backoff(),
        )
        .for_each(move |_| {
            changed.notify_one();
            async {}
        })
    };
    let feed = {
        let changed_by_tenants = changed.clone();
        let tenants = trimmed(Api::<Namespace>::all(client.clone()), wc.clone())
            .default_backoff()
            .reflect_shared(shared_tenants_writer)
            .inspect(move |_| changed_by_tenants.notify_one());
        let configs = trimmed(Api::<Config>::all(client.clone()), wc.clone())
            .default_backoff()
            .reflect_shared(shared_configs_writer);
        futures::future::join(tenants.for_each(|_| async {}), configs.for_each(|_| async {}))
    };

    let stores = Stores {
        deployments: dep_store.clone(),
        services: svc_store.clone(),
        pdbs: pdb_store.clone(),
        hpas: hpa_store.clone(),
        pods: pod_store.clone(),
        tenants: shared_tenants.clone(),
        configs: shared_configs.clone(),
        issuer_keys: keys_store.clone(),
        jobs: job_store.clone(),
        build_pods: build_pod_store.clone(),
    };
    let sync_metrics = metrics.sync.clone();
    let mut context = Context::with_metrics(client.clone(), settings, stores, leader.clone(), metrics);
    context.discovery = discovery.clone();
    let ctx = Arc::new(context);
    let ccfg = controller::Config::default().concurrency(CONCURRENCY);

    // --- MicroService
    let changed_by_ms = changed.clone();
    let ms_stream = reflect(ms_writer, trimmed(Api::<MicroService>::all(client.clone()), wc.clone()))
        .inspect(move |_| changed_by_ms.notify_one())
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let deployments = reflect(
        dep_writer,
        trimmed(Api::<Deployment>::all(client.clone()), owned.clone()),
    )
    .applied_objects();
    let pods = reflect(pod_writer, trimmed(Api::<Pod>::all(client.clone()), owned.clone()))
        .applied_objects()
        .predicate_filter(pod_signal, Default::default());
    // Build Jobs live in the build namespace (no owner reference across namespaces): their labels
    // name the MicroService.
    let build_ns = ctx.settings.source.build.namespace.clone();
    let built = watcher::Config::default()
        .labels(crate::source::job::BUILD_OF_LABEL)
        .any_semantic();
    let build_jobs = reflect(
        job_writer,
        trimmed(Api::<Job>::namespaced(client.clone(), &build_ns), built.clone()),
    )
    .applied_objects()
    .predicate_filter(job_signal, Default::default());
    let build_pods = reflect(
        build_pod_writer,
        trimmed(Api::<Pod>::namespaced(client.clone(), &build_ns), built),
    )
    .applied_objects()
    .predicate_filter(build_pod_signal, Default::default());
    let ms_in_ns = {
        let store = ms_store.clone();
        move |ns: &str| -> Vec<ObjectRef<MicroService>> {
            store
                .state()
                .iter()
                .filter(|m| m.namespace().as_deref() == Some(ns))
                .map(|m| ObjectRef::from_obj(m.as_ref()))
                .collect()
        }
    };
    let ms_ctrl = Controller::for_stream(ms_stream, ms_store.clone())
        .with_config(ccfg.clone())
        .owns_stream(deployments)
        .owns_stream(reflect(svc_writer, trimmed(Api::<Service>::all(client.clone()), owned.clone())).applied_objects())
        .owns_stream(
            reflect(
                pdb_writer,
                trimmed(Api::<PodDisruptionBudget>::all(client.clone()), owned.clone()),
            )
            .applied_objects(),
        )
        .owns_stream(
            reflect(
                hpa_writer,
                trimmed(Api::<HorizontalPodAutoscaler>::all(client.clone()), owned.clone()),
            )
            .applied_objects(),
        )
        .watches_stream(pods, |pod: Pod| {
            let name = pod.labels().get(microservice::build::SERVICE_LABEL).cloned();
            name.zip(pod.namespace()).map(|(n, ns)| ObjectRef::new(&n).within(&ns))
        })
        .watches_shared_stream(
            futures::stream::iter(tenant_events).flatten(),
            move |t: Arc<Namespace>| ms_in_ns(&t.name_any()),
        )
        .watches_shared_stream(futures::stream::iter(config_events).flatten(), {
            let store = ms_store.clone();
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
        .reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(rediscovered_rx))
        .reconcile_all_on(on_leadership(leader.clone()))
        .graceful_shutdown_on(shutdown.clone())
        .run(microservice::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    // --- Tenant
    let tenant_stream = reflect(
        tenant_writer,
        trimmed(Api::<Namespace>::all(client.clone()), wc.clone()),
    )
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let tenant_ctrl = Controller::for_stream(tenant_stream, tenant_store.clone())
        .with_config(ccfg.clone())
        .owns(
            Api::<ResourceQuota>::all(client.clone()),
            watcher::Config::default().labels(tenant::TENANT_LABEL).any_semantic(),
        )
        .owns(
            Api::<CoreNamespace>::all(client.clone()),
            watcher::Config::default().labels(tenant::TENANT_LABEL).any_semantic(),
        )
        .reconcile_all_on(on_leadership(leader.clone()))
        .graceful_shutdown_on(shutdown.clone())
        .run(tenant::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    // --- Config
    let config_stream = reflect(config_writer, trimmed(Api::<Config>::all(client.clone()), wc.clone()))
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let config_labels = watcher::Config::default()
        .labels("microplane.dev/config")
        .any_semantic();
    // Metadata only: Secret values never reach this process through the watch.
    let secrets_meta = watcher(
        Api::<kube::core::PartialObjectMeta<Secret>>::all(client.clone()),
        wc.clone(),
    )
    .touched_objects();
    let config_ctrl = Controller::for_stream(config_stream, config_store.clone())
        .with_config(ccfg.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), config_labels.clone())
        .owns(Api::<Secret>::all(client.clone()), config_labels)
        .watches_stream(secrets_meta, {
            let store = config_store.clone();
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
        .reconcile_all_on(on_leadership(leader.clone()))
        .graceful_shutdown_on(shutdown.clone())
        .run(config::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    // --- AuthRule
    // Rule changes (deletions included) reach the gateways through the next snapshot.
    let changed_by_rules = changed.clone();
    let rule_stream = reflect(rule_writer, trimmed(Api::<AuthRule>::all(client.clone()), wc.clone()))
        .inspect(move |_| changed_by_rules.notify_one())
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let rule_ctrl = Controller::for_stream(rule_stream, rule_store.clone())
        .with_config(ccfg)
        .watches_shared_stream(futures::stream::iter(tenant_events_for_rules).flatten(), {
            let store = rule_store.clone();
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
        .reconcile_all_on(on_leadership(leader))
        .graceful_shutdown_on(shutdown.clone())
        .run(authrule::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    let orphan_services = ms_store.clone();
    let publisher = {
        let sources = crate::sync::Sources {
            tenants: shared_tenants.clone(),
            services: ms_store.clone(),
            slices: slice_store,
            rules: rule_store.clone(),
            keys: keys_store.clone(),
            accounts: account_store,
            issuer_base: ctx.settings.gateway_url.clone(),
        };
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = crate::sync::publish(sources, discovery, changed, routing.source_id, routing.snapshots, sync_metrics) => {},
                () = shutdown => {},
            }
        }
    };
    let readiness = {
        let ctx = ctx.clone();
        let caches = Caches {
            stores: ctx.stores.clone(),
            ms_store,
            rule_store,
        };
        async move {
            let s = &caches.stores;
            let synced = futures::future::join_all([
                Box::pin(caches.ms_store.wait_until_ready())
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
                Box::pin(caches.rule_store.wait_until_ready()),
                Box::pin(s.deployments.wait_until_ready()),
                Box::pin(s.services.wait_until_ready()),
                Box::pin(s.pdbs.wait_until_ready()),
                Box::pin(s.hpas.wait_until_ready()),
                Box::pin(s.pods.wait_until_ready()),
                Box::pin(s.tenants.wait_until_ready()),
                Box::pin(s.configs.wait_until_ready()),
                Box::pin(s.issuer_keys.wait_until_ready()),
                Box::pin(s.jobs.wait_until_ready()),
                Box::pin(s.build_pods.wait_until_ready()),
            ])
            .await;
            if synced.iter().all(Result::is_ok) {
                tracing::info!("caches synced");
                on_ready(ctx);
            }
        }
    };
    // Watches that feed caches end with the controllers, or a SIGTERM would never finish.
    let slices = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = slices => {},
                () = shutdown => {},
            }
        }
    };
    let feed = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = futures::future::join3(feed, keys, accounts) => {},
                () = shutdown => {},
            }
        }
    };
    // Build Jobs of MicroServices that are gone (no owner reference reaches across namespaces),
    // and their cached resolutions.
    let orphans = {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = microservice::collect_orphan_builds(ctx, orphan_services) => {},
                () = shutdown => {},
            }
        }
    };
    tokio::join!(
        orphans,
        feed,
        slices,
        publisher,
        ms_ctrl,
        tenant_ctrl,
        config_ctrl,
        rule_ctrl,
        readiness
    );
    tracing::info!("controllers stopped");
}
