//! The build Job of a resolved source: a pure function of the MicroService, the commit and the
//! build settings. The Job's name is a hash of everything that shapes the image, so a restart or
//! a re-apply never builds the same thing twice.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::Digest as _;

use super::strategy::Strategy;
use crate::labels::{BUILD_OF_LABEL, COMMIT_LABEL, TENANT_LABEL, label_value};

/// Name of the container that builds; its termination message is the digest or the log tail.
pub const BUILD_CONTAINER: &str = "build";
/// Name of the init container that checks out the commit.
pub const CLONE_CONTAINER: &str = "clone";
/// Where the source credentials are mounted in the clone container (only there).
pub const CREDENTIALS_DIR: &str = "/var/run/microplane/git";

/// The builder image `make images` builds (BuildKit and runc from their Go modules).
pub const DEFAULT_BUILDER_IMAGE: &str = "localhost/microplane/buildkit:v0.34.2";
/// The clone image `make images` builds (git, ssh and sh with their libraries).
pub const DEFAULT_CLONE_IMAGE: &str = "localhost/microplane/git:v2.39.5";
/// Where the registry's docker config is mounted in the build container (only there, and only
/// `buildctl` reads it: RUN steps run in containers of their own that never see this path).
pub const REGISTRY_CREDENTIALS_DIR: &str = "/var/run/microplane/registry";
/// Where BuildKit keeps its state in the build container (a volume).
pub const BUILDKIT_ROOT: &str = "/var/lib/buildkit";

/// How and where images are built.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSettings {
    /// Namespace of the build Jobs (tenants' namespaces enforce the restricted pod security
    /// standard, which rootless BuildKit cannot meet).
    pub namespace: String,
    /// Registry and prefix images are pushed to: `<registry>/<tenant>/<service>:<commit>`.
    pub registry: String,
    /// The registry as build pods reach it, when that differs from `registry` (the name nodes
    /// pull by): both must be the same storage. `None`: build pods push to `registry`.
    pub push_registry: Option<String>,
    /// Registry mirrors BuildKit resolves base images through: `(registry, mirror)`, the mirror a
    /// `host[:port][/path]` (e.g. `docker.io` → `registry.internal:5000/mirror/docker.io`).
    pub mirrors: Vec<(String, String)>,
    /// Registries (`host[:port]`) BuildKit reaches over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Image of the build step: BuildKit's `buildkitd` and `buildctl`, `sh`, and a
    /// `buildkit-runc` that runs RUN steps without a new session keyring (see docs/builds.md).
    pub builder_image: String,
    /// Image of the clone step (needs `git` and `sh`).
    pub clone_image: String,
    /// Secret in the build namespace with a `config.json` for the registry (docker config).
    pub registry_secret: Option<String>,
    /// How long a build may run.
    pub deadline_seconds: i64,
    /// How long a finished build Job is kept.
    pub ttl_seconds: i32,
    /// CPU limit of the build step.
    pub cpu_limit: String,
    /// Memory limit of the build step.
    pub memory_limit: String,
    /// Node labels a build pod must match (dedicated build nodes).
    pub node_selector: BTreeMap<String, String>,
    /// Taints build pods tolerate (dedicated build nodes are usually tainted).
    pub tolerations: Vec<Toleration>,
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            namespace: "microplane-builds".into(),
            registry: "localhost:5000".into(),
            push_registry: None,
            mirrors: Vec::new(),
            insecure_registries: Vec::new(),
            builder_image: DEFAULT_BUILDER_IMAGE.into(),
            clone_image: DEFAULT_CLONE_IMAGE.into(),
            registry_secret: None,
            deadline_seconds: 1800,
            ttl_seconds: 3600,
            cpu_limit: "2".into(),
            memory_limit: "4Gi".into(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

/// One build: what the Job is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build<'a> {
    /// Tenant (namespace of the MicroService).
    pub tenant: &'a str,
    /// MicroService name.
    pub service: &'a str,
    /// Repository URL.
    pub url: &'a str,
    /// Full commit id.
    pub commit: &'a str,
    /// Cleaned path in the repository (`""` = root).
    pub path: &'a str,
    /// Strategy.
    pub strategy: Strategy,
    /// Cleaned Dockerfile location relative to the path.
    pub dockerfile: &'a str,
    /// Name of a Secret (in the build namespace) with the source credentials, if any.
    pub credentials: Option<&'a str>,
}

