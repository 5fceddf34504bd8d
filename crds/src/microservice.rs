//! `MicroService`: a deployable service (docs/api.md).

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A deployable service: a prebuilt image or a git source that the platform builds, run as a
/// Deployment and Service and routed by the gateway at `/<name>/...`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microplane.dev",
    version = "v1alpha1",
    kind = "MicroService",
    plural = "microservices",
    shortname = "ms",
    category = "microplane",
    derive = "PartialEq",
    namespaced,
    status = "MicroServiceStatus",
    doc = "A deployable service: a prebuilt image or a git source built by the platform, run as a Deployment and Service and routed by the gateway at /<name>/....",
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Ready condition"}"#,
    printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas"}"#,
    printcolumn = r#"{"name": "Commit", "type": "string", "jsonPath": ".status.commit", "priority": 1, "description": "Resolved git commit"}"#,
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".status.url", "description": "Where the gateway serves it"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.image) != has(self.source)").message("exactly one of spec.image or spec.source must be set"))]
#[serde(rename_all = "camelCase")]
pub struct MicroServiceSpec {
    /// Prebuilt container image reference, e.g. `ghcr.io/acme/helloworld:1.2.0`. Exclusive with `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0 && !self.contains(' ')").message("image must be a non-empty image reference without spaces"))]
    #[schemars(length(max = 1024))]
    pub image: Option<String>,

    /// Git source the platform resolves to a commit and builds into an image. Exclusive with `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,

    /// Wire protocol of the service: `Grpc` (transcoded from HTTP/JSON by the gateway) or `Http` (proxied).
    #[serde(default)]
    pub protocol: Protocol,

    /// Container port the service listens on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Number of pods when `autoscaling` is not set.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Horizontal autoscaling on CPU (creates a HorizontalPodAutoscaler); overrides `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Compute resources of the service container, as in a core container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables of the service container, as in a core container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Names of `Config` objects in the same namespace delivered to the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(c, c.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'))").message("config entries must be names of Config objects (lower-case DNS subdomain names)"))]
    #[schemars(length(max = 32), inner(length(max = 253)))]
    pub config: Vec<String>,

    /// Whether the gateway routes to this service. Unexposed services are reachable only inside the cluster.
    #[serde(default = "default_true")]
    pub expose: bool,
}

fn default_port() -> i32 {
    8080
}
fn default_replicas() -> i32 {
    1
}
fn default_true() -> bool {
    true
}

/// Wire protocol of a service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    /// gRPC; the gateway transcodes HTTP/JSON using the service's reflection descriptors.
    #[default]
    Grpc,
    /// Plain HTTP; the gateway proxies `/<service>/<rest>` to the backend's `/<rest>`.
    Http,
}

/// Where a service's code comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// The git repository, revision and sub-directory holding the service.
    pub git: GitSource,
    /// How the image is built from the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
}

/// A git repository, revision and sub-directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Repository URL: `https://…`, `ssh://…` or `git@host:path`. `http://` and `file://` URLs are
    /// accepted by the schema but refused by the operator unless it runs with
    /// `--allow-insecure-git-urls` (tests and development only).
    #[x_kube(validation = Rule::new("self.matches('^(https://[^ /]+/[^ ]*|ssh://[^ /]+/[^ ]+|git@[^ :/]+:[^ ]+|http://[^ /]+/[^ ]*|file:///[^ ]*)$')").message("url must be https://host/path, ssh://host/path or git@host:path (http:// and file:/// only for tests)"))]
    #[x_kube(validation = Rule::new("!self.matches('^https?://[^/]*@')").message("credentials in the url are refused (they would show in status and events): put them in a Secret named by secretRef"))]
    #[schemars(length(max = 2048))]
    pub url: String,

    /// Revision to build; at most one of `branch`, `tag`, `commit`. Absent: the remote's default branch.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<GitRef>,

    /// Sub-directory of the repository holding the service: relative, without `..`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')").message("path must be relative to the repository root and must not contain '..'"))]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,

    /// Secret in the same namespace with credentials: `token`, or `username` + `password`, or
    /// `ssh-privatekey` + `known_hosts` (ssh without pinned host keys is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalRef>,

    /// Follow new commits of a branch at this interval (e.g. `1m`, `1h30m`). Absent: resolve on spec change only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$')").message("pollInterval must be a duration such as 30s, 1m or 1h30m"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(ms|s|m|h))+$') || duration(self) >= duration('5s')").message("pollInterval must be at least 5s: every poll asks the git host for its branches"))]
    #[schemars(length(max = 32))]
    pub poll_interval: Option<String>,
}

