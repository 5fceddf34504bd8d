//! Health for GitOps: what GitOps tools make of Microplane's status, computed by their own code.
//!
//! - **kstatus** (`sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute`, which Flux's health checks
//!   use): the helper built from `e2e/controlplane/kstatus` into `$MICROPLANE_CACHE/kstatus-v…`
//!   ([`kstatus`]).
//! - **Argo CD**: the Lua health checks of `config/argocd/<group>/<Kind>/health.lua`, run by a real
//!   Lua interpreter (`lua5.4`; the scripts keep to Lua 5.1, Argo CD's gopher-lua) with the object
//!   handed over as a Lua table literal, nulls dropped as Argo CD drops them ([`argocd_health`]).
//! - **Flux**: source-controller and kustomize-controller as host processes ([`Flux::ensure`],
//!   `e2e/scripts/flux-up.sh`), and the GitRepository/Kustomization objects the GitOps suite makes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kube::api::{Api, DynamicObject};
use kube::discovery::Scope;
use serde_json::Value;

use crate::{Cluster, repo_root};

static START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Lua interpreter the Argo CD checks run in (Debian's `lua5.4`).
pub const LUA: &str = "lua5.4";

/// The Microplane kinds with an Argo CD health check.
pub const KINDS: [&str; 4] = ["MicroService", "Namespace", "Config", "AuthRule"];

/// The API group of the Microplane kinds.
pub const GROUP: &str = "microplane.dev";

/// Namespace of the Flux objects the suites create (`flux-up.sh` creates it).
pub const FLUX_NAMESPACE: &str = "flux-system";

/// Errors of the GitOps helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool (kstatus, lua, flux-up.sh) could not run or failed.
    #[error("{tool}: {detail}")]
    Tool {
        /// Which.
        tool: String,
        /// What it said.
        detail: String,
    },
    /// A tool printed what it should not.
    #[error("{tool} printed {output:?}")]
    Output {
        /// Which.
        tool: String,
        /// What it printed.
        output: String,
    },
    /// No health check for this kind.
    #[error("no Argo CD health check for {0}")]
    NoHealthCheck(String),
    /// The cluster helpers failed.
    #[error(transparent)]
    Cluster(#[from] crate::Error),
    /// A Kubernetes API call failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

/// Result of the GitOps helpers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A tool's verdict on one object: its status word and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// kstatus: `InProgress`, `Failed`, `Current`, `Terminating`, …; Argo CD: `Healthy`,
    /// `Progressing`, `Degraded`, `Suspended`, `Missing`, `Unknown`.
    pub status: String,
    /// Why.
    pub message: String,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.status, self.message)
    }
}

fn tool(name: &str, detail: impl std::fmt::Display) -> Error {
    Error::Tool {
        tool: name.into(),
        detail: detail.to_string(),
    }
}

/// A `KEY=value` of `e2e/versions.env`.
fn pinned(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(repo_root().join("e2e/versions.env")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().to_string()))
}

/// `$MICROPLANE_CACHE`, as `e2e/scripts/lib.sh` defaults it.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MICROPLANE_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("microplane")
}

/// The kstatus helper: `$KSTATUS_BIN/kstatus`, else the one `build-controlplane.sh` builds.
pub fn kstatus_bin() -> PathBuf {
    let dir = std::env::var_os("KSTATUS_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let version = pinned("KSTATUS_VERSION").unwrap_or_default();
        cache_dir().join(format!("kstatus-v{version}"))
    });
    dir.join("kstatus")
}

/// Runs `program` with `stdin`, returning its stdout; a failure carries its stderr.
fn run(program: &Path, args: &[&str], env: &[(&str, &Path)], stdin: &str) -> Result<String> {
    let name = program.display().to_string();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| tool(&name, e))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.as_bytes()).map_err(|e| tool(&name, e))?;
    }
    let out = child.wait_with_output().map_err(|e| tool(&name, e))?;
    if !out.status.success() {
        return Err(tool(&name, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// kstatus's verdicts on `objects` (each a single object or a `List`), as
/// `(Kind/namespace/name, verdict)` in input order.
pub fn kstatus(objects: &[Value]) -> Result<Vec<(String, Verdict)>> {
    let bin = kstatus_bin();
    let input: String = objects.iter().map(|o| format!("{o}\n")).collect();
    let out = run(&bin, &[], &[], &input)?;
    out.lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next()) {
                (Some(r), Some(status)) => Ok((
                    r.to_string(),
                    Verdict {
                        status: status.to_string(),
                        message: parts.next().unwrap_or_default().to_string(),
                    },
                )),
                _ => Err(Error::Output {
                    tool: "kstatus".into(),
                    output: line.into(),
                }),
            }
        })
        .collect()
}

