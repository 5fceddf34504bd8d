//! The gateway under test, following the operator's sync stream. As users run it (the default): the
//! pods of the chart's `microplane-gateway` Deployment, called from the host at the node's address
//! and the Service's NodePort, as a client outside the cluster would. With
//! `MICROPLANE_E2E_INSTALL=process`: the binary as a host process (`e2e/scripts/gateway-up.sh`), which
//! reaches pods at their EndpointSlice addresses through the host's route to the pod range.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

use crate::operator::{ADMIN_PORT, Install, NAMESPACE, Operator, chart, http_get, install_mode, wait_admin_ready};
use crate::{Cluster, Error, Result, repo_root};

static START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BIN: &str = "microplane-gateway";

/// The gateway's Deployment and Service in the chart's namespace.
pub const DEPLOYMENT: &str = "microplane-gateway";

/// A running gateway: a host process, or the chart's gateway pods behind their Service.
#[derive(Clone, Debug)]
pub struct Gateway {
    /// Its pid (0 for pods).
    pub pid: u32,
    /// Its HTTP address (`127.0.0.1:port`, or `<node IP>:<NodePort>`).
    pub addr: String,
    /// Its admin address (the first pod's, for pods).
    pub admin: String,
    /// Admin addresses of every gateway pod (for pods; metrics are summed over them).
    pub admins: Vec<String>,
    /// Its log file (host process).
    pub log: PathBuf,
    cluster: Option<Cluster>,
}

