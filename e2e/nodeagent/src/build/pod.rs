//! The build pod contract — what the operator's build Job runs — and the status a kubelet would
//! report for it.
//!
//! A build pod has the init container `clone` (env `GIT_URL`, `GIT_COMMIT`, `GIT_PATH`; the
//! workspace at `/workspace`, the source's Secret at `/var/run/microplane/git` when it has one) and
//! the container `build` running the builder image (env `BUILD_STRATEGY`, `BUILD_CONTEXT` under
//! `/workspace/src`, `BUILD_DOCKERFILE`, `BUILD_IMAGE`). It succeeds with the digest as the build
//! container's termination message.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::{BuildSpec, relative_path};

/// The init container that clones.
pub const CLONE: &str = "clone";
/// The container that builds.
pub const BUILD: &str = "build";
/// Where the clone container finds the source's Secret.
pub const CREDENTIALS_MOUNT: &str = "/var/run/microplane/git";

/// Whether the pod is a build this node performs itself: its `build` container runs
/// `builder_image` (any tag or digest of it).
pub fn is_build_pod(pod: &Pod, builder_image: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers.iter().any(|c| {
        c.name == BUILD
            && c.image.as_deref().is_some_and(|image| {
                image
                    .strip_prefix(builder_image)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '@']))
            })
    })
}

/// A build pod's containers, checked and read.
#[derive(Debug, Clone)]
pub struct BuildPod {
    /// What to build (without credentials: they are read from the volume when the clone starts).
    pub spec: BuildSpec,
    /// The volume holding `/workspace`.
    pub workspace_volume: String,
    /// The Secret of the source's credentials (the `secret` volume mounted at
    /// [`CREDENTIALS_MOUNT`]), if any; read from the API, since this node mounts no volumes.
    pub credentials_secret: Option<String>,
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn required(c: &Container, name: &str) -> Result<String, String> {
    env(c, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("container {} has no {name}", c.name))
}

impl BuildPod {
    /// Reads a pod that [`is_build_pod`]; a clear message when it does not follow the contract.
    pub fn from_pod(pod: &Pod) -> Result<Self, String> {
        let spec = pod.spec.as_ref().ok_or("build pod without spec")?;
        let clone = spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == CLONE)
            .ok_or("build pod without the `clone` init container")?;
        let build = spec
            .containers
            .iter()
            .find(|c| c.name == BUILD)
            .ok_or("build pod without the `build` container")?;
        let strategy = required(build, "BUILD_STRATEGY")?.parse()?;
        let mut out = BuildSpec::new(
            &required(clone, "GIT_URL")?,
            &required(clone, "GIT_COMMIT")?,
            &env(clone, "GIT_PATH").unwrap_or_else(|| ".".into()),
            strategy,
            &required(build, "BUILD_IMAGE")?,
        )?;
        out.dockerfile = env(build, "BUILD_DOCKERFILE");

        // BUILD_CONTEXT is a path in the build container: under a mounted volume, in its `src`.
        let context = required(build, "BUILD_CONTEXT")?;
        let (mount, rest) = build
            .volume_mounts
            .iter()
            .flatten()
            .find_map(|m| {
                let base = m.mount_path.trim_end_matches('/');
                let rest = context.strip_prefix(base)?;
                (rest.is_empty() || rest.starts_with('/')).then_some((m, rest.trim_start_matches('/')))
            })
            .ok_or_else(|| format!("BUILD_CONTEXT {context} is not on a volume of the build container"))?;
        let in_src = rest
            .strip_prefix("src")
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .ok_or_else(|| format!("BUILD_CONTEXT {context} is not in the clone ({}/src)", mount.mount_path))?;
        let in_src = in_src.trim_start_matches('/');
        out.context = relative_path("BUILD_CONTEXT", if in_src.is_empty() { "." } else { in_src })?;

        let credentials_secret = match clone
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path.trim_end_matches('/') == CREDENTIALS_MOUNT)
        {
            None => None,
            Some(m) => Some(
                spec.volumes
                    .iter()
                    .flatten()
                    .find(|v| v.name == m.name)
                    .and_then(|v| v.secret.as_ref())
                    .and_then(|s| s.secret_name.clone())
                    .ok_or_else(|| format!("the volume {} at {CREDENTIALS_MOUNT} is not a Secret", m.name))?,
            ),
        };
        Ok(Self {
            spec: out,
            workspace_volume: mount.name.clone(),
            credentials_secret,
        })
    }
}

/// A container's state, as in `ContainerStatus.state`.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not started: `reason` (`PodInitializing`, `ContainerCreating`, …) and a message.
    Waiting(&'static str, String),
    /// Running since the time given.
    Running(Value),
    /// Ended.
    Terminated {
        /// Exit code.
        exit_code: i32,
        /// Termination message.
        message: String,
        /// Start time.
        started_at: Value,
        /// End time.
        finished_at: Value,
    },
}

