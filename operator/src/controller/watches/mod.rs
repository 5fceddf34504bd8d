//! How the controllers are wired to the API server: the caches every reconcile reads (created
//! before the controllers, so the [`Context`] can hold them), one module per controller with the
//! watches that trigger it, and the watches that feed the routing snapshot.

pub(super) mod authrule;
pub(super) mod config;
pub(super) mod microservice;
pub(super) mod routing;
pub(super) mod tenant;

use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use microplane_crds::{AuthRule, Config, MicroService, Namespace};
use tokio::sync::{Notify, watch};

use crate::Error;
use crate::context::{Context, Stores};

/// What every controller's wiring needs.
pub(super) struct Wiring<S> {
    /// Client of the API server.
    pub(super) client: Client,
    /// The shared state of reconciles.
    pub(super) ctx: Arc<Context>,
    /// The leader flag: a new leader reconciles everything.
    pub(super) leader: watch::Receiver<bool>,
    /// Resolves on shutdown.
    pub(super) shutdown: S,
    /// Woken by any change the routing snapshot depends on.
    pub(super) changed: Arc<Notify>,
}

impl<S> Wiring<S> {
    /// The controller configuration every controller runs with.
    pub(super) fn config(&self) -> controller::Config {
        controller::Config::default().concurrency(self.ctx.settings.concurrency.max(1))
    }
}

/// A cache and the writer that fills it.
pub(super) struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub(super) store: Store<K>,
    pub(super) writer: Writer<K>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Cache<K> {
    fn new() -> Self {
        let (store, writer) = reflector::store();
        Self { store, writer }
    }
}

/// Every cache, before any watch fills it.
pub(super) struct Caches {
    /// MicroServices.
    pub(super) microservices: Cache<MicroService>,
    /// Children of MicroServices, their pods, and build Jobs and pods.
    pub(super) children: microservice::Children,
    /// Tenants, as the tenant controller reads them.
    pub(super) tenants: Cache<Namespace>,
    /// Configs, as the Config controller reads them.
    pub(super) configs: Cache<Config>,
    /// AuthRules.
    pub(super) rules: Cache<AuthRule>,
    /// Tenants and Configs as MicroService and AuthRule reconciles read them, and what wakes them.
    pub(super) shared: Shared,
    /// Their events.
    pub(super) events: Events,
    /// What only the routing snapshot reads.
    pub(super) routing: routing::Caches,
}

/// Tenants and Configs fed by one watch each whose events also trigger reconciles, so a reconcile
/// never runs on a cache that has not seen its trigger yet.
pub(super) struct Shared {
    /// Tenants.
    pub(super) tenants: Store<Namespace>,
    pub(super) tenants_writer: Writer<Namespace>,
    /// Configs.
    pub(super) configs: Store<Config>,
    pub(super) configs_writer: Writer<Config>,
}

/// The events of the shared tenant and Config watches, for the controllers they trigger.
pub(super) struct Events {
    /// Tenant events for the MicroService controller.
    pub(super) tenant_events: Option<ReflectHandle<Namespace>>,
    /// Tenant events for the AuthRule controller.
    pub(super) tenant_events_for_rules: Option<ReflectHandle<Namespace>>,
    /// Config events for the MicroService controller.
    pub(super) config_events: Option<ReflectHandle<Config>>,
}

impl Caches {
    /// Empty caches.
    pub(super) fn new() -> Self {
        let (tenants, tenants_writer) = reflector::store_shared::<Namespace>(1024);
        let (configs, configs_writer) = reflector::store_shared::<Config>(1024);
        let tenant_events = tenants_writer.subscribe();
        let tenant_events_for_rules = tenants_writer.subscribe();
        let config_events = configs_writer.subscribe();
        Self {
            microservices: Cache::new(),
            children: microservice::Children {
                deployments: Cache::new(),
                services: Cache::new(),
                pdbs: Cache::new(),
                hpas: Cache::new(),
                pods: Cache::new(),
                jobs: Cache::new(),
                build_pods: Cache::new(),
            },
            tenants: Cache::new(),
            configs: Cache::new(),
            rules: Cache::new(),
            shared: Shared {
                tenants,
                tenants_writer,
                configs,
                configs_writer,
            },
            events: Events {
                tenant_events,
                tenant_events_for_rules,
                config_events,
            },
            routing: routing::Caches {
                keys: Cache::new(),
                slices: Cache::new(),
                accounts: Cache::new(),
            },
        }
    }

    /// The caches reconciles read, for the [`Context`].
    pub(super) fn stores(&self) -> Stores {
        let c = &self.children;
        Stores {
            deployments: c.deployments.store.clone(),
            services: c.services.store.clone(),
            pdbs: c.pdbs.store.clone(),
            hpas: c.hpas.store.clone(),
            pods: c.pods.store.clone(),
            tenants: self.shared.tenants.clone(),
            configs: self.shared.configs.clone(),
            issuer_keys: self.routing.keys.store.clone(),
            jobs: c.jobs.store.clone(),
            build_pods: c.build_pods.store.clone(),
        }
    }
}

/// Calls `on_ready` once every cache a reconcile or the snapshot reads is synced.
pub(super) async fn readiness(
    ctx: Arc<Context>,
    microservices: Store<MicroService>,
    rules: Store<AuthRule>,
    on_ready: impl FnOnce(Arc<Context>) + Send + 'static,
) {
    let s = &ctx.stores;
    let synced = futures::future::join_all([
        Box::pin(microservices.wait_until_ready()) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
        Box::pin(rules.wait_until_ready()),
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

/// A stream that yields once each time the leader flag turns true (at start too, when it is), so a
/// new leader reconciles everything.
pub(super) fn on_leadership(leader: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send {
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
pub(super) fn trimmed<K>(
    api: Api<K>,
    wc: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Trim + 'static,
{
    watcher(api, wc).modify(|o: &mut K| {
        o.meta_mut().managed_fields = None;
        o.meta_mut().annotations = None;
        o.trim();
    })
}

/// Every object of a kind, any version (`resourceVersion=0`: from the API server's cache).
pub(super) fn any() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// What a cached object can do without.
pub(super) trait Trim {
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

/// The retry of an object whose reconcile failed: logged, then backed off per object.
pub(super) fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
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

/// Runs `task` until it ends or `shutdown` resolves.
pub(super) async fn until<S: std::future::Future<Output = ()>>(task: impl std::future::Future, shutdown: S) {
    tokio::select! {
        _ = task => {},
        () = shutdown => {},
    }
}