impl Build<'_> {
    /// The image repository of the service: `<registry>/<tenant>/<service>`.
    pub fn repository(&self, settings: &BuildSettings) -> String {
        format!(
            "{}/{}/{}",
            settings.registry.trim_end_matches('/'),
            self.tenant,
            self.service
        )
    }

    /// The tag pushed: `<registry>/<tenant>/<service>:<commit>`.
    pub fn image(&self, settings: &BuildSettings) -> String {
        format!("{}:{}", self.repository(settings), self.commit)
    }

    /// The tag as the build pod pushes it: [`Build::image`] at the push registry.
    pub fn push_image(&self, settings: &BuildSettings) -> String {
        format!("{}:{}", self.push_repository(settings), self.commit)
    }

    /// The layer cache of the service's builds, next to its images: `<push registry>/<tenant>/<service>:buildcache`.
    pub fn cache_image(&self, settings: &BuildSettings) -> String {
        format!("{}:buildcache", self.push_repository(settings))
    }

    fn push_repository(&self, settings: &BuildSettings) -> String {
        let registry = settings.push_registry.as_deref().unwrap_or(&settings.registry);
        format!("{}/{}/{}", registry.trim_end_matches('/'), self.tenant, self.service)
    }

    /// The Job name: `<tenant>-<service>` (cut) + a hash of everything that shapes the image.
    pub fn job_name(&self, settings: &BuildSettings) -> String {
        let mut h = sha2::Sha256::new();
        for part in [
            self.tenant,
            self.service,
            self.url,
            self.commit,
            self.path,
            self.strategy.as_str(),
            self.dockerfile,
            &settings.builder_image,
            &settings.registry,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hash: String = h.finalize().iter().take(5).map(|b| format!("{b:02x}")).collect();
        // 63 characters at most (the pods' job-name label): prefix ≤ 46 + "-build-" + 10.
        let prefix: String = format!("{}-{}", self.tenant, self.service).chars().take(46).collect();
        format!("{}-build-{hash}", prefix.trim_end_matches('-'))
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Checks out the pinned commit into /workspace/src. Credentials are read from files only, never
/// from the command line or the environment.
const CLONE_SCRIPT: &str = r#"set -eu
export HOME=/tmp GIT_TERMINAL_PROMPT=0
creds=/var/run/microplane/git
git init -q /workspace/src
cd /workspace/src
if [ -f "$creds/ssh-privatekey" ]; then
  install -m 600 "$creds/ssh-privatekey" /tmp/id
  export GIT_SSH_COMMAND="ssh -i /tmp/id -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$creds/known_hosts"
elif [ -f "$creds/token" ] || [ -f "$creds/password" ]; then
  git config --global credential.helper '!f() { test "$1" = get || exit 0; d=/var/run/microplane/git; if [ -f $d/token ]; then echo username=x-access-token; echo "password=$(cat $d/token)"; else echo "username=$(cat $d/username)"; echo "password=$(cat $d/password)"; fi; }; f'
fi
git remote add origin "$GIT_URL"
git fetch -q --depth 1 origin "$GIT_COMMIT" || git fetch -q origin
git -c advice.detachedHead=false checkout -q "$GIT_COMMIT"
"#;

/// Starts BuildKit in the build container, builds, pushes the image and the layer cache, and
/// reports the pushed digest as the termination message. The whole build log (`--progress plain`)
/// is the container's log; on failure its tail is the termination message.
const BUILD_SCRIPT: &str = r#"set -eu
run=/tmp/microplane
mkdir -p "$run"
if [ "$BUILD_STRATEGY" = Dockerfile ]; then
  context="$BUILD_CONTEXT"; df="$BUILD_CONTEXT/$BUILD_DOCKERFILE"
else
  printf '%s\n' "$BUILD_GENERATED_DOCKERFILE" > "$run/Dockerfile"
  context=/workspace/src; df="$run/Dockerfile"
fi
printf '%s\n' "$BUILDKITD_CONFIG" > "$run/buildkitd.toml"
addr="unix://$run/buildkitd.sock"
# shellcheck disable=SC2086
buildkitd --config "$run/buildkitd.toml" --addr "$addr" $BUILDKITD_FLAGS > "$run/buildkitd.log" 2>&1 &
i=0
until buildctl --addr "$addr" debug workers > /dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -gt 300 ] || ! kill -0 $! 2> /dev/null; then
    echo "buildkitd did not start:"; cat "$run/buildkitd.log"; exit 1
  fi
  sleep 0.1
done
echo "microplane: building $BUILD_IMAGE ($BUILD_STRATEGY)"
buildctl --addr "$addr" build --progress plain --frontend dockerfile.v0 \
  --local context="$context" --local dockerfile="$(dirname "$df")" --opt filename="$(basename "$df")" \
  --opt build-arg:SOURCE_PATH="$BUILD_PATH" \
  --import-cache type=registry,ref="$BUILD_CACHE" --export-cache type=registry,ref="$BUILD_CACHE",mode=max \
  --output type=image,name="$BUILD_IMAGE",push=true --metadata-file "$run/metadata.json" 2>&1
tr -d ' \n' < "$run/metadata.json" | sed -n 's/.*"containerimage.digest":"\(sha256:[0-9a-f]\{64\}\)".*/\1/p' > /dev/termination-log
test -s /dev/termination-log
echo "microplane: pushed $BUILD_IMAGE@$(cat /dev/termination-log)"
"#;

/// The BuildKit daemon's configuration (`buildkitd.toml`): the registry mirrors and the registries
/// reached over plain HTTP.
pub fn buildkitd_config(settings: &BuildSettings) -> String {
    // A TOML basic string: quotes, backslashes and control characters escaped.
    let quote = |s: &str| {
        let mut q = String::from("\"");
        for c in s.chars() {
            match c {
                '"' | '\\' => {
                    q.push('\\');
                    q.push(c);
                }
                c if c.is_control() => q.push_str(&format!("\\u{:04X}", u32::from(c))),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    let mut hosts: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    for (registry, mirror) in &settings.mirrors {
        hosts.entry(registry.clone()).or_default().0.push(mirror.clone());
        // A mirror on an insecure registry is reached over HTTP too (BuildKit configures it by host).
        let host = mirror.split('/').next().unwrap_or(mirror);
        if settings.insecure_registries.iter().any(|r| r == host) {
            hosts.entry(host.to_string()).or_default().1 = true;
        }
    }
    for r in &settings.insecure_registries {
        hosts.entry(r.clone()).or_default().1 = true;
    }
    let mut out = String::from("# Generated by the operator for this build.\n");
    for (host, (mirrors, http)) in hosts {
        out.push_str(&format!("[registry.{}]\n", quote(&host)));
        if !mirrors.is_empty() {
            let list: Vec<String> = mirrors.iter().map(|m| quote(m)).collect();
            out.push_str(&format!("  mirrors = [{}]\n", list.join(", ")));
        }
        if http {
            out.push_str("  http = true\n");
        }
    }
    out
}

/// The Dockerfile a `Rust` or `Go` source is built with (BuildKit), from the repository root with
/// the source path as `SOURCE_PATH`.
pub fn generated_dockerfile(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Rust => {
            r#"FROM docker.io/library/rust:1-bookworm AS build
ARG SOURCE_PATH=.
WORKDIR /src
COPY . .
RUN cargo install --locked --path "$SOURCE_PATH" --root /out && set -- /out/bin/* && [ "$#" -eq 1 ] && mv "$1" /out/service
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/service /service
USER 65532:65532
ENTRYPOINT ["/service"]"#
        }
        Strategy::Go => {
            r#"FROM docker.io/library/golang:1-bookworm AS build
ARG SOURCE_PATH=.
WORKDIR /src
COPY . .
RUN cd "$SOURCE_PATH" && CGO_ENABLED=0 go build -trimpath -o /out/service .
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/service /service
USER 65532:65532
ENTRYPOINT ["/service"]"#
        }
        Strategy::Dockerfile => "",
    }
}

/// The labels of a build Job and its pods.
pub fn labels(build: &Build<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/component".into(), "build".into()),
        ("app.kubernetes.io/part-of".into(), "microplane".into()),
        ("app.kubernetes.io/managed-by".into(), "microplane-operator".into()),
        (BUILD_OF_LABEL.into(), label_value(build.service)),
        (TENANT_LABEL.into(), label_value(build.tenant)),
        (COMMIT_LABEL.into(), build.commit.into()),
    ])
}

fn restricted(user: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str, limit: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(limit.into())),
            ..Default::default()
        }),
        ..Volume::default()
    }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o400),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The capabilities of the build container (in the pod's user namespace): SYS_ADMIN to mount
/// and create namespaces, and the set BuildKit gives RUN steps (a container cannot grant more
/// than it holds).
pub const BUILDKIT_CAPABILITIES: &[&str] = &[
    "SYS_ADMIN",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "SETFCAP",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
];

/// The build Job.
pub fn desired(build: &Build<'_>, settings: &BuildSettings) -> Job {
    let name = build.job_name(settings);
    let labels = labels(build);
    let context = if build.path.is_empty() {
        "/workspace/src".to_string()
    } else {
        format!("/workspace/src/{}", build.path)
    };

    let mut clone_mounts = vec![
        mount("workspace", "/workspace", false),
        mount("clone-tmp", "/tmp", false),
    ];
    let mut volumes = vec![
        empty_dir("workspace", "4Gi"),
        empty_dir("clone-tmp", "64Mi"),
        empty_dir("build-tmp", "1Gi"),
        empty_dir("buildkit", "8Gi"),
        empty_dir("build-run", "16Mi"),
    ];
    if let Some(secret) = build.credentials {
        volumes.push(secret_volume("git-credentials", secret));
        clone_mounts.push(mount("git-credentials", CREDENTIALS_DIR, true));
    }
    let mut build_mounts = vec![
        mount("workspace", "/workspace", true),
        mount("build-tmp", "/tmp", false),
        mount("buildkit", BUILDKIT_ROOT, false),
        // buildkitd's sockets (/run/buildkit); the root filesystem stays read-only.
        mount("build-run", "/run", false),
    ];
    if let Some(secret) = &settings.registry_secret {
        volumes.push(secret_volume("registry-credentials", secret));
        build_mounts.push(mount("registry-credentials", REGISTRY_CREDENTIALS_DIR, true));
    }

    let clone = Container {
        name: CLONE_CONTAINER.into(),
        image: Some(settings.clone_image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), CLONE_SCRIPT.into()]),
        env: Some(vec![
            env("GIT_URL", build.url),
            env("GIT_COMMIT", build.commit),
            env("GIT_PATH", if build.path.is_empty() { "." } else { build.path }),
        ]),
        volume_mounts: Some(clone_mounts),
        security_context: Some(restricted(65532)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), Quantity("1".into())),
                ("memory".into(), Quantity("512Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let mut build_env = vec![
        env("BUILD_STRATEGY", build.strategy.as_str()),
        env("BUILD_CONTEXT", &context),
        env("BUILD_PATH", if build.path.is_empty() { "." } else { build.path }),
        env("BUILD_IMAGE", &build.push_image(settings)),
        env("BUILD_CACHE", &build.cache_image(settings)),
        env("BUILDKITD_CONFIG", &buildkitd_config(settings)),
        // RUN steps share the pod's network (and its NetworkPolicy); BuildKit's process sandbox
        // stays on: each RUN step is a runc container of its own.
        env(
            "BUILDKITD_FLAGS",
            &format!("--root {BUILDKIT_ROOT} --oci-worker-binary buildkit-runc --oci-worker-net host"),
        ),
        // RuntimeDefault seccomp refuses pivot_root: RUN steps are jailed with MS_MOVE + chroot.
        env("BUILDKIT_RUNC_FLAGS", "--no-pivot"),
        env("DOCKER_CONFIG", REGISTRY_CREDENTIALS_DIR),
    ];
    match build.strategy {
        Strategy::Dockerfile => build_env.push(env("BUILD_DOCKERFILE", build.dockerfile)),
        s => build_env.push(env("BUILD_GENERATED_DOCKERFILE", generated_dockerfile(s))),
    }
    let builder = Container {
        name: BUILD_CONTAINER.into(),
        image: Some(settings.builder_image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), BUILD_SCRIPT.into()]),
        env: Some(build_env),
        volume_mounts: Some(build_mounts),
        // BuildKit runs as root of the pod's user namespace (`hostUsers: false`): its root and
        // capabilities are an unprivileged range of the node's IDs. It mounts and starts RUN-step
        // containers (SYS_ADMIN over its own namespaces, a fresh /proc: Unmasked); the runtime's
        // default seccomp profile stays on.
        security_context: Some(SecurityContext {
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            run_as_group: Some(0),
            proc_mount: Some("Unmasked".into()),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(BUILDKIT_CAPABILITIES.iter().map(|c| (*c).to_string()).collect()),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("500m".into())),
                ("memory".into(), Quantity("1Gi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), Quantity(settings.cpu_limit.clone())),
                ("memory".into(), Quantity(settings.memory_limit.clone())),
            ])),
            ..ResourceRequirements::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(settings.deadline_seconds),
            ttl_seconds_after_finished: Some(settings.ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    host_users: Some(false),
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    init_containers: Some(vec![clone]),
                    containers: vec![builder],
                    volumes: Some(volumes),
                    node_selector: (!settings.node_selector.is_empty()).then(|| settings.node_selector.clone()),
                    tolerations: (!settings.tolerations.is_empty()).then(|| settings.tolerations.clone()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The Secret holding a build's source credentials in the build namespace, owned by its Job so it
/// goes when the Job does. Only the keys the clone step reads are copied.
pub fn credentials_secret(job: &Job, data: &BTreeMap<String, k8s_openapi::ByteString>) -> Option<Secret> {
    let name = job.metadata.name.clone()?;
    let uid = job.metadata.uid.clone()?;
    let keys = ["token", "username", "password", "ssh-privatekey", "known_hosts"];
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(credentials_name(&name)),
            namespace: job.metadata.namespace.clone(),
            labels: job.metadata.labels.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        ..Secret::default()
    })
}

/// The name of a build's credentials Secret.
pub fn credentials_name(job_name: &str) -> String {
    format!("{job_name}-git")
}

/// How a build Job ended, read from the Job and its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (or not started).
    Running,
    /// Pushed; the digest (`sha256:…`).
    Succeeded(String),
    /// Failed, with the bounded log tail or the Job's reason.
    Failed(String),
}

/// Reads a build's outcome from its Job and the build container's termination message.
pub fn outcome(job: &Job, pods: &[&k8s_openapi::api::core::v1::Pod]) -> Outcome {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let has = |t: &str| conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"));
    let terminated = |container: &str| {
        pods.iter()
            .flat_map(|p| {
                let st = p.status.as_ref();
                st.and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .chain(
                        st.and_then(|s| s.init_container_statuses.as_ref())
                            .into_iter()
                            .flatten(),
                    )
            })
            .filter(|cs| cs.name == container)
            .find_map(|cs| cs.state.as_ref()?.terminated.clone())
    };
    if has("Complete") {
        let digest = terminated(BUILD_CONTAINER)
            .filter(|t| t.exit_code == 0)
            .and_then(|t| t.message)
            .map(|m| m.trim().to_string())
            .filter(|m| is_digest(m));
        return match digest {
            Some(d) => Outcome::Succeeded(d),
            // The pod may not be in the cache yet; its status follows.
            None if pods.is_empty() => Outcome::Running,
            None => Outcome::Failed("the build finished without reporting an image digest".into()),
        };
    }
    if has("Failed") {
        let failed_step = [CLONE_CONTAINER, BUILD_CONTAINER]
            .into_iter()
            .find_map(|c| terminated(c).filter(|t| t.exit_code != 0).map(|t| (c, t)));
        let reason = conditions
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Failed"))
            .map(|c| {
                format!(
                    "{}: {}",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        return Outcome::Failed(match failed_step {
            Some((step, t)) => {
                let tail = tail(t.message.as_deref().unwrap_or(""), 20, 1500);
                // The whole log stays with the build pod (its container's log) until the Job's TTL.
                let whole = match (job.metadata.namespace.as_deref(), job.metadata.name.as_deref()) {
                    (Some(ns), Some(name)) => format!(" (whole log: kubectl logs -n {ns} job/{name} -c {step})"),
                    _ => String::new(),
                };
                if tail.is_empty() {
                    format!("step {step} exited with code {}{whole}", t.exit_code)
                } else {
                    format!("step {step} exited with code {}{whole}:\n{tail}", t.exit_code)
                }
            }
            None => format!("the build Job failed ({})", reason.trim_end_matches([':', ' '])),
        });
    }
    Outcome::Running
}

/// Whether a string is an image digest `sha256:<64 hex>`.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The last `lines` lines of `text`, at most `bytes` bytes (cut at a character boundary).
pub fn tail(text: &str, lines: usize, bytes: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if out.len() > bytes {
        let mut start = out.len() - bytes;
        while !out.is_char_boundary(start) {
            start += 1;
        }
        out = format!("…{}", &out[start..]);
    }
    out
}

/// Why the value of a build flag (`--build-toleration`, `--build-node-selector`,
/// `--build-mirror`) cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// A toleration's effect is not one Kubernetes knows.
    #[error("toleration {0:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute")]
    TolerationEffect(String),
    /// A toleration without a key.
    #[error("toleration {0:?}: the key is empty")]
    TolerationKey(String),
    /// A node selector entry that is not `key=value`.
    #[error("node selector {0:?}: expected key=value")]
    NodeSelector(String),
    /// A mirror that is not `registry=host[:port][/path]`.
    #[error("mirror {0:?}: expected registry=host[:port][/path]")]
    Mirror(String),
}

/// Parses a toleration as the flag `--build-toleration` takes it: `key[=value]:Effect`, or
/// `key[=value]` for every effect. Without a value the toleration matches any value (`Exists`).
pub fn parse_toleration(s: &str) -> Result<Toleration, FlagError> {
    let (kv, effect) = match s.rsplit_once(':') {
        Some((kv, e)) => match e {
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => (kv, Some(e.to_string())),
            _ => {
                return Err(FlagError::TolerationEffect(s.to_string()));
            }
        },
        None => (s, None),
    };
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(FlagError::TolerationKey(s.to_string()));
    }
    Ok(Toleration {
        key: Some(key.to_string()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.into()),
        value,
        effect,
        toleration_seconds: None,
    })
}

/// Parses a node selector entry as the flag `--build-node-selector` takes it: `key=value`.
pub fn parse_label(s: &str) -> Result<(String, String), FlagError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(FlagError::NodeSelector(s.to_string())),
    }
}

/// Parses a registry mirror as the flag `--build-mirror` takes it: `registry=host[:port][/path]`.
pub fn parse_mirror(s: &str) -> Result<(String, String), FlagError> {
    match s.split_once('=') {
        Some((r, m)) if !r.is_empty() && !m.is_empty() && !r.contains('/') => Ok((r.to_string(), m.to_string())),
        _ => Err(FlagError::Mirror(s.to_string())),
    }
}

#[cfg(test)]
mod placement_tests {
    use super::*;

    #[test]
    fn tolerations_parse_like_kubectl_taints() {
        let t = parse_toleration("microplane.dev/builder=dev:NoSchedule").unwrap();
        assert_eq!(t.key.as_deref(), Some("microplane.dev/builder"));
        assert_eq!(t.operator.as_deref(), Some("Equal"));
        assert_eq!(t.value.as_deref(), Some("dev"));
        assert_eq!(t.effect.as_deref(), Some("NoSchedule"));
        let any = parse_toleration("dedicated").unwrap();
        assert_eq!(any.operator.as_deref(), Some("Exists"));
        assert_eq!((any.value, any.effect), (None, None));
        assert!(
            parse_toleration("k=v:Sometimes")
                .unwrap_err()
                .to_string()
                .contains("effect")
        );
        assert!(
            parse_toleration("=v:NoSchedule")
                .unwrap_err()
                .to_string()
                .contains("key")
        );
        assert_eq!(parse_label("a=b").unwrap(), ("a".into(), "b".into()));
        assert!(parse_label("ab").is_err());
    }

    #[test]
    fn mirrors_parse_as_registry_equals_mirror() {
        assert_eq!(
            parse_mirror("docker.io=reg:5000/mirror/docker.io").unwrap(),
            ("docker.io".into(), "reg:5000/mirror/docker.io".into())
        );
        for bad in ["docker.io", "=reg:5000", "docker.io=", "a/b=reg"] {
            assert!(
                parse_mirror(bad).unwrap_err().to_string().contains("registry=host"),
                "{bad}"
            );
        }
    }

    #[test]
    fn buildkitd_config_names_mirrors_and_plain_http_registries() {
        let settings = BuildSettings {
            mirrors: vec![
                ("docker.io".into(), "reg.svc:5000/mirror/docker.io".into()),
                ("gcr.io".into(), "reg.svc:5000/mirror/gcr.io".into()),
            ],
            insecure_registries: vec!["reg.svc:5000".into()],
            ..BuildSettings::default()
        };
        assert_eq!(
            buildkitd_config(&settings),
            "# Generated by the operator for this build.\n\
             [registry.\"docker.io\"]\n  mirrors = [\"reg.svc:5000/mirror/docker.io\"]\n\
             [registry.\"gcr.io\"]\n  mirrors = [\"reg.svc:5000/mirror/gcr.io\"]\n\
             [registry.\"reg.svc:5000\"]\n  http = true\n"
        );
        // Nothing configured: the defaults of BuildKit (HTTPS, no mirror).
        assert_eq!(
            buildkitd_config(&BuildSettings::default()),
            "# Generated by the operator for this build.\n"
        );
        // A quote in a value cannot end the TOML string.
        let odd = BuildSettings {
            insecure_registries: vec!["a\"]\nx = [\"b".into()],
            ..BuildSettings::default()
        };
        assert!(
            buildkitd_config(&odd).contains(r#"[registry."a\"]\u000Ax = [\"b"]"#),
            "{}",
            buildkitd_config(&odd)
        );
    }

    #[test]
    fn builds_push_where_pods_reach_the_registry_and_nodes_pull_by_its_name() {
        let settings = BuildSettings {
            push_registry: Some("reg.svc:5000".into()),
            ..BuildSettings::default()
        };
        let b = Build {
            tenant: "acme",
            service: "hello",
            url: "https://example.com/r.git",
            commit: "c0ffee",
            path: "",
            strategy: Strategy::Go,
            dockerfile: "Dockerfile",
            credentials: None,
        };
        assert_eq!(b.push_image(&settings), "reg.svc:5000/acme/hello:c0ffee");
        assert_eq!(b.cache_image(&settings), "reg.svc:5000/acme/hello:buildcache");
        assert_eq!(b.repository(&settings), "localhost:5000/acme/hello");
        assert_eq!(
            b.push_image(&BuildSettings::default()),
            "localhost:5000/acme/hello:c0ffee"
        );
    }
}
