//! The operator under test. As users run it (the default): the pods of the chart's
//! `microplane-operator` Deployment, installed by `e2e/scripts/install.sh` (`make test-e2e` runs it
//! before the suites; [`Operator::ensure`] installs it when missing). With
//! `MICROPLANE_E2E_INSTALL=process` (`make bench-operator`, on kwok nodes that cannot run pods): the
//! release binary as a host process, run as its own ServiceAccount with exactly the chart's RBAC by
//! `e2e/scripts/operator-up.sh`, its pid file in `$MICROPLANE_STATE/pids`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use crate::{Cluster, Error, Result, repo_root};

static START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Name of the pid file and of the binary.
const BIN: &str = "microplane-operator";

/// Namespace of the chart's release in the e2e tier and `make up`.
pub const NAMESPACE: &str = "microplane-system";
/// The operator's Deployment (and Lease) in [`NAMESPACE`].
pub const DEPLOYMENT: &str = "microplane-operator";
/// Port of the operator's and the gateway's admin servers in their pods.
pub const ADMIN_PORT: u16 = 8081;

/// How the suites run the operator and the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// Pods installed by the chart (`e2e/scripts/install.sh`).
    Chart,
    /// Host processes (`e2e/scripts/operator-up.sh`, `gateway-up.sh`).
    Process,
}

/// `MICROPLANE_E2E_INSTALL`: `process`, else the chart.
pub fn install_mode() -> Install {
    match std::env::var("MICROPLANE_E2E_INSTALL").as_deref() {
        Ok("process") => Install::Process,
        _ => Install::Chart,
    }
}

/// A running operator: a host process, or the leading pod of the chart's Deployment.
#[derive(Clone, Debug)]
pub struct Operator {
    /// Its pid (0 for a pod).
    pub pid: u32,
    /// The leading pod (chart install).
    pub pod: Option<String>,
    /// The leading pod's uid (chart install): a pod of the same name made anew has another.
    pub uid: Option<String>,
    /// Its admin address (`127.0.0.1:port`, or `<pod IP>:8081`; the host routes pod addresses).
    pub admin: String,
    /// Its log file (host process).
    pub log: PathBuf,
}

fn state_dir() -> Result<PathBuf> {
    std::env::var_os("MICROPLANE_STATE")
        .map(PathBuf::from)
        .ok_or_else(|| Error::NoControlPlane("MICROPLANE_STATE is not set (make test-e2e sets it)".into()))
}

fn alive(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with(BIN)))
}