/// An HTTP response: status, headers (lower-cased names), body.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Reply {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
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

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> std::io::Result<Reply> {
    let sock = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    // A server may answer (413, 431) and close before it read everything: keep what it said.
    let written = s.write_all(req.as_bytes());
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() {
        written?;
        read?;
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok(Reply { status, headers, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Gateway {
    /// The gateway of this control plane (and its operator), started if it is not running.
    pub async fn ensure(cluster: &Cluster) -> Result<Self> {
        Operator::ensure(cluster).await?;
        let _one = START.lock().await;
        if install_mode() == Install::Chart {
            return Self::chart(cluster).await;
        }
        let state = state_dir()?;
        if let Some(gw) = Self::recorded(&state).filter(|g| alive(g.pid)) {
            gw.wait_ready(Duration::from_secs(60)).await?;
            return Ok(gw);
        }
        let out = Command::new(repo_root().join("e2e/scripts/gateway-up.sh"))
            .env("MICROPLANE_STATE", &state)
            .env("MICROPLANE_LOG_GATEWAY", "info,microplane_gateway=debug")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Manifest(format!("gateway-up.sh: {e}")))?;
        if !out.status.success() {
            return Err(Error::NoControlPlane(format!(
                "gateway-up.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let gw = Self::recorded(&state).ok_or_else(|| Error::Manifest("gateway-up.sh wrote no gateway.info".into()))?;
        gw.wait_ready(Duration::from_secs(60)).await?;
        Ok(gw)
    }

    /// The chart's gateway: its Deployment rolled out, addressed at the node's NodePort.
    async fn chart(cluster: &Cluster) -> Result<Self> {
        let timeout = Duration::from_secs(120);
        chart::wait_rolled_out(cluster, DEPLOYMENT, timeout).await?;
        let node = crate::node_ip()
            .ok_or_else(|| Error::NoControlPlane("no netns.env: start the node (node-up.sh)".into()))?;
        let services: Api<Service> = Api::namespaced(cluster.client.clone(), NAMESPACE);
        let svc = services.get(DEPLOYMENT).await?;
        let node_port = svc
            .spec
            .and_then(|s| s.ports)
            .into_iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"))
            .and_then(|p| p.node_port)
            .ok_or_else(|| {
                Error::Manifest("the gateway Service has no NodePort (install with the dev values)".into())
            })?;
        let pods = chart::ready_pods(cluster, DEPLOYMENT).await?;
        let admins: Vec<String> = pods.iter().filter_map(|p| chart::pod_addr(p, ADMIN_PORT)).collect();
        let gw = Self {
            pid: 0,
            addr: format!("{node}:{node_port}"),
            admin: admins.first().cloned().unwrap_or_default(),
            admins,
            log: PathBuf::new(),
            cluster: Some(cluster.clone()),
        };
        gw.wait_ready(timeout).await?;
        Ok(gw)
    }

    fn recorded(state: &std::path::Path) -> Option<Self> {
        let text = std::fs::read_to_string(state.join("gateway.info")).ok()?;
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let addr = parts.next()?.to_string();
        let admin = parts.next()?.to_string();
        Some(Self {
            pid,
            addr,
            admins: vec![admin.clone()],
            admin,
            log: state.join("logs").join(format!("{BIN}.log")),
            cluster: None,
        })
    }

    /// Waits until `/readyz` answers 200 (on every pod).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        if self.cluster.is_some() {
            for admin in &self.admins {
                wait_admin_ready(admin, || true, "gateway", &self.log, timeout).await?;
            }
            return Ok(());
        }
        wait_admin_ready(&self.admin, || alive(self.pid), "gateway", &self.log, timeout).await
    }

    /// Its log: the file of the process, or the logs of every gateway pod.
    pub fn logs(&self) -> String {
        match &self.cluster {
            Some(c) => chart::logs(c, DEPLOYMENT),
            None => std::fs::read_to_string(&self.log).unwrap_or_default(),
        }
    }

    /// A request to the gateway as tenant `tenant` (`Micro-Namespace`).
    pub fn call(&self, tenant: &str, method: &str, path: &str, body: &str) -> Reply {
        let headers = [("Micro-Namespace", tenant), ("Content-Type", "application/json")];
        request(&self.addr, method, path, &headers, body).unwrap_or_else(|e| Reply {
            status: 0,
            headers: vec![],
            body: format!("transport error: {e}"),
        })
    }

    /// Polls `call` until it answers `status`.
    pub async fn wait_status(
        &self,
        tenant: &str,
        method: &str,
        path: &str,
        body: &str,
        status: u16,
        timeout: Duration,
    ) -> Result<Reply> {
        poll(
            timeout,
            || self.call(tenant, method, path, body),
            |r| r.status == status,
        )
        .await
        .map_err(|r| {
            Error::Timeout(
                format!("{method} {path} → {status} (last: {} {})", r.status, r.body),
                timeout,
            )
        })
    }

    /// The metrics pages of every gateway, one after another (so sums of a family add up).
    pub fn metrics(&self) -> Result<String> {
        let mut out = String::new();
        for admin in &self.admins {
            let (_, page) =
                http_get(admin, "/metrics").map_err(|e| Error::Manifest(format!("metrics of {admin}: {e}")))?;
            out.push_str(&page);
        }
        Ok(out)
    }

    /// Upstreams of the access-log lines of `tenant`, in order (per gateway pod).
    pub fn upstreams_of(&self, tenant: &str) -> Vec<String> {
        let log = self.logs();
        let needle = format!("tenant=\"{tenant}\"");
        let alt = format!("tenant={tenant} ");
        log.lines()
            .filter(|l| l.contains("access") && (l.contains(&needle) || l.contains(&alt)))
            .filter_map(|l| l.split("upstream=").nth(1))
            .map(|u| u.split_whitespace().next().unwrap_or("").trim_matches('"').to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }
}

/// Sends `attempt` every 50 ms until `done` accepts its reply (`Ok`), or `timeout` passes (`Err`
/// with the last reply, for the failure message).
pub async fn poll(
    timeout: Duration,
    mut attempt: impl FnMut() -> Reply,
    mut done: impl FnMut(&Reply) -> bool,
) -> std::result::Result<Reply, Reply> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let r = attempt();
        if done(&r) {
            return Ok(r);
        }
        if Instant::now() > deadline {
            return Err(r);
        }
    }
}

/// The start of a gateway suite: CRDs installed, the gateway (and the operator) running, and a new
/// tenant `<prefix>-…` with `spec`, Ready.
pub async fn with_tenant(
    prefix: &str,
    spec: serde_json::Value,
    timeout: Duration,
) -> Result<(Cluster, Gateway, crate::TestTenant)> {
    let c = Cluster::connect().await?;
    crate::install_crds(&c, Duration::from_secs(30)).await?;
    let gw = Gateway::ensure(&c).await?;
    let ns = crate::create_tenant(&c, prefix, spec, timeout).await?;
    Ok((c, gw, ns))
}