/// A git revision: at most one of `branch`, `tag`, `commit`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.branch) ? 1 : 0) + (has(self.tag) ? 1 : 0) + (has(self.commit) ? 1 : 0) <= 1").message("at most one of ref.branch, ref.tag and ref.commit may be set"))]
pub struct GitRef {
    /// Branch to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag to build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Commit to build: 7 to 40 hexadecimal characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{7,40}$')").message("commit must be 7 to 40 hexadecimal characters"))]
    #[schemars(length(max = 40))]
    pub commit: Option<String>,
}

/// Reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct LocalRef {
    /// Name of the object.
    pub name: String,
}

/// How an image is built from a source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildSpec {
    /// Build strategy; `Auto` picks `Dockerfile` when one exists, else `Rust` (Cargo.toml), else `Go` (go.mod).
    #[serde(default)]
    pub strategy: BuildStrategy,
    /// Path of the Dockerfile inside `path`, for the `Dockerfile` strategy. Default `Dockerfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
}

/// Build strategy of a source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BuildStrategy {
    /// Detect from the tree: a Dockerfile wins, else Cargo.toml → `Rust`, else go.mod → `Go`.
    #[default]
    Auto,
    /// Build with the Dockerfile.
    Dockerfile,
    /// Build a Rust crate with cargo.
    Rust,
    /// Build a Go module.
    Go,
}

/// Horizontal autoscaling on CPU utilisation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct Autoscaling {
    /// Lower bound of replicas. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: Option<i32>,
    /// Upper bound of replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) to aim for. Default 80.
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
}

/// Lifecycle phase of a MicroService.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing done yet.
    #[default]
    Pending,
    /// Resolving the git source to a commit.
    Resolving,
    /// Building the image.
    Building,
    /// Rolling out the Deployment.
    Deploying,
    /// The current generation is rolled out and available.
    Running,
    /// Cannot progress without a change; see the `Ready` condition's reason.
    Failed,
}

/// Observed state of a MicroService.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Ready`, `SourceReady`, `BuildSucceeded`, `Available`, `Routed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Git commit the running version was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Image that runs, digest-pinned when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pods of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready pods of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Endpoints discovered by gRPC reflection, e.g. `Helloworld.Call`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Where the gateway serves the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Images built from the source, newest first (at most 10): pinning `ref.commit` to one of
    /// these commits rolls back without building again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<BuiltImage>,
}

/// An image built from a commit.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuiltImage {
    /// Full commit id.
    pub commit: String,
    /// Digest-pinned image.
    pub image: String,
    /// Build Job name, a hash of everything that shapes the image.
    pub build: String,
}

/// Condition types of a MicroService.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroServiceConditionType {
    /// Everything below holds for the current generation.
    Ready,
    /// The source resolved to a commit.
    SourceReady,
    /// The image for the commit is built.
    BuildSucceeded,
    /// The Deployment is rolled out and available.
    Available,
    /// The gateway routes to the service.
    Routed,
}

impl MicroServiceConditionType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::SourceReady => "SourceReady",
            Self::BuildSucceeded => "BuildSucceeded",
            Self::Available => "Available",
            Self::Routed => "Routed",
        }
    }
}