impl State {
    fn json(&self) -> Value {
        match self {
            Self::Waiting(reason, message) => json!({"waiting": {"reason": reason, "message": message}}),
            Self::Running(at) => json!({"running": {"startedAt": at}}),
            Self::Terminated {
                exit_code,
                message,
                started_at,
                finished_at,
            } => json!({"terminated": {
                "exitCode": exit_code, "reason": if *exit_code == 0 { "Completed" } else { "Error" },
                "message": message, "startedAt": started_at, "finishedAt": finished_at,
            }}),
        }
    }

    fn ended(&self) -> Option<bool> {
        match self {
            Self::Terminated { exit_code, .. } => Some(*exit_code == 0),
            _ => None,
        }
    }
}

/// The status of a build pod at one moment.
#[derive(Debug, Clone)]
pub struct Status {
    /// When the agent started the pod.
    pub started: Value,
    /// The clone container.
    pub clone: State,
    /// The build container.
    pub build: State,
}

impl Status {
    /// The pod phase: Failed when a container failed (`restartPolicy: Never`), Succeeded when the
    /// build succeeded, Running while it runs, else Pending.
    pub fn phase(&self) -> &'static str {
        match (self.clone.ended(), self.build.ended(), &self.build) {
            (Some(false), ..) | (_, Some(false), _) => "Failed",
            (_, Some(true), _) => "Succeeded",
            (_, _, State::Running(_)) => "Running",
            _ => "Pending",
        }
    }

    /// The `status` of `pod`.
    pub fn json(&self, pod: &Pod) -> Value {
        let image = |name: &str| {
            let spec = pod.spec.as_ref();
            let init = spec.and_then(|s| s.init_containers.as_ref());
            spec.map(|s| s.containers.iter())
                .into_iter()
                .flatten()
                .chain(init.into_iter().flatten())
                .find(|c| c.name == name)
                .and_then(|c| c.image.clone())
                .unwrap_or_default()
        };
        let phase = self.phase();
        let terminal = matches!(phase, "Succeeded" | "Failed");
        let running = matches!(self.build, State::Running(_));
        let initialized = self.clone.ended() == Some(true);
        let cond = |t: &str, ok: bool| {
            let mut c = json!({"type": t, "status": if ok {"True"} else {"False"}, "lastTransitionTime": self.started});
            if terminal && !ok && matches!(t, "Ready" | "ContainersReady") {
                c["reason"] = json!("PodCompleted");
            }
            c
        };
        let container = |name: &str, image: &str, state: &State| {
            json!({"name": name, "image": image, "imageID": "", "restartCount": 0,
                   "ready": matches!(state, State::Running(_)), "started": matches!(state, State::Running(_)),
                   "state": state.json()})
        };
        json!({
            "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "startTime": self.started,
            "conditions": [cond("PodScheduled", true), cond("Initialized", initialized),
                           cond("ContainersReady", running), cond("Ready", running)],
            "initContainerStatuses": [container(CLONE, &image(CLONE), &self.clone)],
            "containerStatuses": [container(BUILD, &image(BUILD), &self.build)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::Strategy;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    /// The pod the operator's build Job makes (the contract), with overrides.
    fn pod(builder: &str, context: &str, secret: bool) -> Pod {
        let mut clone_mounts = vec![json!({"name": "workspace", "mountPath": "/workspace"})];
        let mut volumes = vec![json!({"name": "workspace", "emptyDir": {}})];
        if secret {
            clone_mounts.push(json!({"name": "git-credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": true}));
            volumes.push(json!({"name": "git-credentials", "secret": {"secretName": "repo"}}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": "hello-build-0123456", "namespace": "micro",
                         "labels": {"microplane.dev/build-of": "hello", "microplane.dev/commit": SHA}},
            "spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": false, "volumes": volumes,
                "initContainers": [{"name": "clone", "image": "localhost/microplane/git-clone:1",
                    "env": [{"name": "GIT_URL", "value": "http://127.0.0.1:9/r.git"},
                            {"name": "GIT_COMMIT", "value": SHA}, {"name": "GIT_PATH", "value": "services/hello"}],
                    "volumeMounts": clone_mounts}],
                "containers": [{"name": "build", "image": builder, "terminationMessagePolicy": "FallbackToLogsOnError",
                    "env": [{"name": "BUILD_STRATEGY", "value": "Rust"}, {"name": "BUILD_CONTEXT", "value": context},
                            {"name": "BUILD_IMAGE", "value": format!("registry.local/micro/hello:{SHA}")}],
                    "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn recognises_the_builder_image() {
        let builder = "localhost/microplane/builder";
        assert!(is_build_pod(&pod(builder, "/workspace/src", false), builder));
        assert!(is_build_pod(
            &pod("localhost/microplane/builder:v1", "/workspace/src", false),
            builder
        ));
        let pinned = format!("localhost/microplane/builder@sha256:{}", "a".repeat(64));
        assert!(is_build_pod(&pod(&pinned, "/workspace/src", false), builder));
        assert!(!is_build_pod(
            &pod("localhost/microplane/builder-x:1", "/workspace/src", false),
            builder
        ));
        assert!(!is_build_pod(
            &pod("localhost/microplane/helloworld:1", "/workspace/src", false),
            builder
        ));
        let mut renamed = pod(builder, "/workspace/src", false);
        if let Some(s) = renamed.spec.as_mut() {
            s.containers[0].name = "service".into();
        }
        assert!(!is_build_pod(&renamed, builder));
    }

    #[test]
    fn reads_the_contract() {
        let bp = BuildPod::from_pod(&pod("b", "/workspace/src/services/hello", true)).unwrap();
        assert_eq!(bp.spec.git_url, "http://127.0.0.1:9/r.git");
        assert_eq!(bp.spec.commit, SHA);
        assert_eq!(bp.spec.path, "services/hello");
        assert_eq!(bp.spec.context, "services/hello");
        assert_eq!(bp.spec.strategy, Strategy::Rust);
        assert_eq!(bp.spec.image.to_string(), format!("registry.local/micro/hello:{SHA}"));
        assert_eq!(bp.workspace_volume, "workspace");
        assert_eq!(bp.credentials_secret.as_deref(), Some("repo"));
        let root = BuildPod::from_pod(&pod("b", "/workspace/src", false)).unwrap();
        assert_eq!((root.spec.context.as_str(), root.credentials_secret), (".", None));
        let mut not_a_secret = pod("b", "/workspace/src", true);
        if let Some(v) = not_a_secret.spec.as_mut().and_then(|s| s.volumes.as_mut()) {
            v[1].secret = None;
            v[1].empty_dir = Some(Default::default());
        }
        let err = BuildPod::from_pod(&not_a_secret).unwrap_err();
        assert!(
            err.contains("git-credentials at /var/run/microplane/git is not a Secret"),
            "{err}"
        );
        for bad in [
            "/workspace/srcx",
            "/workspace",
            "/elsewhere/src",
            "/workspace/src/../../etc",
            "relative",
        ] {
            let err = BuildPod::from_pod(&pod("b", bad, false)).unwrap_err();
            assert!(err.contains("BUILD_CONTEXT"), "{bad}: {err}");
        }
        let mut no_clone = pod("b", "/workspace/src", false);
        if let Some(s) = no_clone.spec.as_mut() {
            s.init_containers = None;
        }
        assert!(BuildPod::from_pod(&no_clone).unwrap_err().contains("clone"));
    }

    #[test]
    fn reports_like_a_kubelet() {
        let bp = pod("localhost/microplane/builder:1", "/workspace/src", false);
        let t = json!("2026-01-01T00:00:00Z");
        let done = |code: i32, message: &str| State::Terminated {
            exit_code: code,
            message: message.into(),
            started_at: t.clone(),
            finished_at: t.clone(),
        };
        let mut s = Status {
            started: t.clone(),
            clone: State::Running(t.clone()),
            build: State::Waiting("PodInitializing", String::new()),
        };
        assert_eq!(s.phase(), "Pending");
        s.clone = done(0, "");
        s.build = State::Running(t.clone());
        assert_eq!(s.phase(), "Running");
        let j = s.json(&bp);
        assert_eq!(j["conditions"][1]["status"], "True", "initialized");
        assert_eq!(
            j["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(
            j["initContainerStatuses"][0]["image"],
            "localhost/microplane/git-clone:1"
        );
        assert_eq!(j["containerStatuses"][0]["image"], "localhost/microplane/builder:1");
        s.build = done(0, "sha256:abc");
        assert_eq!(s.phase(), "Succeeded");
        let j = s.json(&bp);
        assert_eq!(
            j["containerStatuses"][0]["state"]["terminated"]["message"],
            "sha256:abc"
        );
        assert_eq!(j["conditions"][3]["reason"], "PodCompleted");
        s.build = done(101, "error[E0308]");
        assert_eq!(s.phase(), "Failed");
        assert_eq!(
            s.json(&bp)["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Error"
        );
        s.clone = done(128, "not found");
        s.build = State::Waiting("PodInitializing", String::new());
        assert_eq!(s.phase(), "Failed");
    }
}
