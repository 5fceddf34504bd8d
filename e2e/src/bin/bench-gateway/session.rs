//! The bench's own process: a session of its own, its priority, the CPU latency it holds, and
//! signals.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};

/// Set in the copy of the bench that runs in a session of its own.
pub const SESSION_ENV: &str = "BENCH_GATEWAY_SESSION";

/// Resolves on Ctrl-C or SIGTERM, so that the guards still stop every process.
pub async fn interrupted() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminated => "SIGTERM",
    }
}

/// Runs the bench again as the leader of a new session (`setsid`), so that it gets a scheduler
/// autogroup of its own whose priority it can raise without touching the caller's; forwards Ctrl-C
/// and SIGTERM to it, so that it still stops everything it started, and exits with its status.
pub fn supervise() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let code = runtime.block_on(async {
        let mut child = tokio::process::Command::new("setsid")
            .arg("--wait")
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(SESSION_ENV, "1")
            .spawn()
            .context("running the bench in a new session (setsid)")?;
        let status = tokio::select! {
            s = child.wait() => s?,
            _ = interrupted() => {
                if let Some(pid) = child.id() {
                    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                }
                child.wait().await?
            }
        };
        Ok::<_, anyhow::Error>(status.code().unwrap_or(1))
    })?;
    std::process::exit(code)
}

/// Raises the priority of the bench (this process and everything it starts, nothing else) to nice
/// -20 when allowed (root), so that other work on the machine disturbs the measurements less: both
/// its session's scheduler autogroup (with autogroups, a per-process nice does not count against
/// other sessions) and the process itself (inherited by its children). Every process of the bench
/// gets the same priority. Says what it did, for the report.
pub fn raise_priority() -> String {
    let own_session = std::env::var_os(SESSION_ENV).is_some();
    let autogroup = own_session && std::fs::write("/proc/self/autogroup", "-20").is_ok();
    let nice = Command::new("renice")
        .args(["-n", "-20", "-p", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (autogroup, nice) {
        (true, true) => "the bench in a session of its own at nice -20 (process and autogroup)".into(),
        (false, true) => "the bench's processes at nice -20 (its autogroup at normal priority)".into(),
        (true, false) => "the bench in a session of its own at autogroup nice -20".into(),
        (false, false) => "normal priority (raising it was not permitted)".into(),
    }
}

/// Asks the kernel for a CPU wake-up latency of 0 µs while the returned file stays open (PM QoS
/// `/dev/cpu_dma_latency`, what tuned's latency-performance profile and cyclictest do): idle CPUs
/// then poll instead of halting, so no request waits for a halted CPU to wake up — on a VM an exit
/// to the hypervisor that costs more than the gateway's whole work on a request. Same for every
/// server under test; the request ends when the file closes, at the end of the run. Says what it
/// did, for the report.
pub fn hold_cpu_latency() -> (Option<std::fs::File>, String) {
    use std::io::Write as _;
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .and_then(|mut f| f.write_all(&0i32.to_ne_bytes()).map(|()| f));
    match held {
        Ok(f) => (
            Some(f),
            "idle CPUs poll instead of halting (PM QoS cpu_dma_latency 0 held)".into(),
        ),
        Err(e) => (
            None,
            format!("idle CPUs may halt (PM QoS cpu_dma_latency not held: {e})"),
        ),
    }
}
