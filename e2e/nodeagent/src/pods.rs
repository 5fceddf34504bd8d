//! Pods bound to the build node: one supervisor task per pod. Build pods (see [`crate::build`]) are
//! performed; any other pod is refused, as a kubelet refuses a pod it cannot admit: phase Failed,
//! reason [`NOT_A_BUILD_POD`], a message saying why. Deleted pods are stopped (a running build is
//! killed) and their objects removed, the kubelet's last word.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::build::package::Publisher;
use crate::build::pod::{BuildPod, State, Status};
use crate::build::{self, Builder, Credentials, Workdirs};

/// The reason of a pod this node refuses.
pub const NOT_A_BUILD_POD: &str = "NotABuildPod";

/// Settings of the agent.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Name of the Node.
    pub node: String,
    /// Where the build pods' directories (workspace, logs) go.
    pub state_dir: PathBuf,
    /// The builder image: pods whose `build` container runs it are builds this agent performs.
    pub builder_image: String,
    /// Where compiler caches shared between builds go.
    pub build_cache: PathBuf,
    /// How many builds may run at once.
    pub parallel_builds: usize,
    /// Where built images are pushed.
    pub publisher: Publisher,
}

/// What the node does with a pod bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A build pod: clone, build, push.
    Build,
    /// Anything else: marked Failed with [`NOT_A_BUILD_POD`].
    Refuse,
}

impl Plan {
    /// The plan for `pod`, given the builder image that marks build pods.
    pub fn of(pod: &Pod, builder_image: &str) -> Self {
        if build::pod::is_build_pod(pod, builder_image) {
            Self::Build
        } else {
            Self::Refuse
        }
    }
}

/// The status of a refused pod: Failed before any container started, as a kubelet reports a pod
/// it does not admit.
pub fn refusal(node: &str, builder_image: &str) -> Value {
    json!({
        "phase": "Failed",
        "reason": NOT_A_BUILD_POD,
        "message": format!(
            "node {node} is the dev build node: it runs only the operator's build pods (a `build` container of \
             {builder_image}), never other containers; this pod belongs on a real node"
        ),
    })
}

struct Running {
    stop: watch::Sender<bool>,
}

