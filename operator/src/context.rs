//! What every reconcile shares: the client, settings, caches of watched objects, metrics, the
//! event recorder and the leader flag.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use microplane_crds::{Config, Namespace};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::{Error, Result};

/// (kind, namespace, name) of an applied object.
type AppliedKey = (&'static str, String, String);

/// Field manager of everything the operator applies.
pub(crate) const FIELD_MANAGER: &str = "microplane.dev/operator";

/// Settings from flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the gateway, whose pods tenant NetworkPolicies admit.
    pub gateway_namespace: String,
    /// Source mode: git resolution and build Jobs.
    pub source: crate::source::SourceSettings,
    /// How often a healthy object is reconciled again without a change (a backstop for missed
    /// events; it writes nothing when nothing drifted).
    pub resync: std::time::Duration,
    /// Base URL of the gateway, for `status.url` (e.g. `http://localhost:8080`); none: no URL.
    pub gateway_url: Option<String>,
    /// Rotation of tenants' signing keys.
    pub key_rotation: crate::issuer::Rotation,
    /// The operator's own namespace (its Lease's), never a tenant.
    pub operator_namespace: String,
    /// How long a new MicroService's first status may wait while it is only progressing, so that
    /// a rollout that finishes within it costs one status write instead of several (zero: write
    /// every change at once).
    pub status_settle: std::time::Duration,
    /// The least time between two status writes of one object that only report progress (counts,
    /// messages) with every condition's status and reason unchanged (zero: write every change).
    pub status_progress_interval: std::time::Duration,
    /// Reconciles running at once per controller.
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            gateway_namespace: "microplane-system".into(),
            source: Default::default(),
            resync: std::time::Duration::from_secs(600),
            gateway_url: None,
            key_rotation: Default::default(),
            operator_namespace: "microplane-system".into(),
            status_settle: std::time::Duration::ZERO,
            status_progress_interval: std::time::Duration::ZERO,
            concurrency: 16,
        }
    }
}

/// Caches of watched objects, read by reconciles instead of the API server.
#[derive(Clone)]
pub struct Stores {
    /// Deployments owned by MicroServices.
    pub deployments: Store<Deployment>,
    /// Services owned by MicroServices.
    pub services: Store<Service>,
    /// PodDisruptionBudgets owned by MicroServices.
    pub pdbs: Store<PodDisruptionBudget>,
    /// HorizontalPodAutoscalers owned by MicroServices.
    pub hpas: Store<HorizontalPodAutoscaler>,
    /// Pods of MicroServices (label `microplane.dev/service`).
    pub pods: Store<Pod>,
    /// Tenants.
    pub tenants: Store<Namespace>,
    /// Tenants' issuer-key Secrets (label `microplane.dev/issuer-keys`).
    pub issuer_keys: Store<Secret>,
    /// Configs.
    pub configs: Store<Config>,
    /// Build Jobs (label `microplane.dev/build-of`, in the build namespace).
    pub jobs: Store<Job>,
    /// Pods of build Jobs, for their termination messages.
    pub build_pods: Store<Pod>,
}

/// Shared state of the controllers.
pub struct Context {
    /// Client of the API server.
    pub client: Client,
    /// Settings from flags.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// Caches.
    pub stores: Stores,
    recorder: Recorder,
    leader: watch::Receiver<bool>,
    /// What this process last applied: (kind, namespace, name) → (hash of the desired object, the
    /// generation or resourceVersion the API server answered). An unchanged desired object over an
    /// unchanged child is not sent again, so an idle resync writes nothing.
    applied: Mutex<HashMap<AppliedKey, (u64, String)>>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// When this process last wrote each object's status (by uid), for
    /// [`Settings::status_progress_interval`]. Tokio's clock (the monotonic one, which tests can
    /// pause and advance).
    status_written: Mutex<StatusWrites>,
    /// Descriptors discovered through gRPC reflection.
    pub(crate) discovery: std::sync::Arc<crate::discovery::Discovery>,
    /// Git resolutions of source-mode MicroServices.
    pub(crate) resolver: crate::source::Resolver,
}

impl Context {
    /// A context; `leader` tells whether this replica may write.
    pub fn new(client: Client, settings: Settings, stores: Stores, leader: watch::Receiver<bool>) -> Self {
        Self::with_metrics(client, settings, stores, leader, Metrics::default())
    }

    /// A context with the given metrics (whose request counter the client's layer feeds).
    pub(crate) fn with_metrics(
        client: Client,
        settings: Settings,
        stores: Stores,
        leader: watch::Receiver<bool>,
        metrics: Metrics,
    ) -> Self {
        let reporter = Reporter {
            controller: "microplane-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            stores,
            leader,
            applied: Mutex::default(),
            failures: Mutex::default(),
            status_written: Mutex::default(),
            discovery: std::sync::Arc::default(),
            resolver: crate::source::Resolver::default(),
        }
    }