/// Waits until the operator process `pid` has exited; an error if it still runs after `timeout`.
async fn wait_exited(pid: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while alive(pid) {
        if Instant::now() > deadline {
            return Err(Error::Unconfirmed(format!(
                "operator pid {pid} still runs after {timeout:?}"
            )));
        }
        tick.tick().await;
    }
    Ok(())
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &addr
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sum of the samples of a counter family in a metrics page, e.g. `microplane_operator_writes_total`.
pub fn metric_sum(page: &str, family: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.starts_with(family)
                && (l.as_bytes().get(family.len()) == Some(&b'{') || l.as_bytes().get(family.len()) == Some(&b' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the admin server at `admin` answers `/readyz` with 200, failing early (with the
/// tail of `log`) when the process is gone.
pub async fn wait_admin_ready(
    admin: &str,
    alive: impl Fn() -> bool,
    what: &str,
    log: &std::path::Path,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if matches!(http_get(admin, "/readyz"), Ok((200, _))) {
            return Ok(());
        }
        if !alive() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            return Err(Error::NoControlPlane(format!(
                "the {what} exited; log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!("{what} /readyz"), timeout));
        }
    }
}

impl Operator {
    /// The operator of this control plane, started if it is not running.
    pub async fn ensure(cluster: &Cluster) -> Result<Self> {
        // Tests of one binary run concurrently; exactly one of them starts the operator.
        let _one = START.lock().await;
        if install_mode() == Install::Chart {
            return chart::operator(cluster).await;
        }
        let state = state_dir()?;
        if let Some(op) = Self::recorded(&state).filter(|op| alive(op.pid)) {
            op.wait_ready(Duration::from_secs(60)).await?;
            return Ok(op);
        }
        Self::start(cluster).await
    }

    /// Kills the running operator with SIGKILL (a crash: no graceful shutdown, the Lease is not
    /// released) and starts a new one. Fails unless the kill is confirmed and a different operator
    /// (another pid, or another pod holding the Lease) is ready afterwards.
    pub async fn crash_and_restart(cluster: &Cluster) -> Result<Self> {
        let killed = Self::crash(cluster).await?;
        Self::after_crash(cluster, &killed).await
    }

    /// Kills the running operator with SIGKILL and returns it once it is confirmed dead: its
    /// process gone, or its pod (by uid) deleted. Nothing replaces it yet in process mode; in
    /// chart mode the Deployment makes a new pod, which can lead only once the Lease expires.
    pub async fn crash(cluster: &Cluster) -> Result<Self> {
        let old = Self::ensure(cluster).await?;
        let _one = START.lock().await;
        if let (Some(pod), Some(uid)) = (&old.pod, &old.uid) {
            // The kubelet kills the container at once (grace period 0: SIGKILL). The uid
            // precondition makes sure it is this pod that is deleted, not a namesake.
            let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let _ = pods.delete(pod, &params).await?;
            chart::wait_pod_gone(cluster, pod, uid, Duration::from_secs(60)).await?;
            return Ok(old);
        }
        let killed = Command::new("kill")
            .args(["-KILL", &old.pid.to_string()])
            .status()
            .map_err(|e| Error::Unconfirmed(format!("kill -KILL {}: {e}", old.pid)))?;
        if !killed.success() {
            return Err(Error::Unconfirmed(format!("kill -KILL {} failed: {killed}", old.pid)));
        }
        wait_exited(old.pid, Duration::from_secs(10)).await?;
        Ok(old)
    }

    /// The operator that follows `killed` (from [`Operator::crash`]): started in process mode; in
    /// chart mode the Deployment's new pod, once it holds the Lease. Fails unless it is another
    /// process or another pod (name and uid) than `killed`.
    pub async fn after_crash(cluster: &Cluster, killed: &Self) -> Result<Self> {
        let new = if killed.pod.is_some() {
            let _one = START.lock().await;
            chart::operator(cluster).await?
        } else {
            let _one = START.lock().await;
            Self::start(cluster).await?
        };
        if new.pod.is_some() {
            let holder = chart::leader(cluster).await?;
            if new.pod == killed.pod || new.uid == killed.uid || holder != new.pod {
                return Err(Error::Unconfirmed(format!(
                    "the operator was not replaced: killed {:?} ({:?}), now {:?} ({:?}), Lease held by {holder:?}",
                    killed.pod, killed.uid, new.pod, new.uid
                )));
            }
        } else if new.pid == killed.pid || !alive(new.pid) {
            return Err(Error::Unconfirmed(format!(
                "no new operator process: killed pid {}, now pid {}",
                killed.pid, new.pid
            )));
        }
        Ok(new)
    }

    async fn start(_cluster: &Cluster) -> Result<Self> {
        // The same script `make up` uses: namespace, RBAC, a token for the ServiceAccount, the process.
        let state = state_dir()?;
        let out = Command::new(repo_root().join("e2e/scripts/operator-up.sh"))
            .args(["--lease-seconds", "5", "--resync-seconds", "3"])
            .env("MICROPLANE_STATE", &state)
            .env("MICROPLANE_LOG", "info,microplane_operator=debug,kube_runtime=warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Manifest(format!("operator-up.sh: {e}")))?;
        if !out.status.success() {
            return Err(Error::NoControlPlane(format!(
                "operator-up.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let op =
            Self::recorded(&state).ok_or_else(|| Error::Manifest("operator-up.sh wrote no operator.info".into()))?;
        op.wait_ready(Duration::from_secs(60)).await?;
        Ok(op)
    }

    /// The operator recorded in `$MICROPLANE_STATE/operator.info` ("<pid> <admin address>").
    fn recorded(state: &std::path::Path) -> Option<Self> {
        let text = std::fs::read_to_string(state.join("operator.info")).ok()?;
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let admin = parts.next()?.to_string();
        Some(Self {
            pid,
            pod: None,
            uid: None,
            admin,
            log: state.join("logs").join(format!("{BIN}.log")),
        })
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        if self.pod.is_some() {
            return wait_admin_ready(&self.admin, || true, "operator", &self.log, timeout).await;
        }
        wait_admin_ready(&self.admin, || alive(self.pid), "operator", &self.log, timeout).await
    }

    /// Stops the operator: SIGTERM to the recorded process, or the chart's Deployment scaled to
    /// zero. Fails unless the process has exited (or every operator pod is gone) within 20 s (60 s).
    pub async fn stop() -> Result<()> {
        if install_mode() == Install::Chart {
            return chart::scale_operator_down().await;
        }
        let Some(op) = Self::recorded(&state_dir()?).filter(|op| alive(op.pid)) else {
            return Ok(());
        };
        let sent = Command::new("kill")
            .args(["-TERM", &op.pid.to_string()])
            .status()
            .map_err(|e| Error::Unconfirmed(format!("kill -TERM {}: {e}", op.pid)))?;
        // A process that exited between the check and the signal is stopped too.
        if !sent.success() && alive(op.pid) {
            return Err(Error::Unconfirmed(format!("kill -TERM {} failed: {sent}", op.pid)));
        }
        wait_exited(op.pid, Duration::from_secs(20)).await
    }

    /// The metrics page.
    pub fn metrics(&self) -> Result<String> {
        http_get(&self.admin, "/metrics")
            .map(|(_, b)| b)
            .map_err(|e| Error::Manifest(format!("metrics: {e}")))
    }
}

/// The chart's pods: waiting for a rollout, finding the leader, scaling.
pub mod chart {
    use super::*;

    /// Runs `e2e/scripts/install.sh` (helm upgrade --install with the dev and e2e values).
    pub fn install(extra: &[&str]) -> Result<()> {
        let state = state_dir()?;
        let out = Command::new(repo_root().join("e2e/scripts/install.sh"))
            .args(extra)
            .env("MICROPLANE_STATE", &state)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Manifest(format!("install.sh: {e}")))?;
        if !out.status.success() {
            return Err(Error::NoControlPlane(format!(
                "install.sh failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Whether the Deployment's rollout is complete: every wanted replica updated, ready and
    /// available, and no old pod left.
    pub fn rolled_out(d: &Deployment) -> bool {
        let want = d.spec.replicas.unwrap_or(1);
        let Some(st) = d.status.as_ref() else { return false };
        st.observed_generation >= d.metadata.generation
            && st.updated_replicas.unwrap_or(0) == want
            && st.ready_replicas.unwrap_or(0) == want
            && st.available_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want
    }

    /// Waits until the Deployment `name` has rolled out (installing the chart when it is missing).
    pub async fn wait_rolled_out(cluster: &Cluster, name: &str, timeout: Duration) -> Result<Deployment> {
        let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        if api.get_opt(name).await?.is_none() {
            install(&[])?;
        }
        crate::wait_for(&api, name, |d: Option<&Deployment>| d.is_some_and(rolled_out), timeout).await
    }

    /// The label selector of the pods of the release's Deployment `name` (`microplane-<component>`).
    pub fn selector(name: &str) -> String {
        let component = name.strip_prefix("microplane-").unwrap_or(name);
        format!("app.kubernetes.io/instance=microplane,app.kubernetes.io/component={component}")
    }

    /// Ready pods of a Deployment of the release, by name.
    pub async fn ready_pods(cluster: &Cluster, name: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        let mut pods: Vec<Pod> = api
            .list(&ListParams::default().labels(&selector(name)))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == microplane_crds::CondType::Ready && c.status == "True")
                })
            })
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// `<pod IP>:<port>`.
    pub fn pod_addr(pod: &Pod, port: u16) -> Option<String> {
        pod.status.as_ref()?.pod_ip.as_ref().map(|ip| format!("{ip}:{port}"))
    }

    /// The holder of the operator's Lease.
    pub async fn leader(cluster: &Cluster) -> Result<Option<String>> {
        let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        Ok(leases.get_opt(DEPLOYMENT).await?.and_then(|l| l.spec?.holder_identity))
    }

    /// The operator's Deployment rolled out and one of its ready pods holding the Lease.
    pub async fn operator(cluster: &Cluster) -> Result<Operator> {
        let timeout = Duration::from_secs(120);
        let deps: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        if let Some(d) = deps.get_opt(DEPLOYMENT).await?
            && d.spec.replicas == Some(0)
        {
            // Stopped by `Operator::stop`: back to the replicas the release asked for.
            let replicas: i32 = std::fs::read_to_string(state_dir()?.join("operator.replicas"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(1);
            let patch = serde_json::json!({"spec": {"replicas": replicas}});
            deps.patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        wait_rolled_out(cluster, DEPLOYMENT, timeout).await?;
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let pods = ready_pods(cluster, DEPLOYMENT).await?;
            if let Some(holder) = leader(cluster).await?
                && let Some(pod) = pods
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(holder.as_str()))
                && let Some(admin) = pod_addr(pod, ADMIN_PORT)
            {
                let op = Operator {
                    pid: 0,
                    pod: Some(holder),
                    uid: pod.metadata.uid.clone(),
                    admin,
                    log: PathBuf::new(),
                };
                op.wait_ready(timeout).await?;
                return Ok(op);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout("a ready operator pod holding the Lease".into(), timeout));
            }
        }
    }

    /// Scales the operator to zero (remembering its replicas) and waits until its pods are gone.
    pub async fn scale_operator_down() -> Result<()> {
        let cluster = Cluster::connect().await?;
        let deps: Api<Deployment> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        let Some(d) = deps.get_opt(DEPLOYMENT).await? else {
            return Ok(());
        };
        let replicas = d.spec.replicas.unwrap_or(1);
        if replicas > 0 {
            std::fs::write(state_dir()?.join("operator.replicas"), replicas.to_string())
                .map_err(|e| Error::Manifest(format!("operator.replicas: {e}")))?;
        }
        let patch = serde_json::json!({"spec": {"replicas": 0}});
        deps.patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let left: Vec<String> = pods
                .list(&ListParams::default().labels(&selector(DEPLOYMENT)))
                .await?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unconfirmed(format!(
                    "the operator scaled to 0, but its pods {left:?} still exist after 60 s"
                )));
            }
        }
    }

    /// Waits until the pod `name` with `uid` no longer exists (gone, or a new pod of that name
    /// with another uid); an error naming it otherwise.
    pub async fn wait_pod_gone(cluster: &Cluster, name: &str, uid: &str, timeout: Duration) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let pod = pods.get_opt(name).await?;
            if pod.is_none_or(|p| p.metadata.uid.as_deref() != Some(uid)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unconfirmed(format!(
                    "pod {name} ({uid}) still exists {timeout:?} after it was deleted"
                )));
            }
        }
    }

    /// Logs of every pod of a Deployment of the release, concatenated.
    pub fn logs(cluster: &Cluster, name: &str) -> String {
        cluster
            .kubectl(
                &[
                    "logs",
                    "-n",
                    NAMESPACE,
                    "-l",
                    &selector(name),
                    "--tail=-1",
                    "--max-log-requests=10",
                ],
                None,
            )
            .map(|(_, out, _)| out)
            .unwrap_or_default()
    }
}