/// The agent: the pods it supervises.
pub struct Agent {
    client: Client,
    settings: Settings,
    pods: Mutex<HashMap<String, Running>>,
    /// Pods whose supervisor has ended: a late watch event showing an earlier state must not run
    /// them again (a finished build would build once more). Locked after `pods`.
    finished: Mutex<HashSet<String>>,
    builder: Builder,
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

/// The directory of a pod: `<state>/pods/<namespace>_<name>_<uid prefix>`.
pub fn pod_dir(state: &std::path::Path, pod: &Pod) -> PathBuf {
    let uid: String = pod.uid().unwrap_or_default().chars().take(8).collect();
    state.join("pods").join(format!(
        "{}_{}_{uid}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    ))
}

impl Agent {
    /// An agent.
    pub fn new(client: Client, settings: Settings) -> Arc<Self> {
        let builder = Builder::new(
            settings.build_cache.clone(),
            settings.publisher.clone(),
            settings.parallel_builds,
            build::Limits::default(),
        );
        Arc::new(Self {
            client,
            settings,
            pods: Mutex::default(),
            finished: Mutex::default(),
            builder,
        })
    }

    /// Watches the pods bound to this node until the stream ends.
    pub async fn run(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", self.settings.node));
        let mut events = watcher(api, wc).default_backoff().touched_objects().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(pod) => self.clone().observe(pod),
                Err(e) => tracing::warn!(error = %e, "pod watch"),
            }
        }
    }

    fn observe(self: Arc<Self>, pod: Pod) {
        let Some(uid) = pod.uid() else { return };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut pods = self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = pods.get(&uid) {
            if deleting {
                let _ = running.stop.send(true);
            }
            return;
        }
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) || self
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&uid);
        if terminal && !deleting {
            return;
        }
        let (stop, stopped) = watch::channel(deleting);
        pods.insert(uid.clone(), Running { stop });
        drop(pods);
        let agent = self.clone();
        tokio::spawn(async move {
            let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            if let Err(e) = agent.supervise(pod, stopped).await {
                tracing::warn!(pod = %name, error = %e, "pod supervisor");
            }
            let mut pods = agent.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            pods.remove(&uid);
            agent
                .finished
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(uid);
        });
    }

    async fn patch_status(&self, pod: &Pod, status: Value) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": status});
        if let Err(e) = api
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::debug!(pod = %pod.name_any(), error = %e, "status update");
        }
    }

    /// Performs or refuses one pod, then, once it is deleted, removes its object.
    async fn supervise(&self, pod: Pod, mut stopped: watch::Receiver<bool>) -> Result<(), String> {
        let result = if *stopped.borrow() {
            // Deleted before it ran here (or finished earlier): only the pod object is left to remove.
            Ok(())
        } else {
            match Plan::of(&pod, &self.settings.builder_image) {
                Plan::Build => {
                    let dir = pod_dir(&self.settings.state_dir, &pod);
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    self.run_build_pod(&pod, &dir, &mut stopped).await
                }
                Plan::Refuse => {
                    tracing::info!(pod = %pod.name_any(), namespace = %pod.namespace().unwrap_or_default(), "not a build pod: refused");
                    self.patch_status(&pod, refusal(&self.settings.node, &self.settings.builder_image))
                        .await;
                    Ok(())
                }
            }
        };
        // The kubelet's last word: the pod object goes once its work is stopped.
        if pod.metadata.deletion_timestamp.is_some() || *stopped.borrow() {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let _ = api.delete(&pod.name_any(), &dp).await;
        }
        result
    }

    /// The data of the source's Secret, once it can be read; `None` when the pod is deleted first.
    /// Until then the clone container waits, saying why (as a kubelet does for a missing Secret
    /// volume).
    async fn secret_data(
        &self,
        pod: &Pod,
        name: &str,
        status: &mut Status,
        stopped: &mut watch::Receiver<bool>,
    ) -> Option<BTreeMap<String, Vec<u8>>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        loop {
            match api.get(name).await {
                Ok(s) => return Some(s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()),
                Err(e) => {
                    status.clone = State::Waiting("CreateContainerConfigError", format!("Secret {name}: {e}"));
                    self.patch_status(pod, status.json(pod)).await;
                    if wait_stop(stopped, Duration::from_secs(3)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Runs a build pod: the clone, then the build (when a build slot is free), reporting each
    /// container's state as a kubelet would; the pod ends Succeeded with the pushed image's digest
    /// as the build container's termination message, or Failed with the tail of the failing step's
    /// log. A deleted pod stops the build at once (its processes are killed).
    async fn run_build_pod(
        &self,
        pod: &Pod,
        dir: &std::path::Path,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let started = now();
        let terminated = |exit_code: i32, message: String, started_at: &Value| State::Terminated {
            exit_code,
            message,
            started_at: started_at.clone(),
            finished_at: now(),
        };
        let mut status = Status {
            started: started.clone(),
            clone: State::Waiting("PodInitializing", String::new()),
            build: State::Waiting("PodInitializing", String::new()),
        };
        let bp = match BuildPod::from_pod(pod) {
            Ok(bp) => bp,
            Err(e) => {
                // Not a pod this node can run: say why on the clone container and fail the pod.
                tracing::warn!(pod = %pod.name_any(), error = %e, "build pod does not follow the contract");
                status.clone = terminated(1, e, &started);
                self.patch_status(pod, status.json(pod)).await;
                return Ok(());
            }
        };
        let dirs = Workdirs {
            workspace: dir.join("volumes").join(&bp.workspace_volume),
            logs: dir.to_path_buf(),
            scratch: dir.join("build"),
        };
        std::fs::create_dir_all(&dirs.workspace).map_err(|e| format!("{}: {e}", dirs.workspace.display()))?;

        let mut spec = bp.spec.clone();
        if let Some(secret) = &bp.credentials_secret {
            let Some(data) = self.secret_data(pod, secret, &mut status, stopped).await else {
                return Ok(());
            };
            match Credentials::from_data(&data) {
                Ok(c) => spec.credentials = Some(c),
                Err(e) => {
                    status.clone = terminated(1, e, &started);
                    self.patch_status(pod, status.json(pod)).await;
                    return Ok(());
                }
            }
        }
        tracing::info!(pod = %pod.name_any(), image = %spec.image, commit = %spec.commit, "building");

        let clone_started = now();
        status.clone = State::Running(clone_started.clone());
        self.patch_status(pod, status.json(pod)).await;
        let cloned = tokio::select! {
            r = self.builder.clone_source(&spec, &dirs) => r,
            () = until_stopped(stopped) => return Ok(()),
        };
        if let Err(f) = cloned {
            tracing::info!(pod = %pod.name_any(), code = f.exit_code, "clone failed");
            status.clone = terminated(f.exit_code, f.message, &clone_started);
            self.patch_status(pod, status.json(pod)).await;
            return Ok(());
        }
        status.clone = terminated(0, String::new(), &clone_started);

        status.build = State::Waiting(
            "ContainerCreating",
            format!("waiting for one of the node's {} build slots", self.builder.parallel()),
        );
        self.patch_status(pod, status.json(pod)).await;
        let _slot = tokio::select! {
            s = self.builder.slot() => s,
            () = until_stopped(stopped) => return Ok(()),
        };
        let build_started = now();
        status.build = State::Running(build_started.clone());
        self.patch_status(pod, status.json(pod)).await;
        let built = tokio::select! {
            r = self.builder.build(&spec, &dirs) => r,
            () = until_stopped(stopped) => return Ok(()),
        };
        status.build = match built {
            Ok(digest) => {
                tracing::info!(pod = %pod.name_any(), image = %spec.image, %digest, "built and pushed");
                terminated(0, digest.to_string(), &build_started)
            }
            Err(f) => {
                tracing::info!(pod = %pod.name_any(), code = f.exit_code, "build failed");
                terminated(f.exit_code, f.message, &build_started)
            }
        };
        self.patch_status(pod, status.json(pod)).await;
        Ok(())
    }
}

/// Resolves once the pod is to stop (never, when the agent drops the sender first).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits `d` or until stopped; true when stopped.
async fn wait_stop(stopped: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stopped.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stopped.borrow(),
        r = stopped.changed() => r.is_err() || *stopped.borrow(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILDER: &str = "localhost/microplane/builder";

    fn pod(containers: Value, init: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "micro", "uid": "0123456789"},
            "spec": {"nodeName": "microplane-builder", "initContainers": init, "containers": containers},
        }))
        .unwrap()
    }

    #[test]
    fn performs_build_pods_and_refuses_the_rest() {
        let build = pod(
            json!([{"name": "build", "image": format!("{BUILDER}:dev")}]),
            json!([{"name": "clone", "image": "localhost/microplane/git:dev"}]),
        );
        assert_eq!(Plan::of(&build, BUILDER), Plan::Build);
        // A service's pod, a pod running the builder image under another container name, a pod
        // running it only as an init container, another builder: none is a build.
        for (containers, init) in [
            (
                json!([{"name": "service", "image": "localhost:5000/micro/hello@sha256:00"}]),
                json!(null),
            ),
            (
                json!([{"name": "service", "image": format!("{BUILDER}:dev")}]),
                json!(null),
            ),
            (
                json!([{"name": "main", "image": "busybox"}]),
                json!([{"name": "build", "image": format!("{BUILDER}:dev")}]),
            ),
            (
                json!([{"name": "build", "image": "localhost/microplane/builder2:dev"}]),
                json!(null),
            ),
        ] {
            let p = pod(containers.clone(), init);
            assert_eq!(Plan::of(&p, BUILDER), Plan::Refuse, "{containers}");
        }
    }

    #[test]
    fn a_refused_pod_fails_saying_why() {
        let status: k8s_openapi::api::core::v1::PodStatus =
            serde_json::from_value(refusal("microplane-builder", BUILDER)).unwrap();
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some(NOT_A_BUILD_POD));
        let message = status.message.unwrap();
        assert!(
            message.contains("node microplane-builder is the dev build node"),
            "{message}"
        );
        assert!(message.contains("runs only the operator's build pods"), "{message}");
        assert!(message.contains(BUILDER), "{message}");
        // Failed before anything ran: no container claims to have started.
        assert!(status.container_statuses.is_none());
    }

    #[test]
    fn pod_directories_are_per_pod() {
        let p = pod(json!([]), json!(null));
        assert_eq!(
            pod_dir(std::path::Path::new("/s"), &p),
            PathBuf::from("/s/pods/micro_p_01234567")
        );
    }
}