    /// The delay before retrying an object that failed: 1s doubling to 5 minutes.
    pub fn backoff(&self, key: &str) -> std::time::Duration {
        let n = self.failures.lock().map_or(0, |mut m| {
            let n = m.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        });
        const RETRY: microplane_runtime::Backoff =
            microplane_runtime::Backoff::new(std::time::Duration::from_secs(1), std::time::Duration::from_secs(300));
        RETRY.delay(n)
    }

    /// Forgets the failures of an object that reconciled.
    pub(crate) fn succeeded(&self, key: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(key);
        }
    }

    /// Runs one reconcile of `obj` the way every controller does: nothing on a standby (it keeps
    /// watching, never writes), then metrics and the object's backoff bookkeeping.
    pub(crate) async fn instrumented<K: Resource<DynamicType = ()>>(
        &self,
        controller: &'static str,
        obj: &K,
        reconcile: impl std::future::Future<Output = Result<kube::runtime::controller::Action>>,
    ) -> Result<kube::runtime::controller::Action> {
        if !self.is_leader() {
            return Ok(kube::runtime::controller::Action::await_change());
        }
        let started = std::time::Instant::now();
        let result = reconcile.await;
        self.metrics
            .reconciled(controller, started.elapsed(), result.as_ref().err());
        if result.is_ok() {
            self.succeeded(&object_key(obj));
        }
        result
    }

    /// How long a status write that only reports progress must still wait, or `None` to write it
    /// now: the object's status was written by this process less than
    /// [`Settings::status_progress_interval`] ago.
    pub(crate) fn progress_hold(&self, uid: &str, now: tokio::time::Instant) -> Option<std::time::Duration> {
        let interval = self.settings.status_progress_interval;
        if interval.is_zero() {
            return None;
        }
        let written = self.status_written.lock().ok()?.last.get(uid).copied()?;
        interval
            .checked_sub(now.saturating_duration_since(written))
            .filter(|d| !d.is_zero())
    }

    /// Notes a status write of the object `uid` at `now`, for [`Context::progress_hold`].
    pub(crate) fn status_wrote(&self, uid: &str, now: tokio::time::Instant) {
        let interval = self.settings.status_progress_interval;
        if interval.is_zero() {
            return;
        }
        if let Ok(mut w) = self.status_written.lock() {
            w.note(uid, now, interval);
        }
    }

    /// Whether this replica holds the lease (standbys watch but never write).
    pub(crate) fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Checked right before every write: leadership can be lost (or given up on SIGTERM) in the
    /// middle of a reconcile, and from then on this replica must not write.
    pub(crate) fn ensure_leader(&self) -> Result<()> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Server-side applies `desired` unless this process already applied the same object and the
    /// child has not changed since (`current` from a cache). Returns the object as the API server
    /// has it, or `current` when nothing was sent.
    pub(crate) async fn apply<K>(&self, controller: &'static str, current: Option<&K>, desired: &K) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        K::Scope: ApiScope,
    {
        let kind = K::kind(&());
        let kind: &'static str = match kind.as_ref() {
            "Deployment" => "Deployment",
            "Service" => "Service",
            "PodDisruptionBudget" => "PodDisruptionBudget",
            "HorizontalPodAutoscaler" => "HorizontalPodAutoscaler",
            "Namespace" => "Namespace",
            "ResourceQuota" => "ResourceQuota",
            "LimitRange" => "LimitRange",
            "NetworkPolicy" => "NetworkPolicy",
            "RoleBinding" => "RoleBinding",
            "ConfigMap" => "ConfigMap",
            "Secret" => "Secret",
            "AuthRule" => "AuthRule",
            "Job" => "Job",
            _ => "other",
        };
        let name = desired
            .meta()
            .name
            .clone()
            .ok_or(Error::Malformed("desired object without a name"))?;
        let namespace = desired.meta().namespace.clone().unwrap_or_default();
        let hash = hash_of(desired)?;
        let key = (kind, namespace.clone(), name.clone());
        if let Some(current) = current {
            let seen = version_of(current.meta());
            let cached = self.applied.lock().ok().and_then(|m| m.get(&key).cloned());
            if cached.is_some_and(|(h, v)| h == hash && v == seen) {
                return Ok(current.clone());
            }
        }
        self.ensure_leader()?;
        let api: Api<K> = K::Scope::api(self.client.clone(), &namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = api.patch(&name, &params, &Patch::Apply(desired)).await?;
        self.metrics.wrote(controller, kind);
        if let Ok(mut m) = self.applied.lock() {
            m.insert(key, (hash, version_of(applied.meta())));
        }
        Ok(applied)
    }

    /// Server-side applies the whole `status` of an object (field manager [`FIELD_MANAGER`]). An
    /// object deleted meanwhile is fine: there is nothing left to report on.
    pub(crate) async fn patch_status<K>(&self, controller: &'static str, obj: &K, status: &impl Serialize) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
        K::Scope: ApiScope,
    {
        let name = name_of(obj)?;
        let api: Api<K> = K::Scope::api(self.client.clone(), obj.meta().namespace.as_deref().unwrap_or_default());
        self.ensure_leader()?;
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        match api
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                self.metrics.wrote(controller, "status");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Like [`Context::apply`] for objects without a cache: reads the current object first, so an
    /// unchanged one is not written again (a read, never a write, on an idle resync).
    pub(crate) async fn apply_read<K>(&self, controller: &'static str, desired: &K) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
        K::Scope: ApiScope,
    {
        let name = desired
            .meta()
            .name
            .clone()
            .ok_or(Error::Malformed("desired object without a name"))?;
        let api: Api<K> = K::Scope::api(
            self.client.clone(),
            desired.meta().namespace.as_deref().unwrap_or_default(),
        );
        let current = api.get_opt(&name).await?;
        self.apply(controller, current.as_ref(), desired).await
    }

    /// Deletes an object if it exists (orphan cleanup); a missing object is fine.
    pub(crate) async fn delete_if_exists<K>(&self, controller: &'static str, namespace: &str, name: &str) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
        K::Scope: ApiScope,
    {
        self.ensure_leader()?;
        let api: Api<K> = K::Scope::api(self.client.clone(), namespace);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                self.metrics.wrote(controller, "delete");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Publishes an event about `obj`; failures are logged, never fatal.
    pub(crate) async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: microplane_crds::Reason,
        note: String,
        action: &str,
    ) {
        if !self.is_leader() {
            return;
        }
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.as_str().into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }
}

/// The last status write per object (uid). Entries older than the interval hold nothing back, so
/// they are dropped whenever the map has doubled since the last sweep: its size follows the objects
/// written within one interval, not every object ever written.
#[derive(Debug, Default)]
struct StatusWrites {
    last: HashMap<String, tokio::time::Instant>,
    sweep_at: usize,
}

impl StatusWrites {
    fn note(&mut self, uid: &str, now: tokio::time::Instant, interval: std::time::Duration) {
        if let Some(t) = self.last.get_mut(uid) {
            *t = now;
            return;
        }
        self.last.insert(uid.to_string(), now);
        if self.last.len() > self.sweep_at {
            self.last.retain(|_, t| now.saturating_duration_since(*t) < interval);
            self.sweep_at = (2 * self.last.len()).max(1024);
        }
    }
}

/// Namespaced or cluster-scoped `Api` construction from the resource scope.
pub(crate) trait ApiScope {
    /// The `Api` of `K` in `namespace` (ignored for cluster-scoped kinds).
    fn api<K: Resource<Scope = Self, DynamicType = ()>>(client: Client, namespace: &str) -> Api<K>
    where
        Self: Sized;
}

impl ApiScope for k8s_openapi::NamespaceResourceScope {
    fn api<K: Resource<Scope = Self, DynamicType = ()>>(client: Client, namespace: &str) -> Api<K> {
        Api::namespaced(client, namespace)
    }
}

impl ApiScope for k8s_openapi::ClusterResourceScope {
    fn api<K: Resource<Scope = Self, DynamicType = ()>>(client: Client, _: &str) -> Api<K> {
        Api::all(client)
    }
}

fn version_of(meta: &kube::api::ObjectMeta) -> String {
    // Generation moves only with the spec, so status churn (a Deployment's pod counts) does not
    // force a re-apply; kinds without a generation fall back to the resourceVersion.
    match meta.generation {
        Some(g) => format!("g{g}"),
        None => meta.resource_version.clone().unwrap_or_default(),
    }
}

fn hash_of<K: Serialize>(obj: &K) -> Result<u64> {
    let json = serde_json::to_vec(obj)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    Ok(h.finish())
}

/// The name of an object, or a malformed-object error.
pub(crate) fn name_of<K: Resource>(obj: &K) -> Result<String> {
    obj.meta().name.clone().ok_or(Error::Malformed("object without a name"))
}

/// The namespace of a namespaced object, or a malformed-object error.
pub(crate) fn namespace_of<K: ResourceExt>(obj: &K) -> Result<String> {
    obj.namespace()
        .ok_or(Error::Malformed("namespaced object without a namespace"))
}

/// The key of an object in backoff bookkeeping and logs: `Kind/namespace/name`.
pub(crate) fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn status_writes_forget_what_holds_nothing_back() {
        let interval = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut w = StatusWrites::default();
        for i in 0..1024 {
            w.note(&format!("old-{i}"), t0, interval);
        }
        assert_eq!(w.last.len(), 1024, "no sweep before the map passes its threshold");
        // A rewrite of a known object moves its time and never sweeps.
        w.note("old-7", t0 + Duration::from_secs(5), interval);
        assert_eq!(w.last.get("old-7"), Some(&(t0 + Duration::from_secs(5))));
        // The next new object passes the threshold: what is older than the interval goes.
        w.note("new", t0 + Duration::from_secs(5), interval);
        let mut kept: Vec<&str> = w.last.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["new", "old-7"]);
        assert_eq!(w.sweep_at, 1024);
    }
}
