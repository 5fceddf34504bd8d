//! The operator under test: the real binary, run as its own ServiceAccount with exactly the RBAC of
//! `config/rbac/`, one process per control plane (its pid file lives in `$MICROPLANE_STATE/pids`, so
//! `controlplane-down.sh` stops it with the rest).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Cluster, Error, Result, repo_root};

static START: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Name of the pid file and of the binary.
const BIN: &str = "microplane-operator";

/// A running operator process.
#[derive(Clone, Debug)]
pub struct Operator {
    /// Its pid.
    pub pid: u32,
    /// Its admin address (`127.0.0.1:port`).
    pub admin: String,
    /// Its log file.
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
        let state = state_dir()?;
        if let Some(op) = Self::recorded(&state).filter(|op| alive(op.pid)) {
            op.wait_ready(Duration::from_secs(60)).await?;
            return Ok(op);
        }
        Self::start(cluster).await
    }

    /// Kills the running operator with SIGKILL (a crash: no graceful shutdown, the Lease is not
    /// released) and starts a new one.
    pub async fn crash_and_restart(cluster: &Cluster) -> Result<Self> {
        let old = Self::ensure(cluster).await?;
        let _one = START.lock().await;
        let _ = Command::new("kill").args(["-KILL", &old.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while alive(old.pid) && Instant::now() < deadline {
            tick.tick().await;
        }
        Self::start(cluster).await
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
            admin,
            log: state.join("logs").join(format!("{BIN}.log")),
        })
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_admin_ready(&self.admin, || alive(self.pid), "operator", &self.log, timeout).await
    }

    /// Stops the recorded operator with SIGTERM and waits for it to exit.
    pub async fn stop() -> Result<()> {
        let Some(op) = Self::recorded(&state_dir()?) else {
            return Ok(());
        };
        let _ = Command::new("kill").args(["-TERM", &op.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while alive(op.pid) && Instant::now() < deadline {
            tick.tick().await;
        }
        Ok(())
    }

    /// The metrics page.
    pub fn metrics(&self) -> Result<String> {
        http_get(&self.admin, "/metrics")
            .map(|(_, b)| b)
            .map_err(|e| Error::Manifest(format!("metrics: {e}")))
    }
}