/// kstatus's verdict on one object.
pub fn kstatus_one(object: &Value) -> Result<Verdict> {
    kstatus(std::slice::from_ref(object))?
        .pop()
        .map(|(_, v)| v)
        .ok_or_else(|| Error::Output {
            tool: "kstatus".into(),
            output: String::new(),
        })
}

/// `value` as a Lua table constructor: objects keyed `["key"]`, nulls left out (Argo CD hands
/// gopher-lua no nil values either), strings with every byte outside printable ASCII escaped.
pub fn lua_literal(value: &Value) -> String {
    fn string(s: &str, out: &mut String) {
        out.push('"');
        for b in s.bytes() {
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                0x20..=0x7e => out.push(char::from(b)),
                // Three digits always, so a digit that follows is not read as part of the escape.
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('"');
    }
    fn go(v: &Value, out: &mut String) {
        match v {
            Value::Null => out.push_str("nil"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::String(s) => string(s, out),
            Value::Array(items) => {
                out.push('{');
                for item in items.iter().filter(|i| !i.is_null()) {
                    go(item, out);
                    out.push(',');
                }
                out.push('}');
            }
            Value::Object(map) => {
                out.push('{');
                for (k, item) in map.iter().filter(|(_, i)| !i.is_null()) {
                    out.push('[');
                    string(k, out);
                    out.push_str("]=");
                    go(item, out);
                    out.push(',');
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    go(value, &mut out);
    out
}

/// The Argo CD health check of a kind of `group`: `config/argocd/<group>/<Kind>/health.lua`.
pub fn health_script(group: &str, kind: &str) -> PathBuf {
    repo_root()
        .join("config/argocd")
        .join(group)
        .join(kind)
        .join("health.lua")
}

/// Runs the check as Argo CD does: the object in the global `obj`, the chunk's return value `hs`.
const HARNESS: &str = r#"
obj = assert(load("return " .. io.read("a")))()
local hs = dofile(os.getenv("MICROPLANE_HEALTH_LUA"))
io.write(tostring(hs.status), "\n", tostring(hs.message or ""), "\n")
"#;

/// Argo CD's verdict on `object` from the repository's Lua health check for its kind.
pub fn argocd_health(object: &Value) -> Result<Verdict> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
    let script = health_script(group, kind);
    if !script.is_file() {
        return Err(Error::NoHealthCheck(format!("{kind}.{group}")));
    }
    let out = run(
        Path::new(LUA),
        &["-e", HARNESS],
        &[("MICROPLANE_HEALTH_LUA", &script)],
        &lua_literal(object),
    )?;
    // The status on the first line, the message (which may span lines) after it.
    match out.split_once('\n') {
        Some((status, message)) if !status.is_empty() => Ok(Verdict {
            status: status.to_string(),
            message: message.strip_suffix('\n').unwrap_or(message).to_string(),
        }),
        _ => Err(Error::Output {
            tool: LUA.into(),
            output: out.clone(),
        }),
    }
}

/// The `argocd-cm` ConfigMap data that installs the four health checks
/// (`resource.customizations.health.<group>_<Kind>`), as committed in
/// `config/argocd/argocd-cm.yaml`.
pub fn argocd_cm() -> Result<String> {
    let mut out = String::from(
        "# Generated from config/argocd/microplane.dev/*/health.lua (a test in e2e/src/gitops.rs fails on drift).\n\
         # Merge into Argo CD's argocd-cm ConfigMap (docs/gitops.md), e.g.\n\
         #   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file config/argocd/argocd-cm.yaml\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n  labels:\n    app.kubernetes.io/part-of: argocd\ndata:\n",
    );
    for kind in KINDS {
        let path = health_script(GROUP, kind);
        let script =
            std::fs::read_to_string(&path).map_err(|e| tool("argocd-cm", format!("{}: {e}", path.display())))?;
        out.push_str(&format!("  resource.customizations.health.{GROUP}_{kind}: |\n"));
        for line in script.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    Ok(out)
}

/// An object as JSON (`None` when absent), by apiVersion and kind (found through discovery).
pub async fn get_json(
    cluster: &Cluster,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(&cluster.client, &gvk).await?;
    let api: Api<DynamicObject> = match (caps.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
        _ => Api::all_with(cluster.client.clone(), &ar),
    };
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let mut value = serde_json::to_value(&obj).map_err(|e| crate::Error::Manifest(e.to_string()))?;
    // kstatus and the Lua checks key on apiVersion and kind, which a get may leave out of the body.
    value["apiVersion"] = Value::String(api_version.into());
    value["kind"] = Value::String(kind.into());
    Ok(Some(value))
}

/// The condition `type_` of a JSON object: (status, reason, message).
pub fn condition(object: &Value, type_: impl AsRef<str>) -> Option<(String, String, String)> {
    let text = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_string();
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_.as_ref())
        .map(|c| (text(c, "status"), text(c, "reason"), text(c, "message")))
}

/// Whether the object's status describes its current generation.
pub fn observed(object: &Value) -> bool {
    let generation = &object["metadata"]["generation"];
    generation.is_null() || object["status"]["observedGeneration"] == *generation
}

/// Flux's source-controller and kustomize-controller on this control plane
/// (`e2e/scripts/flux-up.sh`: host processes with the admin kubeconfig, pid files in
/// `$MICROPLANE_STATE/pids`, stopped by `controlplane-down.sh`).
#[derive(Clone, Copy, Debug)]
pub struct Flux;

impl Flux {
    /// Starts Flux's controllers when they are not running, and installs their CRDs.
    pub async fn ensure(cluster: &Cluster) -> Result<Self> {
        let _one = START.lock().await;
        let state = std::env::var_os("MICROPLANE_STATE").ok_or_else(|| {
            crate::Error::NoControlPlane("MICROPLANE_STATE is not set (make test-e2e sets it)".into())
        })?;
        let script = repo_root().join("e2e/scripts/flux-up.sh");
        let out = tokio::process::Command::new(&script)
            .env("MICROPLANE_STATE", &state)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| tool("flux-up.sh", e))?;
        if !out.status.success() {
            return Err(tool("flux-up.sh", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Self)
    }

    /// The log of one controller (`source-controller`, `kustomize-controller`).
    pub fn logs(controller: &str) -> String {
        std::env::var_os("MICROPLANE_STATE")
            .and_then(|s| std::fs::read_to_string(Path::new(&s).join("logs").join(format!("{controller}.log"))).ok())
            .unwrap_or_default()
    }
}

/// A GitRepository in [`FLUX_NAMESPACE`] following `branch` of `url` every `interval`.
pub fn git_repository(name: &str, url: &str, branch: &str, interval: &str) -> Value {
    serde_json::json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": name, "namespace": FLUX_NAMESPACE},
        "spec": {"url": url, "ref": {"branch": branch}, "interval": interval, "timeout": "20s"}
    })
}

/// Flux `healthCheckExprs` for every kind of [`GROUP`] (no `kind`: the whole group), as
/// docs/gitops.md recommends. kstatus alone reads an object without any status as Current, so a
/// Kustomization that applied a MicroService could pass its health check before the operator wrote
/// the first status; with these, an object without conditions is not Current (the expression
/// cannot be evaluated, which Flux counts as Unknown), and Flux's own generation check still runs
/// first.
pub fn health_check_exprs() -> Value {
    serde_json::json!([{
        "apiVersion": "microplane.dev/v1alpha1",
        "current": "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')",
        "failed": "status.conditions.exists(c, c.type == 'Stalled' && c.status == 'True')"
    }])
}

/// A Kustomization in [`FLUX_NAMESPACE`] applying `path` of GitRepository `source` with
/// `wait: true` (the health of everything it applies, [`health_check_exprs`] for Microplane's
/// kinds), pruning what leaves git, after the Kustomizations in `depends_on` are Ready.
pub fn kustomization(name: &str, source: &str, path: &str, depends_on: &[&str], timeout: &str) -> Value {
    let deps: Vec<Value> = depends_on.iter().map(|d| serde_json::json!({"name": d})).collect();
    serde_json::json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name, "namespace": FLUX_NAMESPACE},
        "spec": {
            "sourceRef": {"kind": "GitRepository", "name": source},
            "path": path, "prune": true, "wait": true,
            "interval": "10s", "retryInterval": "5s", "timeout": timeout,
            "dependsOn": deps,
            "healthCheckExprs": health_check_exprs()
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn argocd_cm_is_generated_from_the_health_checks() {
        let want = argocd_cm().unwrap();
        let path = repo_root().join("config/argocd/argocd-cm.yaml");
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if std::env::var_os("MICROPLANE_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        assert_eq!(
            have, want,
            "config/argocd/argocd-cm.yaml is stale: MICROPLANE_BLESS=1 cargo test -p microplane-e2e --lib gitops"
        );
        // And it is YAML whose data holds each script verbatim.
        let cm: serde_yaml::Value = serde_yaml::from_str(&have).unwrap();
        for kind in KINDS {
            let key = format!("resource.customizations.health.{GROUP}_{kind}");
            let script = std::fs::read_to_string(health_script(GROUP, kind)).unwrap();
            assert_eq!(cm["data"][key.as_str()].as_str(), Some(script.as_str()), "{key}");
        }
    }

    #[test]
    fn lua_literals_escape_and_drop_nulls() {
        let v = serde_json::json!({"a": "q\"\\\n9é", "n": null, "l": [1, null, 2.5, true], "o": {}});
        assert_eq!(
            lua_literal(&v),
            r#"{["a"]="q\"\\\0109\195\169",["l"]={1,2.5,true,},["o"]={},}"#
        );
    }
}
