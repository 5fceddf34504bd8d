//! Helpers for end-to-end suites against the real local control plane (`e2e/scripts/`).
//!
//! A suite calls [`Cluster::connect`] (which fails, never skips, when no control plane answers), gives
//! each test its own [`TestNamespace`], and waits on conditions with [`wait_for`] and a timeout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace as CoreNamespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiResource, Scope};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Config, Resource};

pub mod gateway;
pub mod git;
pub mod gitops;
pub mod node;
pub mod operator;

/// Errors of the e2e helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No control plane to talk to.
    #[error("no control plane: {0} (start one with `make up`, or run `make test`)")]
    NoControlPlane(String),
    /// A Kubernetes API call failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// A wait ran out of time.
    #[error("timed out after {1:?} waiting for {0}")]
    Timeout(String, Duration),
    /// A manifest could not be read or understood.
    #[error("manifest: {0}")]
    Manifest(String),
    /// kubectl could not be run.
    #[error("kubectl: {0}")]
    Kubectl(String),
    /// A stop, kill or restart a helper asked for did not happen (the process still runs, the pod
    /// was not replaced, the Lease did not move).
    #[error("not confirmed: {0}")]
    Unconfirmed(String),
}

/// Result of the e2e helpers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Field manager of objects the suites apply.
pub const FIELD_MANAGER: &str = "microplane.dev/e2e";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The environment's `netns.env` (written by `e2e/scripts/netns-up.sh`): `KEY=value` lines.
fn netns_env(key: &str) -> Option<String> {
    let state = std::env::var_os("MICROPLANE_STATE")?;
    let text = std::fs::read_to_string(Path::new(&state).join("netns.env")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// The host's address as pods see it: the host end of the node's veth when the environment has a
/// real node, else loopback (unit tier). Servers a test runs for the operator or the gateway (git,
/// JWKS) listen here, since both run as pods on the node.
pub fn host_ip() -> std::net::Ipv4Addr {
    netns_env("HOST_IP")
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST)
}

/// The real node's address (reachable from the host), when the environment has one.
pub fn node_ip() -> Option<std::net::Ipv4Addr> {
    netns_env("NODE_IP").and_then(|ip| ip.parse().ok())
}

/// A connection to the control plane under test.
#[derive(Clone)]
pub struct Cluster {
    /// Client with the admin credentials.
    pub client: Client,
    /// Admin kubeconfig file.
    pub kubeconfig: PathBuf,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects with `$KUBECONFIG` (set by `make test`), checking the API server answers.
    pub async fn connect() -> Result<Self> {
        let path = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .ok_or_else(|| Error::NoControlPlane("KUBECONFIG is not set".into()))?;
        let kc = Kubeconfig::read_from(&path).map_err(|e| Error::NoControlPlane(format!("{}: {e}", path.display())))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::NoControlPlane(e.to_string()))?;
        let client = Client::try_from(config)?;
        client
            .apiserver_version()
            .await
            .map_err(|e| Error::NoControlPlane(format!("API server does not answer: {e}")))?;
        Ok(Self {
            client,
            kubeconfig: path,
        })
    }

    /// Runs kubectl (`$KUBECTL`, else from `PATH`) against this cluster; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<(bool, String, String)> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut child = Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Kubectl(format!("{bin}: {e}")))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(|e| Error::Kubectl(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| Error::Kubectl(e.to_string()))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Server-side applies every document of a YAML stream, placing namespaced objects in `namespace`
    /// when given. Returns the applied objects, or the first error.
    pub async fn apply_yaml(&self, yaml: &str, namespace: Option<&str>) -> Result<Vec<DynamicObject>> {
        let mut applied = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(doc).map_err(|e| Error::Manifest(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let mut obj: DynamicObject = serde_json::from_value(value).map_err(|e| Error::Manifest(e.to_string()))?;
            let gvk = obj
                .types
                .as_ref()
                .ok_or_else(|| Error::Manifest("document without apiVersion/kind".into()))
                .and_then(|t| kube::core::GroupVersionKind::try_from(t).map_err(|e| Error::Manifest(e.to_string())))?;
            let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
            let name = obj
                .metadata
                .name
                .clone()
                .ok_or_else(|| Error::Manifest("document without a name".into()))?;
            let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
                let ns = namespace
                    .map(str::to_owned)
                    .or_else(|| obj.metadata.namespace.clone())
                    .unwrap_or_else(|| "default".into());
                obj.metadata.namespace = Some(ns.clone());
                Api::namespaced_with(self.client.clone(), &ns, &ar)
            } else {
                Api::all_with(self.client.clone(), &ar)
            };
            let params = PatchParams::apply(FIELD_MANAGER).force();
            applied.push(api.patch(&name, &params, &Patch::Apply(&obj)).await?);
        }
        Ok(applied)
    }

    /// Creates one object from YAML (the first document) in `namespace`, as `kubectl create` would.
    pub async fn create_yaml(&self, yaml: &str, namespace: &str) -> Result<DynamicObject> {
        let mut obj: DynamicObject = serde_yaml::from_str(yaml).map_err(|e| Error::Manifest(e.to_string()))?;
        let types = obj
            .types
            .clone()
            .ok_or_else(|| Error::Manifest("document without apiVersion/kind".into()))?;
        let gvk = kube::core::GroupVersionKind::try_from(&types).map_err(|e| Error::Manifest(e.to_string()))?;
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            obj.metadata.namespace = Some(namespace.into());
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        Ok(api.create(&PostParams::default(), &obj).await?)
    }

    /// The API resource of a Microplane kind.
    pub fn api_resource<K: Resource<DynamicType = ()>>() -> ApiResource {
        ApiResource::erase::<K>(&())
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name with the given prefix: `<prefix>-<pid>-<n>`, a DNS label.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A core Namespace of one test, deleted (without waiting) when dropped.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    cluster: Cluster,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-…` labelled `microplane.dev/e2e=true`.
    pub async fn new(cluster: &Cluster, prefix: &str) -> Result<Self> {
        let name = unique_name(&format!("e2e-{prefix}"));
        let api: Api<CoreNamespace> = Api::all(cluster.client.clone());
        let ns: CoreNamespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"microplane.dev/e2e": "true"}}
        }))
        .map_err(|e| Error::Manifest(e.to_string()))?;
        api.create(&PostParams::default(), &ns).await?;
        Ok(Self {
            name,
            cluster: cluster.clone(),
        })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Deleting through the async client from Drop could block the runtime that owns its
        // connections; kubectl is synchronous and leaves the wait to the namespace controller.
        let _ = self.cluster.kubectl(
            &["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"],
            None,
        );
    }
}

/// Waits until `cond` holds for the named object, at most `timeout`.
pub async fn wait_for<K>(api: &Api<K>, name: &str, cond: impl Condition<K>, timeout: Duration) -> Result<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => Err(Error::Timeout(format!("{name} (deleted)"), timeout)),
        Ok(Err(e)) => Err(Error::Timeout(format!("{name}: {e}"), timeout)),
        Err(_) => Err(Error::Timeout(name.to_owned(), timeout)),
    }
}

/// Installs (server-side applies) the CRDs generated from the types and waits until all are Established.
pub async fn install_crds(cluster: &Cluster, timeout: Duration) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in microplane_crds::generate::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        wait_for(&api, &name, kube::runtime::conditions::is_crd_established(), timeout).await?;
    }
    Ok(())
}

/// Names of the fake Nodes kwok manages: `kwok-node-0`, `kwok-node-1`, …
pub const KWOK_NODE_PREFIX: &str = "kwok-node-";

/// The annotation (key, value) by which kwok (started by `controlplane-up.sh`) picks its Nodes.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// How long [`ensure_kwok_nodes`] waits for each Node to become Ready.
pub const KWOK_NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The manifest of one kwok Node, shared with `e2e/scripts/kwok-nodes.sh`.
const KWOK_NODE_YAML: &str = include_str!("../kwok/node.yaml");

/// Taint of the e2e suites' kwok nodes (see [`ensure_kwok_nodes`]).
pub const KWOK_TAINT: &str = "microplane.dev/simulated";

/// Server-side applies (idempotently) `n` fake Nodes `kwok-node-0..n-1` from `e2e/kwok/node.yaml`
/// (as `e2e/scripts/kwok-nodes.sh` does): annotated for kwok, labelled `type=kwok`, 32 cpu, 256Gi
/// and 250 pods allocatable, and — unlike the script's, which the benchmark uses alone — tainted
/// with [`KWOK_TAINT`], so beside the real node only pods that tolerate it land there. Waits until
/// each is Ready, at most [`KWOK_NODE_READY_TIMEOUT`] per Node; a Node that stays NotReady means
/// kwok is not running.
pub async fn ensure_kwok_nodes(cluster: &Cluster, n: usize) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let api: Api<Node> = Api::all(cluster.client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let names: Vec<String> = (0..n).map(|i| format!("{KWOK_NODE_PREFIX}{i}")).collect();
    for name in &names {
        let mut node: Node = serde_yaml::from_str(&KWOK_NODE_YAML.replace("NODE_NAME", name))
            .map_err(|e| Error::Manifest(format!("e2e/kwok/node.yaml: {e}")))?;
        // Beside the real node, simulated nodes take only pods that ask for them: a MicroService
        // in the e2e suites really runs.
        node.spec.get_or_insert_default().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: KWOK_TAINT.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }]);
        // A create keeps the status (allocatable, capacity), as when a kubelet registers; for a Node
        // that already exists it is applied through the status subresource.
        api.patch(name, &params, &Patch::Apply(&node)).await?;
        api.patch_status(name, &params, &Patch::Apply(&node)).await?;
    }
    for name in &names {
        wait_for(&api, name, is_node_ready, KWOK_NODE_READY_TIMEOUT).await?;
    }
    Ok(())
}

/// Whether the Node's Ready condition is True.
fn is_node_ready(node: Option<&k8s_openapi::api::core::v1::Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == microplane_crds::CondType::Ready && c.status == "True")
        })
}

/// Waits until the named object is gone (absent, or deleted and replaced by one with another uid
/// counts as gone only when `uid` is given), at most `timeout`.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, |o: Option<&K>| o.is_none())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Timeout(format!("{name} to be deleted: {e}"), timeout)),
        Err(_) => Err(Error::Timeout(format!("{name} to be deleted"), timeout)),
    }
}

/// Creates a tenant (`microplane.dev` Namespace) named `<prefix>-…` with `spec`, waits until the
/// operator reports it Ready for its current generation and its core Namespace has the `default`
/// ServiceAccount pods wait for; returns it, deleted when dropped.
pub async fn create_tenant(
    cluster: &Cluster,
    prefix: &str,
    spec: serde_json::Value,
    timeout: Duration,
) -> Result<TestTenant> {
    use microplane_crds::Namespace as Tenant;
    let name = unique_name(prefix);
    let tenants: Api<Tenant> = Api::all(cluster.client.clone());
    let tenant: Tenant = serde_json::from_value(serde_json::json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "Namespace", "metadata": {"name": name}, "spec": spec
    }))
    .map_err(|e| Error::Manifest(e.to_string()))?;
    tenants.create(&PostParams::default(), &tenant).await?;
    let ready = |t: Option<&Tenant>| {
        t.is_some_and(|t| {
            t.status.as_ref().is_some_and(|s| {
                s.observed_generation == t.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == microplane_crds::CondType::Ready && c.status == "True")
            })
        })
    };
    wait_for(&tenants, &name, ready, timeout).await?;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(cluster.client.clone(), &name);
    wait_for(&sas, "default", |sa: Option<&_>| sa.is_some(), timeout).await?;
    Ok(TestTenant {
        name,
        cluster: cluster.clone(),
    })
}

/// A tenant of one test (its name derefs to `str`), deleted (without waiting) when dropped: the
/// operator then deletes its namespace and the pods in it, whose CPU requests the real node needs
/// back for the next suites.
pub struct TestTenant {
    name: String,
    cluster: Cluster,
}

impl TestTenant {
    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl std::ops::Deref for TestTenant {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestTenant {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(
            &[
                "delete",
                "tenants.microplane.dev",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// Server-side applies a MicroService `name` running the workspace's helloworld
/// (`localhost:5000/e2e/helloworld:e2e`, pushed to the node's registry; see [`node::helloworld`]).
pub async fn apply_helloworld(cluster: &Cluster, namespace: &str, name: &str, replicas: i32) -> Result<()> {
    let image = node::helloworld("e2e")?;
    apply_microservice(
        cluster,
        namespace,
        name,
        serde_json::json!({"image": image, "replicas": replicas}),
    )
    .await
}

/// Server-side applies MicroService `name` with `spec` (field manager `e2e`, forced).
pub async fn apply_microservice(cluster: &Cluster, namespace: &str, name: &str, spec: serde_json::Value) -> Result<()> {
    let api: Api<microplane_crds::MicroService> = Api::namespaced(cluster.client.clone(), namespace);
    let ms: microplane_crds::MicroService = serde_json::from_value(serde_json::json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "MicroService", "metadata": {"name": name},
        "spec": spec
    }))
    .map_err(|e| Error::Manifest(e.to_string()))?;
    api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&ms))
        .await?;
    Ok(())
}

/// The pods of MicroService `name` (label `microplane.dev/service`), terminating ones included.
pub async fn microservice_pods(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Vec<k8s_openapi::api::core::v1::Pod>> {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let lp = kube::api::ListParams::default().labels(&format!("microplane.dev/service={name}"));
    Ok(api.list(&lp).await?.items)
}
