//! `make bench-gateway`: the gateway's data path and routing sync, measured in one run on loopback.
//!
//! The bench plays the operator with the operator's own sync code: a
//! `microplane_operator::sync::server::SyncService` fed hand-built `v1::Snapshot`s through a
//! `watch` channel: tenant `micro` with the operator's default public rule; `helloworld` as a gRPC
//! service whose descriptors come from `microplane_operator::sync::reflection::discover`; `web` as
//! an HTTP service. A second tenant, `secure`, is what the operator makes of `defaultAccess:
//! Authenticated` (the default rule with scope `*`) with a platform issuer and an ES256 signing key
//! of its own, plus one AuthRule the bench flips; it has its own `web` on the same backend.
//! Versions only grow, `source` is fixed and `built_unix_nanos` is the build time. Everything
//! listens on free `127.0.0.1` ports; configs and logs live in a temporary directory under
//! `.state/bench/gateway/` (kept when the run fails); every process started here is stopped when
//! the run ends, also on an error or Ctrl-C (kill-on-drop guards, one process group each).
//!
//! # Fairness
//!
//! The machine has (at least) two CPUs. Every proxy under test (the gateway, haproxy, nginx as a
//! proxy) runs alone on CPU 0 (`taskset -c 0`; the gateway also with `TOKIO_WORKER_THREADS=1`);
//! everything else — the backends (nginx, helloworld), wrk and this binary with its load generator
//! and sync server — runs on CPU 1, except that on a machine with a third CPU the backends get CPU 2. The three proxies get the same backend, the same load, the same
//! path rewrite (`/web/<rest>` → `/<rest>`) and the same forwarding headers (`X-Forwarded-For`,
//! `-Host`, `-Proto`), keep-alive on both sides and no access logging. Other work on a shared
//! machine skews everything, so the bench re-runs itself in a session of its own (`setsid`) and,
//! where allowed, raises that session's priority (autogroup and nice -20, the same for all of its
//! processes); the report says how much CPU other processes still used while it measured. While
//! it runs, the bench holds the PM QoS CPU latency request at 0 (`/dev/cpu_dma_latency`, as
//! tuned's latency-performance profile does) so that idle CPUs poll instead of halting: on a VM,
//! waking a halted vCPU is an exit to the hypervisor that would otherwise be charged to whichever
//! request arrives at an idle CPU.
//!
//! # Method
//!
//! - **(a) Added latency of JSON transcoding.** A load generator in this binary (64 workers, with
//!   clients as light as the protocols allow: HTTP/1.1 written and parsed (httparse) on the socket
//!   itself, gRPC on the `h2` crate without hyper's per-call task) first runs closed-loop (each worker sends its next request when the previous
//!   answered) against the gateway path `POST /helloworld/call {"name":"John"}`, one HTTP/1.1
//!   keep-alive connection per worker, to find its maximum throughput. Then, open-loop at 50% of
//!   that rate, once straight to helloworld over gRPC (h2c, a hand-framed `CallRequest`,
//!   `grpc-status` 0 checked in the trailers; the workers share one connection, as the gateway's
//!   own channel to helloworld does) and once through the gateway. A pacer thread releases the send
//!   times at fixed intervals and any free worker takes the next one; latency runs from the
//!   *scheduled* send time to the complete response, so a slow response is charged to the requests
//!   queued behind it too (no coordinated omission). A run that completes less than 95% of the
//!   scheduled rate fell behind and does not count. Latencies go into HDR histograms (µs, 3
//!   significant digits); the added latency is gateway − direct per percentile.
//! - **(b) Proxy throughput.** `wrk -t1 -c64 --latency` (2 s warm-up, then 10 s measured) against
//!   the backend itself (the ceiling, no proxy), then against `/web/` on the gateway, haproxy,
//!   nginx, nginx, haproxy and the gateway again (so that a drift of a shared machine's speed
//!   weighs on all alike; the ratios are of the means); requests/s, p50, p99, non-2xx responses and socket errors from wrk's report, and the
//!   CPU the server under test used (from /proc), which tells whether it was the bottleneck.
//! - **(c) Route change latency.** 50 times: publish a snapshot adding an HTTP route `probe-<i>`
//!   (to the nginx backend) with `send_replace`, and poll `GET /probe-<i>/` back to back on one
//!   kept-alive connection until the first 200; the time from `send_replace` to that 200.
//! - **(d) 1000 routes at once.** Publish one snapshot adding `bulk-0` … `bulk-999` and poll all of
//!   them in rounds (8 kept-alive connections) until every one answered 200; the time from
//!   `send_replace` to the last route's first 200.
//! - **(e) Auth on vs off.** The same wrk run as (b) against the gateway's `/web/` four times, in
//!   the order off, on, on, off (so that a drift of the machine's speed weighs on both alike; the
//!   ratio is of the means): *off* with `Micro-Namespace: micro` (the default public rule decides,
//!   no token);
//!   *on* with `Micro-Namespace: secure` and `Authorization: Bearer <token>`, an ES256 access token
//!   signed with the tenant's key from the snapshot (what the gateway's token endpoint issues), so
//!   every request is verified (its verified-token cache included, as in production) and
//!   authorized by the rules. The ratio on/off is the cost of auth at the edge.
//! - **(f) Rule change latency.** 100 times, alternating deny and grant: change the `secure`
//!   tenant's AuthRule `bench-probe` (scope `*`, `web`, priority 10), build the snapshot and publish
//!   it with `send_replace` — the point where the operator's AuthRule watch hands a change to its
//!   publisher — and poll `GET /web/` with the token back to back on one kept-alive connection until
//!   the answer follows the new rule (403 after a deny, 200 after a grant); the time from before the
//!   snapshot was built to that answer.
//!
//! The report (markdown) goes to stdout and `.state/bench/gateway-report.md` with MET/NOT MET per
//! target. The exit status is non-zero only when the bench could not run, never for a missed target.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use microplane_gateway::auth::token::{Claims, SigningKey};
use microplane_operator::controller::tenant;
use microplane_operator::metrics::SyncMetrics;
use microplane_operator::sync::{reflection, server};
use microplane_sync::v1;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, watch};

/// CPU of the proxies under test.
const PROXY_CPU: u32 = 0;
/// CPU of the backends, the load generators and this binary.
const LOAD_CPU: u32 = 1;
/// CPU of the backends (nginx in (b) and (e), helloworld in (a)) on a machine with a third CPU; on
/// one with two they share `LOAD_CPU` with the load generators.
const BACKEND_CPU: u32 = 2;
/// Connections of every load (wrk and the Rust generator).
const CONNECTIONS: usize = 64;
/// wrk's warm-up and measured durations.
const WRK_WARMUP: &str = "2s";
const WRK_DURATION: &str = "10s";
/// The generator's closed-loop run: warm-up, then measured.
const CLOSED_WARMUP: Duration = Duration::from_secs(1);
const CLOSED_MEASURE: Duration = Duration::from_secs(5);
/// The generator's open-loop runs: warm-up, then measured; at this share of the closed-loop rate.
const OPEN_WARMUP: Duration = Duration::from_secs(1);
const OPEN_MEASURE: Duration = Duration::from_secs(10);
const OPEN_SHARE: f64 = 0.5;
/// An open-loop run that completed less than this share of the scheduled rate fell behind it.
const OPEN_KEPT_UP: f64 = 0.95;
/// A request that takes longer than this counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Route changes measured in (c), routes added at once in (d).
const PROBES: usize = 50;
const BULK: usize = 1000;
/// Connections polling the bulk routes in (d).
const BULK_POLLERS: usize = 8;
/// How long one route change may take before the bench gives up on it.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rule changes measured in (f).
const RULE_CHANGES: usize = 100;
/// How long one rule change may take before the bench gives up on it.
const RULE_TIMEOUT: Duration = Duration::from_secs(10);
/// Targets.
const TARGET_AUTH_RATIO: f64 = 0.8;
const TARGET_RULE_P99_MS: f64 = 100.0;
const TARGET_HAPROXY_RATIO: f64 = 1.0;
const TARGET_ADDED_P99_MS: f64 = 0.5;
const TARGET_ROUTE_P99_MS: f64 = 100.0;
const TARGET_BULK_MS: f64 = 1000.0;

const TENANT: &str = "micro";
/// The tenant whose every request needs an account (e, f).
const SECURE: &str = "secure";
const SECURE_ISSUER: &str = "http://bench-gateway.invalid/secure";
const SECURE_KID: &str = "bench-secure-1";
/// The AuthRule (f) flips.
const PROBE_RULE: &str = "bench-probe";
/// The rows of (e).
const AUTH_OFF: &str = "auth off: tenant micro, public rule, no token";
const AUTH_ON: &str = "auth on: tenant secure, scope *, bearer token";
const SOURCE: &str = "bench-gateway";
const DESCRIPTORS_KEY: &str = "bench-helloworld";
const BACKEND_BODY: &str = r#"{"message":"Hello"}"#;
const JSON_REQUEST: &str = r#"{"name":"John"}"#;
const GREETING: &str = "Hello John";

const NGINX_BACKEND_CONF: &str = include_str!("../../bench/nginx-backend.conf");
const NGINX_PROXY_CONF: &str = include_str!("../../bench/nginx-proxy.conf");
const HAPROXY_CFG: &str = include_str!("../../bench/haproxy.cfg");

/// `helloworld.CallRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct CallRequest {
    #[prost(string, tag = "1")]
    name: String,
}

/// `helloworld.CallResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct CallResponse {
    #[prost(string, tag = "1")]
    message: String,
}

/// When set, the bench starts everything, prints the addresses and waits for Ctrl-C instead of
/// measuring: the same setup, driven by hand (wrk, perf).
const HOLD_ENV: &str = "BENCH_GATEWAY_HOLD";

/// The directory of the `microplane-gateway` and `helloworld` binaries to measure (default: this
/// binary's directory).
const BINARIES_ENV: &str = "BENCH_GATEWAY_BINARIES";

/// `a` runs (a) only and prints its figures instead of a report (for working on the data path).
const PART_ENV: &str = "BENCH_GATEWAY_PART";

/// With `BENCH_GATEWAY_PART=a`: the open-loop rate (calls/s) instead of half the closed-loop one.
const OPEN_RATE_ENV: &str = "BENCH_GATEWAY_OPEN_RATE";

/// Busy time of CPU 0 and CPU 1 from /proc/stat (jiffies: busy, total).
struct CpuBusy([(u64, u64); 2]);

impl CpuBusy {
    fn take() -> Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?)
    }

    /// The busy and total jiffies of CPU 0 and CPU 1 in the text of /proc/stat.
    fn parse(stat: &str) -> Result<Self> {
        let mut out = [(0, 0); 2];
        for (i, cpu) in ["cpu0 ", "cpu1 "].iter().enumerate() {
            let line = stat
                .lines()
                .find(|l| l.starts_with(cpu))
                .ok_or_else(|| anyhow!("no {cpu} in /proc/stat"))?;
            let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            out[i] = (total - idle, total);
        }
        Ok(Self(out))
    }

    /// Busy share of each CPU since `earlier`.
    fn since(&self, earlier: &Self) -> [f64; 2] {
        let share = |i: usize| {
            let busy = self.0[i].0.saturating_sub(earlier.0[i].0) as f64;
            let total = self.0[i].1.saturating_sub(earlier.0[i].1).max(1) as f64;
            busy / total
        };
        [share(0), share(1)]
    }
}

/// Set in the copy of the bench that runs in a session of its own.
const SESSION_ENV: &str = "BENCH_GATEWAY_SESSION";

fn main() -> Result<()> {
    if std::env::var_os(SESSION_ENV).is_none() && tool("setsid").is_ok() {
        return supervise();
    }
    // This process (sync server, generator, pacer) belongs with the load; its children inherit both
    // the CPU and the priority. Done before any other thread exists.
    pin(std::process::id(), LOAD_CPU)?;
    let (_no_idle_halt, idle) = hold_cpu_latency();
    let priority = format!("{}; {idle}", raise_priority());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        tokio::select! {
            r = run(priority) => r,
            s = interrupted() => Err(anyhow!("interrupted by {s}")),
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM, so that the guards still stop every process.
async fn interrupted() -> &'static str {
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
fn supervise() -> Result<()> {
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
fn raise_priority() -> String {
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
fn hold_cpu_latency() -> (Option<std::fs::File>, String) {
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

/// Sets the CPU affinity of every thread of `pid`.
fn pin(pid: u32, cpu: u32) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    ensure!(
        out.status.success(),
        "taskset -p {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn run(priority: String) -> Result<()> {
    let state = std::env::var_os("BENCH_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| microplane_e2e::repo_root().join(".state/bench"));
    let base = state.join("gateway");
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let dir = tempfile::Builder::new().prefix("run-").tempdir_in(&base)?;
    match bench(dir.path(), priority).await {
        Ok(report) => {
            println!("{report}");
            let file = state.join("gateway-report.md");
            std::fs::write(&file, &report).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("report written to {}", file.display());
            Ok(())
        }
        Err(e) => {
            let kept = dir.keep();
            eprintln!("bench-gateway failed; configs and logs are kept in {}", kept.display());
            Err(e)
        }
    }
}

/// Everything the report shows.
struct Report {
    tools: Vec<(String, String)>,
    machine: String,
    /// The 1-minute load average before anything started: other work on the machine skews results.
    load_before: String,
    /// The priority the bench ran at.
    priority: String,
    /// Share of the machine's CPU time that processes other than the bench's used while it measured.
    others_cpu: f64,
    commit: String,
    closed: ClosedLoop,
    open_rate: f64,
    direct: OpenLoop,
    through: OpenLoop,
    /// Busy share of CPU 0 and CPU 1 during the direct and the gateway open-loop runs.
    open_busy: [[f64; 2]; 2],
    /// The CPU the backends were pinned to.
    backend_cpu: u32,
    /// The same for the closed-loop run.
    closed_busy: [f64; 2],
    wrk: Vec<(String, Wrk)>,
    route_changes: Vec<Duration>,
    bulk: Bulk,
    /// (e): wrk with auth off, on, on, off.
    auth: Vec<(String, Wrk)>,
    /// (f): rule change → first answer that follows it.
    rule_changes: Vec<Duration>,
}

async fn bench(dir: &Path, priority: String) -> Result<String> {
    let load_before = load_average();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    ensure!(
        online_cpus()? >= 2,
        "the bench pins proxies to CPU 0 and load to CPU 1: it needs two CPUs (this process sees {cpus})"
    );
    let backend_cpu = if online_cpus()? > 2 { BACKEND_CPU } else { LOAD_CPU };
    let wrk = tool("wrk")?;
    let haproxy = tool("haproxy")?;
    let nginx = tool("nginx")?;
    // The binaries under test: the release build (`make bench-gateway` passes its directory), or
    // the ones next to this binary.
    let bins = match std::env::var_os(BINARIES_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("the bench binary has no directory"))?
            .to_path_buf(),
    };
    let gateway_bin = bins.join("microplane-gateway");
    let helloworld_bin = bins.join("helloworld");
    for b in [&gateway_bin, &helloworld_bin] {
        ensure!(
            b.is_file(),
            "{} is missing: cargo build --release -p microplane-gateway -p helloworld",
            b.display()
        );
    }
    let tools = vec![
        ("haproxy".to_string(), version(&haproxy, "-v")?),
        ("nginx".to_string(), version(&nginx, "-v")?),
        ("wrk".to_string(), version(&wrk, "-v")?),
        ("microplane-gateway".to_string(), version(&gateway_bin, "--version")?),
    ];
    std::fs::create_dir_all(dir.join("logs"))?;
    let [
        backend_port,
        hello_port,
        sync_port,
        gw_port,
        gw_admin_port,
        haproxy_port,
        nginx_port,
    ] = free_ports()?;
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], backend_port));
    let hello_addr = SocketAddr::from(([127, 0, 0, 1], hello_port));
    let gw_addr = SocketAddr::from(([127, 0, 0, 1], gw_port));
    let haproxy_addr = SocketAddr::from(([127, 0, 0, 1], haproxy_port));
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    let vars = |port: u16| {
        vec![
            ("DIR", dir.display().to_string()),
            ("PORT", port.to_string()),
            ("BACKEND", backend_port.to_string()),
        ]
    };

    // The HTTP backend and helloworld, on a CPU of their own when there is a third, else with the load.
    let backend_conf = write_config(dir, "nginx-backend.conf", NGINX_BACKEND_CONF, &vars(backend_port))?;
    let mut backend = Proc::spawn(
        dir,
        "nginx-backend",
        backend_cpu,
        &nginx,
        &nginx_args(dir, &backend_conf),
        &[],
    )?;
    let hello_env = [
        ("MICRO_SERVICE_ADDRESS", hello_addr.to_string()),
        ("MICRO_SERVICE_NAME", "helloworld".to_string()),
        ("MICRO_NAMESPACE", TENANT.to_string()),
        ("TOKIO_WORKER_THREADS", "1".to_string()),
    ];
    let mut helloworld = Proc::spawn(dir, "helloworld", backend_cpu, &helloworld_bin, &[], &hello_env)?;
    wait_http_ok(&mut backend, backend_addr, "/").await?;
    let discovered = discover(&mut helloworld, hello_addr).await?;
    ensure!(
        discovered.services.iter().any(|s| s == "helloworld.Helloworld"),
        "helloworld serves {:?}, not helloworld.Helloworld",
        discovered.services
    );

    // The operator's sync server, in this process.
    let mut routing = Routing {
        version: 0,
        backend: backend_addr.to_string(),
        helloworld: hello_addr.to_string(),
        descriptors: v1::Descriptors {
            key: DESCRIPTORS_KEY.into(),
            file_descriptor_set: discovered.file_descriptor_set,
            services: discovered.services,
        },
        extra: Vec::new(),
        secure_key: SigningKey::generate(SECURE_KID)?.pkcs8_der(),
        probe_denied: false,
    };
    let (snapshots, rx) = watch::channel(Some(Arc::new(routing.next())));
    let token = format!("bench-{}-{}", std::process::id(), unix_nanos());
    let token_file = dir.join("sync.token");
    std::fs::write(&token_file, &token)?;
    let sync_addr = SocketAddr::from(([127, 0, 0, 1], sync_port));
    let (stop_sync, stopped) = tokio::sync::oneshot::channel::<()>();
    let sync = tokio::spawn(server::serve(
        sync_addr,
        server::SyncService::new(rx, token, SyncMetrics::default()),
        async move {
            let _ = stopped.await;
        },
    ));

    // The three proxies, on the proxy CPU.
    let gw_env = [
        ("TOKIO_WORKER_THREADS", "1".to_string()),
        ("MICROPLANE_LOG", "info".to_string()),
    ];
    let gw_args = [
        "--address".to_string(),
        gw_addr.to_string(),
        "--admin-address".to_string(),
        SocketAddr::from(([127, 0, 0, 1], gw_admin_port)).to_string(),
        "--sync-endpoint".to_string(),
        format!("http://{sync_addr}"),
        "--sync-token-file".to_string(),
        token_file.display().to_string(),
        "--access-log".to_string(),
        "false".to_string(),
        "--default-tenant".to_string(),
        TENANT.to_string(),
    ];
    let mut gateway = Proc::spawn(dir, "microplane-gateway", PROXY_CPU, &gateway_bin, &gw_args, &gw_env)?;
    let haproxy_cfg = write_config(dir, "haproxy.cfg", HAPROXY_CFG, &vars(haproxy_port))?;
    let haproxy_args = ["-db".to_string(), "-f".to_string(), haproxy_cfg.display().to_string()];
    let mut haproxy_proc = Proc::spawn(dir, "haproxy", PROXY_CPU, &haproxy, &haproxy_args, &[])?;
    let nginx_conf = write_config(dir, "nginx-proxy.conf", NGINX_PROXY_CONF, &vars(nginx_port))?;
    let mut nginx_proc = Proc::spawn(
        dir,
        "nginx-proxy",
        PROXY_CPU,
        &nginx,
        &nginx_args(dir, &nginx_conf),
        &[],
    )?;

    let admin = SocketAddr::from(([127, 0, 0, 1], gw_admin_port));
    wait_http_ok(&mut gateway, admin, "/readyz").await?;
    for (p, addr) in [
        (&mut gateway, gw_addr),
        (&mut haproxy_proc, haproxy_addr),
        (&mut nginx_proc, nginx_addr),
    ] {
        wait_http_ok(p, addr, "/web/").await?;
        let (status, body) = H1::connect(addr).await?.get("/web/").await?;
        ensure!(
            status == StatusCode::OK && body == BACKEND_BODY.as_bytes(),
            "{} answers /web/ with {status} {:?}",
            p.name,
            String::from_utf8_lossy(&body)
        );
    }
    // The transcoded call answers as the brief says.
    let (status, body) = H1::connect(gw_addr)
        .await?
        .post_json("/helloworld/call", JSON_REQUEST)
        .await?;
    let json: serde_json::Value = serde_json::from_slice(&body).context("the gateway's answer is not JSON")?;
    ensure!(
        status == StatusCode::OK && json == serde_json::json!({"message": GREETING}),
        "POST /helloworld/call answered {status} {json}"
    );
    // Auth: the secure tenant refuses anonymous callers and serves the token's bearer.
    let bearer = format!("Bearer {}", secure_token(&routing.secure_key)?);
    let off_headers = vec![("micro-namespace".to_string(), TENANT.to_string())];
    let on_headers = vec![
        ("micro-namespace".to_string(), SECURE.to_string()),
        ("authorization".to_string(), bearer),
    ];
    let mut conn = H1::connect(gw_addr).await?;
    for (headers, want) in [
        (&off_headers, StatusCode::OK),
        (&on_headers, StatusCode::OK),
        (&on_headers[..1].to_vec(), StatusCode::UNAUTHORIZED),
    ] {
        let (status, body) = conn.get_with(gw_addr, "/web/", headers).await?;
        ensure!(
            status == want && (want != StatusCode::OK || body == BACKEND_BODY.as_bytes()),
            "GET /web/ with {:?} answered {status} {:?}, not {want}",
            headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            String::from_utf8_lossy(&body)
        );
    }
    for p in [&gateway, &haproxy_proc, &nginx_proc] {
        p.check_pinned(PROXY_CPU)?;
    }
    for p in [&backend, &helloworld] {
        p.check_pinned(backend_cpu)?;
    }

    let groups: Vec<u32> = [&backend, &helloworld, &gateway, &haproxy_proc, &nginx_proc]
        .iter()
        .map(|p| p.child.id())
        .collect();
    if std::env::var_os(HOLD_ENV).is_some() {
        // For profiling: everything runs; the caller drives the load and stops the bench.
        eprintln!(
            "{HOLD_ENV}: holding until Ctrl-C or SIGTERM\n  backend   http://{backend_addr}/\n  gateway   \
             http://{gw_addr}/web/ (pid {}), http://{gw_addr}/helloworld/call\n  haproxy   http://{haproxy_addr}/web/ \
             (pid {})\n  nginx     http://{nginx_addr}/web/ (pid {})\n  helloworld grpc://{hello_addr}",
            gateway.child.id(),
            haproxy_proc.child.id(),
            nginx_proc.child.id()
        );
        let _ = interrupted().await;
        bail!("held until interrupted (no measurement)");
    }
    let cpu_before = CpuSample::take(&groups)?;

    // (b) Proxy throughput.
    let only_a = std::env::var(PART_ENV).is_ok_and(|p| p == "a");
    let mut wrk_results = Vec::new();
    // The proxies in the order A B C C B A, so that a drift of the machine's speed (a shared VM's
    // neighbours) weighs on all alike; ratios are of the means.
    let order = [
        ("backend direct (ceiling, no proxy)", 0),
        ("microplane-gateway", 1),
        ("haproxy", 2),
        ("nginx", 3),
        ("nginx", 3),
        ("haproxy", 2),
        ("microplane-gateway", 1),
    ];
    for (name, which) in order {
        if only_a {
            break;
        }
        let (addr, path, proc) = match which {
            0 => (backend_addr, "/", &mut backend),
            1 => (gw_addr, "/web/", &mut gateway),
            2 => (haproxy_addr, "/web/", &mut haproxy_proc),
            _ => (nginx_addr, "/web/", &mut nginx_proc),
        };
        eprintln!("(b) wrk against {name}");
        let url = format!("http://{addr}{path}");
        wrk_results.push((name.to_string(), measure_wrk(&wrk, &url, &[], proc).await?));
    }

    // (e) Auth off and on: the same wrk run through the gateway, in the order off, on, on, off, so
    // that a drift of the machine's speed during the runs weighs on both alike.
    let mut auth_results = Vec::new();
    for (name, headers) in [
        (AUTH_OFF, &off_headers),
        (AUTH_ON, &on_headers),
        (AUTH_ON, &on_headers),
        (AUTH_OFF, &off_headers),
    ] {
        if only_a {
            break;
        }
        eprintln!("(e) wrk against the gateway, {name}");
        let url = format!("http://{gw_addr}/web/");
        auth_results.push((name.to_string(), measure_wrk(&wrk, &url, headers, &mut gateway).await?));
    }

    // (a) Added latency of JSON transcoding.
    eprintln!("(a) closed loop through the gateway");
    let through = Target::Gateway(gw_addr);
    let direct = Target::Direct(hello_addr);
    let busy = CpuBusy::take()?;
    let closed = closed_loop(&through, CONNECTIONS, CLOSED_WARMUP, CLOSED_MEASURE).await?;
    let closed_busy = CpuBusy::take()?.since(&busy);
    ensure!(closed.ok > 0, "no request through the gateway succeeded");
    // With (a) alone, the open-loop rate may be set by hand, to compare builds at the same load.
    let open_rate = match std::env::var(OPEN_RATE_ENV).ok().and_then(|r| r.parse::<f64>().ok()) {
        Some(rate) if only_a => rate,
        _ => closed.rate * OPEN_SHARE,
    };
    eprintln!("(a) open loop at {open_rate:.0}/s, direct");
    let busy = CpuBusy::take()?;
    let direct_run = open_loop(&direct, CONNECTIONS, open_rate, OPEN_WARMUP, OPEN_MEASURE).await?;
    let direct_busy = CpuBusy::take()?.since(&busy);
    eprintln!("(a) open loop at {open_rate:.0}/s, through the gateway");
    let busy = CpuBusy::take()?;
    let through_run = open_loop(&through, CONNECTIONS, open_rate, OPEN_WARMUP, OPEN_MEASURE).await?;
    let through_busy = CpuBusy::take()?.since(&busy);
    gateway.check_running()?;
    helloworld.check_running()?;
    if only_a {
        for (name, run, busy) in [
            ("direct", &direct_run, direct_busy),
            ("gateway", &through_run, through_busy),
        ] {
            eprintln!(
                "{name}: closed {:.0}/s (CPU busy {:.0}% / {:.0}%), open {open_rate:.0}/s achieved {:.0}/s, p50 {:.3} p90 {:.3} p99 {:.3} ms; \
                 CPU busy {:.0}% / {:.0}%",
                closed.rate,
                closed_busy[0] * 100.0,
                closed_busy[1] * 100.0,
                run.achieved,
                run.hist.value_at_quantile(0.5) as f64 / 1000.0,
                run.hist.value_at_quantile(0.9) as f64 / 1000.0,
                run.hist.value_at_quantile(0.99) as f64 / 1000.0,
                busy[0] * 100.0,
                busy[1] * 100.0
            );
        }
        bail!("{PART_ENV}=a: (a) only, no report");
    }

    // (c) Route changes.
    eprintln!("(c) {PROBES} route changes");
    let mut route_changes = Vec::with_capacity(PROBES);
    let mut probe = H1::connect(gw_addr).await?;
    for i in 0..PROBES {
        let name = format!("probe-{i}");
        routing.extra.push(name.clone());
        let snapshot = Arc::new(routing.next());
        let path = format!("/{name}/");
        let started = Instant::now();
        snapshots.send_replace(Some(snapshot));
        loop {
            let (status, _) = probe.get_reconnecting(gw_addr, &path).await?;
            if status == StatusCode::OK {
                route_changes.push(started.elapsed());
                break;
            }
            if started.elapsed() > ROUTE_TIMEOUT {
                gateway.check_running()?;
                bail!("route {name} did not answer 200 within {ROUTE_TIMEOUT:?} (last status {status})");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // (f) Rule changes, before (d) makes every snapshot a thousand routes larger.
    eprintln!("(f) {RULE_CHANGES} rule changes");
    let mut rule_changes = Vec::with_capacity(RULE_CHANGES);
    let mut probe = H1::connect(gw_addr).await?;
    for i in 0..RULE_CHANGES {
        let deny = i % 2 == 0;
        let want = if deny { StatusCode::FORBIDDEN } else { StatusCode::OK };
        let started = Instant::now();
        routing.probe_denied = deny;
        snapshots.send_replace(Some(Arc::new(routing.next())));
        loop {
            let (status, _) = probe.get_with(gw_addr, "/web/", &on_headers).await?;
            if status == want {
                rule_changes.push(started.elapsed());
                break;
            }
            ensure!(
                status == StatusCode::OK || status == StatusCode::FORBIDDEN,
                "GET /web/ answered {status} during rule change {i}"
            );
            if started.elapsed() > RULE_TIMEOUT {
                gateway.check_running()?;
                bail!("rule change {i} was not enforced within {RULE_TIMEOUT:?} (still {status})");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // (d) 1000 routes at once.
    eprintln!("(d) {BULK} routes in one snapshot");
    let bulk = bulk_routes(&mut routing, &snapshots, gw_addr).await?;
    gateway.check_running()?;

    let others_cpu = CpuSample::take(&groups)?.others_since(&cpu_before);
    let _ = stop_sync.send(());
    drop(snapshots);
    let _ = tokio::time::timeout(Duration::from_secs(2), sync).await;

    let report = Report {
        tools,
        machine: machine(),
        load_before,
        priority,
        others_cpu,
        commit: commit(),
        closed,
        open_rate,
        direct: direct_run,
        through: through_run,
        open_busy: [direct_busy, through_busy],
        backend_cpu,
        closed_busy,
        wrk: wrk_results,
        route_changes,
        bulk,
        auth: auth_results,
        rule_changes,
    };
    Ok(report.render())
}

// ---------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------

/// A process this bench started, in a process group of its own, pinned with `taskset`. Dropping it
/// stops the whole group: SIGTERM, then SIGKILL after 3 s.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        dir: &Path,
        name: &str,
        cpu: u32,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<Self> {
        let log = dir.join("logs").join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(cpu.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Fails with the end of its log when the process has exited.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Fails unless the process may run on `cpu` only.
    fn check_pinned(&self, cpu: u32) -> Result<()> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .unwrap_or("");
        ensure!(
            allowed == cpu.to_string(),
            "{} may run on CPUs {allowed:?}, not only {cpu}",
            self.name
        );
        Ok(())
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole group: nginx's and haproxy's workers too, even when the leader is gone.
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `-p` prefix, `-e` startup error log and `-c` config of an nginx instance.
fn nginx_args(dir: &Path, conf: &Path) -> Vec<String> {
    let stem = conf
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    vec![
        "-p".to_string(),
        format!("{}/", dir.display()),
        "-e".to_string(),
        dir.join("logs")
            .join(format!("{stem}.startup.log"))
            .display()
            .to_string(),
        "-c".to_string(),
        conf.display().to_string(),
    ]
}

/// Renders a template (`{{NAME}}` placeholders) into the run directory.
fn write_config(dir: &Path, name: &str, template: &str, vars: &[(&str, String)]) -> Result<PathBuf> {
    let mut text = template.to_string();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    ensure!(!text.contains("{{"), "{name}: a placeholder is left unrendered");
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Free loopback ports, all distinct (the listeners are held until every port is picked).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?;
    ports.try_into().map_err(|_| anyhow!("port allocation"))
}

/// A program on PATH or in the sbin directories (nginx and haproxy live in /usr/sbin).
fn tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} is not installed (apt-get install -y wrk haproxy nginx-light)"))
}

/// The first line a program prints for its version flag (on stdout or stderr).
fn version(program: &Path, flag: &str) -> Result<String> {
    let out = Command::new(program).arg(flag).stdin(Stdio::null()).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

fn online_cpus() -> Result<usize> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").context("reading the online CPUs")?;
    count_cpus(&online)
}

/// The number of CPUs in a kernel CPU list (`0-3,8`).
fn count_cpus(online: &str) -> Result<usize> {
    let mut n = 0;
    for range in online.trim().split(',') {
        n += match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>()? - a.parse::<usize>()? + 1,
            None => 1,
        };
    }
    Ok(n)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    format!("{} CPUs online, {model}", online_cpus().unwrap_or(0))
}

/// CPU time (clock ticks) of the whole machine and of the bench's own processes.
struct CpuSample {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuSample {
    /// The machine from /proc/stat; the bench's own: this process with its reaped children (wrk) and
    /// every live process of the `groups` it started.
    fn take(groups: &[u32]) -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        Self::from_stat(&stat, &processes()?, std::process::id(), groups)
    }

    /// The sample of the machine's /proc/stat text `stat` and the live `processes`: the bench's own
    /// are the process `me` with its reaped children and every process of the `groups`.
    fn from_stat(stat: &str, processes: &[ProcStat], me: u32, groups: &[u32]) -> Result<Self> {
        let cpu: Vec<u64> = stat
            .lines()
            .find_map(|l| l.strip_prefix("cpu "))
            .ok_or_else(|| anyhow!("/proc/stat has no cpu line"))?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        ensure!(cpu.len() >= 8, "unexpected /proc/stat");
        // user nice system idle iowait irq softirq steal
        let total = cpu[..8].iter().sum();
        let busy = total - cpu[3] - cpu[4];
        let own = processes
            .iter()
            .map(|p| {
                if p.pid == me {
                    p.cpu + p.children_cpu
                } else if groups.contains(&p.pgrp) {
                    p.cpu
                } else {
                    0
                }
            })
            .sum();
        Ok(Self { busy, total, own })
    }

    /// Share of all CPU time since `earlier` that other processes used.
    fn others_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        busy.saturating_sub(own) as f64 / total
    }
}

/// A live process from /proc: CPU times in clock ticks.
struct ProcStat {
    pid: u32,
    pgrp: u32,
    /// utime + stime.
    cpu: u64,
    /// cutime + cstime (reaped children).
    children_cpu: u64,
}

fn processes() -> Result<Vec<ProcStat>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        out.extend(ProcStat::parse(pid, &text));
    }
    Ok(out)
}

impl ProcStat {
    /// The process `pid` from the text of its /proc/<pid>/stat; none when it has no command name.
    fn parse(pid: u32, text: &str) -> Option<Self> {
        // The fields after the command name (which may hold spaces and parentheses) from field 3.
        let (_, rest) = text.rsplit_once(')')?;
        let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
        let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
        Some(Self {
            pid,
            pgrp: u32::try_from(field(5)).unwrap_or(0),
            cpu: field(14) + field(15),
            children_cpu: field(16) + field(17),
        })
    }
}

/// CPU time (clock ticks) of the live processes of a process group.
fn group_ticks(pgrp: u32) -> Result<u64> {
    Ok(processes()?.iter().filter(|p| p.pgrp == pgrp).map(|p| p.cpu).sum())
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(microplane_e2e::repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Waits until `GET path` on `addr` answers 200, failing early when the process exits.
async fn wait_http_ok(proc: &mut Proc, addr: SocketAddr, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.check_running()?;
        let last = match H1::connect(addr).await {
            Ok(mut c) => match c.get(path).await {
                Ok((StatusCode::OK, _)) => return Ok(()),
                Ok((status, body)) => format!("{status} {}", String::from_utf8_lossy(&body)),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "{} did not answer 200 on http://{addr}{path} within 30s (last: {last})",
                proc.name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Discovers helloworld's descriptors through reflection, as the operator does, once it listens.
async fn discover(proc: &mut Proc, addr: SocketAddr) -> Result<reflection::Discovered> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.check_running()?;
        match reflection::discover(&addr.to_string(), Duration::from_secs(5)).await {
            Ok(d) => return Ok(d),
            Err(e) if Instant::now() > deadline => return Err(e).context("discovering helloworld"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------------

/// The routing state the bench publishes: helloworld, web and any extra HTTP routes.
struct Routing {
    version: u64,
    backend: String,
    helloworld: String,
    descriptors: v1::Descriptors,
    /// HTTP routes to the nginx backend besides `web`.
    extra: Vec<String>,
    /// PKCS#8 DER of the `secure` tenant's signing key.
    secure_key: Vec<u8>,
    /// Whether the AuthRule `bench-probe` denies.
    probe_denied: bool,
}

impl Routing {
    /// The next snapshot: a higher version, built now.
    fn next(&mut self) -> v1::Snapshot {
        self.version += 1;
        let http = |name: &str, address: &str| v1::Service {
            tenant: TENANT.into(),
            name: name.into(),
            protocol: v1::Protocol::Http as i32,
            endpoints: vec![v1::Endpoint {
                address: address.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut services = vec![
            v1::Service {
                tenant: TENANT.into(),
                name: "helloworld".into(),
                protocol: v1::Protocol::Grpc as i32,
                endpoints: vec![v1::Endpoint {
                    address: self.helloworld.clone(),
                    ..Default::default()
                }],
                descriptors: DESCRIPTORS_KEY.into(),
            },
            http("web", &self.backend),
        ];
        services.extend(self.extra.iter().map(|n| http(n, &self.backend)));
        services.push(v1::Service {
            tenant: SECURE.into(),
            ..http("web", &self.backend)
        });
        v1::Snapshot {
            version: self.version,
            source: SOURCE.into(),
            built_unix_nanos: unix_nanos(),
            tenants: vec![
                v1::Tenant {
                    name: TENANT.into(),
                    rules: vec![public_default_rule()],
                    ..Default::default()
                },
                v1::Tenant {
                    name: SECURE.into(),
                    issuer: SECURE_ISSUER.into(),
                    signing_keys: vec![v1::SigningKey {
                        kid: SECURE_KID.into(),
                        pkcs8: self.secure_key.clone(),
                    }],
                    token_ttl_seconds: 900,
                    rules: vec![authenticated_default_rule(), probe_rule(self.probe_denied)],
                    ..Default::default()
                },
            ],
            services,
            descriptors: vec![self.descriptors.clone()],
        }
    }
}

/// The rule the operator gives a tenant with `defaultAccess: Public` (the default): anyone may call
/// anything, at the lowest priority.
fn public_default_rule() -> v1::Rule {
    v1::Rule {
        id: tenant::DEFAULT_RULE.into(),
        scope: String::new(),
        r#type: "*".into(),
        name: "*".into(),
        endpoint: "*".into(),
        denied: false,
        priority: tenant::DEFAULT_RULE_PRIORITY,
    }
}

/// The rule the operator gives a tenant with `defaultAccess: Authenticated`: any account of the
/// tenant may call anything, at the lowest priority.
fn authenticated_default_rule() -> v1::Rule {
    v1::Rule {
        scope: "*".into(),
        ..public_default_rule()
    }
}

/// The AuthRule (f) flips: the `secure` tenant's accounts on `web`, above the default rule.
fn probe_rule(denied: bool) -> v1::Rule {
    v1::Rule {
        id: PROBE_RULE.into(),
        scope: "*".into(),
        r#type: "service".into(),
        name: "web".into(),
        endpoint: "*".into(),
        denied,
        priority: 10,
    }
}

/// An access token of the `secure` tenant, signed with its key (what its token endpoint issues),
/// valid for an hour.
fn secure_token(pkcs8: &[u8]) -> Result<String> {
    let key = SigningKey::from_pkcs8_der(SECURE_KID, pkcs8)?;
    let now = unix_nanos() / 1_000_000_000;
    let claims = Claims {
        sub: "bench".into(),
        iss: SECURE_ISSUER.into(),
        exp: now + 3600,
        iat: now,
        account_type: "user".into(),
        token_use: "access".into(),
        ..Default::default()
    };
    Ok(key.sign(&claims)?)
}

/// Outcome of (d).
struct Bulk {
    /// Encoded size of the snapshot carrying the bulk routes.
    bytes: usize,
    /// Routes in that snapshot.
    routes: usize,
    /// `send_replace` → the first bulk route's first 200.
    first: Duration,
    /// `send_replace` → the last bulk route's first 200.
    all: Duration,
    /// Polling rounds it took.
    rounds: usize,
    /// The longest polling round: the resolution of `all`.
    round: Duration,
}

async fn bulk_routes(
    routing: &mut Routing,
    snapshots: &watch::Sender<Option<Arc<v1::Snapshot>>>,
    gw: SocketAddr,
) -> Result<Bulk> {
    let names: Vec<String> = (0..BULK).map(|i| format!("bulk-{i}")).collect();
    routing.extra.extend(names.iter().cloned());
    let snapshot = routing.next();
    let bytes = snapshot.encoded_len();
    let routes = snapshot.services.len();
    let mut pollers = Vec::with_capacity(BULK_POLLERS);
    for _ in 0..BULK_POLLERS {
        pollers.push(H1::connect(gw).await?);
    }
    // Every poller owns the routes i ≡ p (mod BULK_POLLERS) and polls its pending ones in rounds.
    let started = Instant::now();
    snapshots.send_replace(Some(Arc::new(snapshot)));
    let tasks = pollers.into_iter().enumerate().map(|(p, mut conn)| {
        let mut pending: Vec<String> = names.iter().skip(p).step_by(BULK_POLLERS).cloned().collect();
        async move {
            let mut first: Option<Duration> = None;
            let mut last = Duration::ZERO;
            let mut rounds = 0;
            let mut longest = Duration::ZERO;
            while !pending.is_empty() {
                rounds += 1;
                let round = Instant::now();
                let mut still = Vec::new();
                for name in pending {
                    let (status, _) = conn.get_reconnecting(gw, &format!("/{name}/")).await?;
                    if status == StatusCode::OK {
                        let at = started.elapsed();
                        first = Some(first.map_or(at, |f| f.min(at)));
                        last = last.max(at);
                    } else {
                        still.push(name);
                    }
                }
                pending = still;
                longest = longest.max(round.elapsed());
                if started.elapsed() > ROUTE_TIMEOUT && !pending.is_empty() {
                    bail!("{} bulk routes still not routed after {ROUTE_TIMEOUT:?}", pending.len());
                }
            }
            Ok::<_, anyhow::Error>((first.unwrap_or_default(), last, rounds, longest))
        }
    });
    let results = futures::future::try_join_all(tasks).await?;
    Ok(Bulk {
        bytes,
        routes,
        first: results.iter().map(|r| r.0).min().unwrap_or_default(),
        all: results.iter().map(|r| r.1).max().unwrap_or_default(),
        rounds: results.iter().map(|r| r.2).max().unwrap_or_default(),
        round: results.iter().map(|r| r.3).max().unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------------
// HTTP clients
// ---------------------------------------------------------------------------------------------------

/// One HTTP/1.1 keep-alive connection.
struct H1 {
    send: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl H1 {
    async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            send,
            host: addr.to_string(),
        })
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        json: Option<&'static str>,
        headers: &[(String, String)],
    ) -> Result<(StatusCode, Bytes)> {
        self.send.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let body = match json {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from_static(b.as_bytes()))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = self.send.send_request(req.body(body)?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        self.request(Method::GET, path, None, &[]).await
    }

    async fn post_json(&mut self, path: &str, body: &'static str) -> Result<(StatusCode, Bytes)> {
        self.request(Method::POST, path, Some(body), &[]).await
    }

    /// `GET path` with `headers`, on a new connection when this one has been closed.
    async fn get_with(
        &mut self,
        addr: SocketAddr,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<(StatusCode, Bytes)> {
        match self.request(Method::GET, path, None, headers).await {
            Ok(r) => Ok(r),
            Err(_) => {
                *self = Self::connect(addr).await?;
                self.request(Method::GET, path, None, headers).await
            }
        }
    }

    /// `GET path`, on a new connection when this one has been closed.
    async fn get_reconnecting(&mut self, addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes)> {
        match self.get(path).await {
            Ok(r) => Ok(r),
            Err(_) => {
                *self = Self::connect(addr).await?;
                self.get(path).await
            }
        }
    }
}

/// Where the generator sends `Helloworld.Call`.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// Through the gateway: `POST /helloworld/call` with JSON over HTTP/1.1.
    Gateway(SocketAddr),
    /// Straight to helloworld: gRPC over h2c, all workers multiplexed on one connection like the
    /// gateway's own channel to it (so helloworld serves the same kind of connection either way).
    Direct(SocketAddr),
}

/// One generator connection. The generator shares its CPU with helloworld, so its clients are as
/// light as the protocols allow: no task, channel or buffer of a general-purpose client per call.
enum Client {
    /// HTTP/1.1 on the socket itself: the request written whole, the response parsed in place.
    Json {
        stream: TcpStream,
        request: Bytes,
        buf: bytes::BytesMut,
    },
    /// gRPC with the `h2` crate directly (hyper's client spawns a task per request with a body).
    Grpc {
        send: h2::client::SendRequest<Bytes>,
        uri: Uri,
        frame: Bytes,
    },
}

impl Client {
    /// The clients of `n` workers: a connection each through the gateway, one shared h2c connection
    /// straight to helloworld.
    async fn workers(target: &Target, n: usize) -> Result<Vec<Self>> {
        let mut clients = Vec::with_capacity(n);
        match target {
            Target::Gateway(_) => {
                for _ in 0..n {
                    clients.push(Self::connect(target).await?);
                }
            }
            Target::Direct(_) => {
                if let Self::Grpc { send, uri, frame } = Self::connect(target).await? {
                    for _ in 0..n {
                        clients.push(Self::Grpc {
                            send: send.clone(),
                            uri: uri.clone(),
                            frame: frame.clone(),
                        });
                    }
                }
            }
        }
        Ok(clients)
    }

    async fn connect(target: &Target) -> Result<Self> {
        match *target {
            Target::Gateway(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let request = format!(
                    "POST /helloworld/call HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\n\r\n{JSON_REQUEST}",
                    JSON_REQUEST.len()
                );
                Ok(Self::Json {
                    stream,
                    request: Bytes::from(request),
                    buf: bytes::BytesMut::with_capacity(4096),
                })
            }
            Target::Direct(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (send, conn) = h2::client::handshake(stream).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let msg = CallRequest { name: "John".into() };
                let mut frame = Vec::with_capacity(5 + msg.encoded_len());
                frame.push(0);
                frame.extend_from_slice(&u32::try_from(msg.encoded_len())?.to_be_bytes());
                msg.encode(&mut frame)?;
                Ok(Self::Grpc {
                    send,
                    uri: format!("http://{addr}/helloworld.Helloworld/Call").parse()?,
                    frame: Bytes::from(frame),
                })
            }
        }
    }

    /// One `Helloworld.Call`, checked to answer "Hello John".
    async fn call(&mut self) -> Result<()> {
        match self {
            Self::Json { stream, request, buf } => {
                stream.write_all(request).await?;
                buf.clear();
                loop {
                    if let Some((status, body)) = parse_response(buf)? {
                        ensure!(
                            status == 200 && body.windows(GREETING.len()).any(|w| w == GREETING.as_bytes()),
                            "gateway answered {status} {:?}",
                            String::from_utf8_lossy(body)
                        );
                        return Ok(());
                    }
                    ensure!(stream.read_buf(buf).await? > 0, "the gateway closed the connection");
                }
            }
            Self::Grpc { send, uri, frame } => {
                let mut send = send.clone().ready().await?;
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(uri.clone())
                    .header(header::CONTENT_TYPE, "application/grpc")
                    .header(header::TE, "trailers")
                    .body(())?;
                let (response, mut body_out) = send.send_request(req, false)?;
                body_out.send_data(frame.clone(), true)?;
                let resp = response.await?;
                ensure!(resp.status() == StatusCode::OK, "helloworld answered {}", resp.status());
                // A trailers-only answer carries grpc-status in the headers.
                let (parts, mut body) = resp.into_parts();
                let mut data = bytes::BytesMut::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    data.extend_from_slice(&chunk);
                }
                let trailers = body.trailers().await?;
                let grpc_status = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .or_else(|| parts.headers.get("grpc-status"));
                ensure!(
                    grpc_status.is_some_and(|s| s == "0"),
                    "helloworld answered grpc-status {grpc_status:?}"
                );
                ensure!(data.len() >= 5 && data[0] == 0, "malformed gRPC message");
                let msg = CallResponse::decode(&data[5..])?;
                ensure!(msg.message == GREETING, "helloworld answered {:?}", msg.message);
                Ok(())
            }
        }
    }
}

/// The status and body of a complete HTTP/1.1 response with `Content-Length` at the start of
/// `buf`, or `None` while more is to come.
fn parse_response(buf: &[u8]) -> Result<Option<(u16, &[u8])>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(buf)? else {
        return Ok(None);
    };
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .ok_or_else(|| anyhow!("the gateway answered without Content-Length"))?;
    let status = resp.code.unwrap_or(0);
    Ok(buf.get(head..head + len).map(|body| (status, body)))
}

/// Outcome of a closed-loop run.
struct ClosedLoop {
    rate: f64,
    ok: u64,
    errors: u64,
}

/// Every connection sends its next call as soon as the previous one answered; calls completed in
/// the measured window count.
async fn closed_loop(target: &Target, conns: usize, warmup: Duration, measure: Duration) -> Result<ClosedLoop> {
    let clients = Client::workers(target, conns).await?;
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let target = *target;
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0u64, 0u64);
                while Instant::now() < until {
                    let r = tokio::time::timeout(CALL_TIMEOUT, client.call()).await;
                    let done = Instant::now();
                    let counted = done >= from && done < until;
                    if matches!(r, Ok(Ok(()))) {
                        ok += u64::from(counted);
                    } else {
                        errors += u64::from(counted);
                        client = Client::connect(&target).await?;
                    }
                }
                Ok::<_, anyhow::Error>((ok, errors))
            })
        })
        .collect();
    let (mut ok, mut errors) = (0, 0);
    for w in workers {
        let (o, e) = w.await??;
        ok += o;
        errors += e;
    }
    Ok(ClosedLoop {
        rate: ok as f64 / measure.as_secs_f64(),
        ok,
        errors,
    })
}

/// Outcome of an open-loop run.
struct OpenLoop {
    /// Latency from the scheduled send time, µs, of the calls scheduled in the measured window.
    hist: Histogram<u64>,
    /// Calls of the measured window completed per second, from its start to the last completion:
    /// below the scheduled rate when the system under load fell behind it.
    achieved: f64,
    errors: u64,
}

/// Sends at a fixed `rate`: a pacer thread releases send times `start + k/rate`; the next free
/// connection takes each one. Latency runs from the scheduled time, so queueing behind a slow call
/// is charged to the calls that waited.
async fn open_loop(target: &Target, conns: usize, rate: f64, warmup: Duration, measure: Duration) -> Result<OpenLoop> {
    ensure!(rate >= 1.0, "open-loop rate {rate} is too low");
    let clients = Client::workers(target, conns).await?;
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(20);
    let from = start + warmup;
    let total = ((warmup + measure).as_secs_f64() * rate) as u64;
    let pacer = std::thread::spawn(move || {
        for k in 0..total {
            let at = start + Duration::from_secs_f64(k as f64 / rate);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                return;
            }
        }
    });
    let target = *target;
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut errors = 0u64;
                let mut last_done = from;
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(at) = next else { break };
                    let r = tokio::time::timeout(CALL_TIMEOUT, client.call()).await;
                    let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let counted = at >= from;
                    if counted {
                        last_done = Instant::now();
                    }
                    if matches!(r, Ok(Ok(()))) {
                        if counted {
                            hist.saturating_record(micros.max(1));
                        }
                    } else {
                        errors += u64::from(counted);
                        client = Client::connect(&target).await?;
                    }
                }
                Ok::<_, anyhow::Error>((hist, errors, last_done))
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    let mut last_done = from;
    for w in workers {
        let (h, e, done) = w.await??;
        hist.add(&h)?;
        errors += e;
        last_done = last_done.max(done);
    }
    pacer.join().map_err(|_| anyhow!("the pacer thread panicked"))?;
    let span = last_done.duration_since(from).max(Duration::from_millis(1));
    Ok(OpenLoop {
        achieved: hist.len() as f64 / span.as_secs_f64(),
        hist,
        errors,
    })
}

// ---------------------------------------------------------------------------------------------------
// wrk
// ---------------------------------------------------------------------------------------------------

/// What wrk measured.
struct Wrk {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    /// CPU the server under test (its process group) used during the measured run, in CPUs.
    server_cpu: f64,
}

/// A wrk warm-up, then the measured run, with the CPU the server under test used meanwhile.
async fn measure_wrk(wrk: &Path, url: &str, headers: &[(String, String)], server: &mut Proc) -> Result<Wrk> {
    run_wrk(wrk, url, WRK_WARMUP, false, headers).await?;
    let (ticks, started) = (group_ticks(server.child.id())?, Instant::now());
    let mut result = parse_wrk(&run_wrk(wrk, url, WRK_DURATION, true, headers).await?)?;
    let used = group_ticks(server.child.id())?.saturating_sub(ticks) as f64 / clock_ticks_per_second();
    result.server_cpu = used / started.elapsed().as_secs_f64();
    server.check_running()?;
    Ok(result)
}

async fn run_wrk(wrk: &Path, url: &str, duration: &str, latency: bool, headers: &[(String, String)]) -> Result<String> {
    let mut cmd = tokio::process::Command::new("taskset");
    cmd.arg("-c")
        .arg(LOAD_CPU.to_string())
        .arg(wrk)
        .arg("-t1")
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{duration}"));
    if latency {
        cmd.arg("--latency");
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "wrk {url} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

/// `164.00us`, `1.20ms`, `2.00s`, `1.00m` → µs.
fn wrk_duration_us(s: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else {
        bail!("unknown wrk duration {s:?}")
    };
    Ok(num.parse::<f64>()? * scale)
}

fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk {
        rps: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        requests: 0,
        non_2xx: 0,
        socket_errors: 0,
        server_cpu: f64::NAN,
    };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            w.socket_errors = v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if words.len() >= 2 && words[1] == "requests" && words.get(2) == Some(&"in") {
            w.requests = words[0].parse()?;
        } else if let [pct, value] = words.as_slice() {
            match *pct {
                "50%" => w.p50_us = wrk_duration_us(value)?,
                "99%" => w.p99_us = wrk_duration_us(value)?,
                _ => {}
            }
        }
    }
    ensure!(
        w.rps.is_finite() && w.p50_us.is_finite() && w.p99_us.is_finite(),
        "cannot read wrk's report:\n{text}"
    );
    Ok(w)
}

// ---------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Mean requests/s of the wrk runs named `name` (NaN when there is none).
fn mean_rps(runs: &[(String, Wrk)], name: &str) -> f64 {
    let rps: Vec<f64> = runs.iter().filter(|(n, _)| n == name).map(|(_, w)| w.rps).collect();
    if rps.is_empty() {
        return f64::NAN;
    }
    rps.iter().sum::<f64>() / rps.len() as f64
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Wrk {
    /// This run as a row of the wrk tables: name, req/s, p50, p99, requests, non-2xx, socket errors, CPU.
    fn table_row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {:.0}% |",
            self.rps,
            self.p50_us / 1e3,
            self.p99_us / 1e3,
            self.requests,
            self.non_2xx,
            self.socket_errors,
            self.server_cpu * 100.0
        )
    }
}

impl Report {
    fn render(&self) -> String {
        let mut o = String::new();
        let mut line = |s: String| {
            o.push_str(&s);
            o.push('\n');
        };
        line("# bench-gateway".into());
        line(String::new());
        line(format!(
            "Commit {}; {}; 1-minute load average before the run {} (anything else running skews the results).",
            self.commit, self.machine, self.load_before
        ));
        line(format!(
            "Proxies under test pinned to CPU {PROXY_CPU} (the gateway with TOKIO_WORKER_THREADS=1); the backends \
             (nginx, helloworld) to CPU {}; wrk, the load generator and the sync server to CPU {LOAD_CPU}; {}. \
             Loopback only. Processes other than the bench's used {:.1}% of the machine's CPU time while it \
             measured.",
            self.backend_cpu,
            self.priority,
            self.others_cpu * 100.0
        ));
        line(String::new());
        line("| tool | version |".into());
        line("|---|---|".into());
        for (name, v) in &self.tools {
            line(format!("| {name} | {v} |"));
        }

        // (a)
        let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1e3;
        let quantiles = [0.5, 0.9, 0.99];
        line(String::new());
        line("## (a) Added latency of JSON transcoding".into());
        line(String::new());
        line(format!(
            "Closed loop through the gateway (`POST /helloworld/call` JSON, {CONNECTIONS} HTTP/1.1 keep-alive \
             connections, {}s after {}s warm-up): **{:.0} req/s** ({} errors; CPU 0 {:.0}% busy, CPU 1 {:.0}%). \
             Open loop at {:.0}% of that, **{:.0} req/s**, {}s after {}s warm-up, latency from the scheduled \
             send time (HDR histogram):",
            CLOSED_MEASURE.as_secs(),
            CLOSED_WARMUP.as_secs(),
            self.closed.rate,
            self.closed.errors,
            self.closed_busy[0] * 100.0,
            self.closed_busy[1] * 100.0,
            OPEN_SHARE * 100.0,
            self.open_rate,
            OPEN_MEASURE.as_secs(),
            OPEN_WARMUP.as_secs()
        ));
        line(String::new());
        line("| path | achieved req/s | errors | p50 ms | p90 ms | p99 ms | max ms | CPU 0 busy | CPU 1 busy |".into());
        line("|---|---|---|---|---|---|---|---|---|".into());
        for (name, run, busy) in [
            ("direct: gRPC h2c → helloworld", &self.direct, self.open_busy[0]),
            (
                "gateway: HTTP/1.1 JSON → gateway → gRPC → helloworld",
                &self.through,
                self.open_busy[1],
            ),
        ] {
            line(format!(
                "| {name} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0}% | {:.0}% |",
                run.achieved,
                run.errors,
                q(&run.hist, 0.5),
                q(&run.hist, 0.9),
                q(&run.hist, 0.99),
                run.hist.max() as f64 / 1e3,
                busy[0] * 100.0,
                busy[1] * 100.0
            ));
        }
        let added: Vec<f64> = quantiles
            .iter()
            .map(|&p| q(&self.through.hist, p) - q(&self.direct.hist, p))
            .collect();
        let added_max = (self.through.hist.max() as f64 - self.direct.hist.max() as f64) / 1e3;
        line(format!(
            "| **added (gateway − direct)** | | | {:.3} | {:.3} | **{:.3}** | {:.3} | | |",
            added[0], added[1], added[2], added_max
        ));
        if self.open_busy.iter().any(|b| b[1] >= 0.95) {
            line(String::new());
            let (who, remedy) = if self.backend_cpu == LOAD_CPU {
                (
                    "the load generator and helloworld",
                    "; on a machine with a third CPU the bench gives helloworld its own",
                )
            } else {
                ("the load generator", "")
            };
            line(format!(
                "CPU {LOAD_CPU} ({who}) was saturated during an open-loop run, although it was {:.0}% busy in \
                 the closed loop at twice the rate: requests that arrive one at a time are not batched by any \
                 stage (one wake-up, epoll round and context switch per request and process). Its percentiles \
                 include queueing on the load side, not only the path under test{remedy}.",
                self.closed_busy[1] * 100.0
            ));
        }
        let added_p99 = added[2];
        let a_clean = self.through.errors == 0 && self.direct.errors == 0 && self.closed.errors == 0;
        // Either run falling behind the schedule measures queueing, not the path.
        let kept_up = [&self.direct, &self.through]
            .iter()
            .all(|r| r.achieved >= OPEN_KEPT_UP * self.open_rate);

        // (b)
        line(String::new());
        line(format!(
            "## (b) Proxy throughput: `wrk -t1 -c{CONNECTIONS} -d{WRK_DURATION} --latency` after a {WRK_WARMUP} warm-up"
        ));
        line(String::new());
        line(format!(
            "Backend: nginx returning `200 {BACKEND_BODY}` with keep-alive. Each proxy maps `/web/<rest>` to the \
             backend's `/<rest>`, adds X-Forwarded-For/-Host/-Proto, keeps backend connections alive, logs nothing."
        ));
        line(String::new());
        line("| target | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors | server CPU |".into());
        line("|---|---|---|---|---|---|---|---|".into());
        for (name, w) in &self.wrk {
            line(w.table_row(name));
        }
        let mean = |n: &str| mean_rps(&self.wrk, n);
        let (gw, hap, ngx) = (mean("microplane-gateway"), mean("haproxy"), mean("nginx"));
        let vs_haproxy = gw / hap;
        let vs_nginx = gw / ngx;
        let b_clean = self.wrk.iter().all(|(_, w)| w.non_2xx == 0 && w.socket_errors == 0);
        line(String::new());
        line(format!(
            "Means of the two runs of each: gateway {gw:.0}, haproxy {hap:.0}, nginx {ngx:.0} req/s. Ratios: \
             gateway/haproxy = **{vs_haproxy:.2}×**, gateway/nginx = **{vs_nginx:.2}×**. Server CPU: CPU time the server \
             under test (the proxy; the backend in the first row) used during the measured run, 100% = one CPU."
        ));

        // (c)
        let mut sorted = self.route_changes.clone();
        sorted.sort();
        let (c50, c99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
        let (cmin, cmax) = (
            sorted.first().copied().unwrap_or_default(),
            sorted.last().copied().unwrap_or_default(),
        );
        line(String::new());
        line(format!(
            "## (c) Route change latency: {} snapshots, each adding one HTTP route",
            sorted.len()
        ));
        line(String::new());
        line(
            "From `send_replace` on the operator's sync server to the first 200 for `/probe-<i>/`, polled back to \
             back on one kept-alive connection."
                .into(),
        );
        line(String::new());
        line("| p50 ms | p99 ms | max ms | min ms |".into());
        line("|---|---|---|---|".into());
        line(format!(
            "| {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(c50),
            ms(c99),
            ms(cmax),
            ms(cmin)
        ));

        // (d)
        let b = &self.bulk;
        line(String::new());
        line(format!("## (d) {BULK} routes in one snapshot"));
        line(String::new());
        line(format!(
            "One snapshot ({} services, {:.1} KiB encoded) adds `bulk-0` … `bulk-{}`; all polled in rounds over \
             {BULK_POLLERS} kept-alive connections until each answered 200 ({} rounds).",
            b.routes,
            b.bytes as f64 / 1024.0,
            BULK - 1,
            b.rounds
        ));
        line(String::new());
        line("| first bulk route answers 200 | every bulk route answered 200 | longest polling round |".into());
        line("|---|---|---|".into());
        line(format!(
            "| {:.1} ms | **{:.1} ms** | {:.1} ms |",
            ms(b.first),
            ms(b.all),
            ms(b.round)
        ));

        // (e)
        line(String::new());
        line(format!(
            "## (e) Auth at the edge: `wrk -t1 -c{CONNECTIONS} -d{WRK_DURATION} --latency` on the gateway's `/web/`, off, on, on, off"
        ));
        line(String::new());
        line(
            "Off: `Micro-Namespace: micro`, the default public rule, no token. On: `Micro-Namespace: secure`, the \
             default rule with scope `*` (`defaultAccess: Authenticated`) and `Authorization: Bearer` with an ES256 \
             access token of that tenant on every request (verified — the verified-token cache included — and \
             authorized each time). Same backend, load and pinning as (b)."
                .into(),
        );
        line(String::new());
        line("| gateway | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors | gateway CPU |".into());
        line("|---|---|---|---|---|---|---|---|".into());
        for (name, w) in &self.auth {
            line(w.table_row(name));
        }
        let (off_rps, on_rps) = (mean_rps(&self.auth, AUTH_OFF), mean_rps(&self.auth, AUTH_ON));
        let auth_ratio = if off_rps > 0.0 { on_rps / off_rps } else { f64::NAN };
        let e_clean = !self.auth.is_empty() && self.auth.iter().all(|(_, w)| w.non_2xx == 0 && w.socket_errors == 0);
        line(String::new());
        line(format!(
            "Means: off **{off_rps:.0} req/s**, on **{on_rps:.0} req/s**; ratio on/off = **{auth_ratio:.2}×**."
        ));

        // (f)
        let mut rules = self.rule_changes.clone();
        rules.sort();
        let (f50, f99) = (percentile(&rules, 0.5), percentile(&rules, 0.99));
        line(String::new());
        line(format!(
            "## (f) Rule change latency: {} AuthRule changes, alternating deny and grant",
            rules.len()
        ));
        line(String::new());
        line(
            "From the changed rule set handed to the operator's sync server (snapshot built, then `send_replace`) \
             to the first `GET /web/` with the token that the gateway answers by the new rule (403 after a deny, \
             200 after a grant), polled back to back on one kept-alive connection."
                .into(),
        );
        line(String::new());
        line("| p50 ms | p99 ms | max ms | min ms |".into());
        line("|---|---|---|---|".into());
        line(format!(
            "| {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(f50),
            ms(f99),
            ms(rules.last().copied().unwrap_or_default()),
            ms(rules.first().copied().unwrap_or_default())
        ));

        // Targets.
        line(String::new());
        line("## Targets".into());
        line(String::new());
        line("| target | measured | verdict |".into());
        line("|---|---|---|".into());
        let a_note = match (a_clean, kept_up) {
            (true, true) => "",
            (false, _) => " (with errors)",
            (true, false) => " (a run fell behind the rate: not a valid measure)",
        };
        line(format!(
            "| (a) added p99 of JSON transcoding ≤ {TARGET_ADDED_P99_MS} ms | {added_p99:.3} ms{a_note} | {} |",
            verdict(a_clean && kept_up && added_p99 <= TARGET_ADDED_P99_MS)
        ));
        line(format!(
            "| (b) gateway throughput ≥ {TARGET_HAPROXY_RATIO:.1}× haproxy | {vs_haproxy:.2}×{} | {} |",
            if b_clean { "" } else { " (with errors)" },
            verdict(b_clean && vs_haproxy >= TARGET_HAPROXY_RATIO)
        ));
        line(format!(
            "| (c) route change p99 ≤ {TARGET_ROUTE_P99_MS} ms | {:.2} ms | {} |",
            ms(c99),
            verdict(ms(c99) <= TARGET_ROUTE_P99_MS)
        ));
        line(format!(
            "| (d) {BULK} routes at once ≤ {TARGET_BULK_MS} ms | {:.1} ms | {} |",
            ms(b.all),
            verdict(ms(b.all) <= TARGET_BULK_MS)
        ));
        line(format!(
            "| (e) gateway throughput with auth ≥ {TARGET_AUTH_RATIO:.1}× without | {auth_ratio:.2}×{} | {} |",
            if e_clean { "" } else { " (with errors)" },
            verdict(e_clean && auth_ratio >= TARGET_AUTH_RATIO)
        ));
        line(format!(
            "| (f) rule change p99 ≤ {TARGET_RULE_P99_MS} ms ({} samples) | {:.2} ms | {} |",
            rules.len(),
            ms(f99),
            verdict(rules.len() >= RULE_CHANGES && ms(f99) <= TARGET_RULE_P99_MS)
        ));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let text = "Running 10s test @ http://127.0.0.1:1/web/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  200.00us   9.00ms   90.00%
    Req/Sec    50.00k     1.00k   55.00k    70.00%
  Latency Distribution
     50%  980.00us
     75%    1.10ms
     90%    1.30ms
     99%    2.50ms
  500000 requests in 10.00s, 80.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  49999.50
Transfer/sec:      8.00MB
";
        let w = parse_wrk(text).unwrap();
        assert!((w.rps - 49999.5).abs() < 1e-6);
        assert!((w.p50_us - 980.0).abs() < 1e-6);
        assert!((w.p99_us - 2500.0).abs() < 1e-6);
        assert_eq!((w.requests, w.non_2xx, w.socket_errors), (500_000, 4, 3));
    }

    #[test]
    fn reads_wrk_durations_and_refuses_incomplete_reports() {
        assert!((wrk_duration_us("164.00us").unwrap() - 164.0).abs() < 1e-9);
        assert!((wrk_duration_us("1.20ms").unwrap() - 1200.0).abs() < 1e-9);
        assert!((wrk_duration_us("2.00s").unwrap() - 2e6).abs() < 1e-9);
        assert!((wrk_duration_us("1.00m").unwrap() - 60e6).abs() < 1e-9);
        assert!(wrk_duration_us("3h").is_err());
        assert!(wrk_duration_us("fast ms").is_err());
        // Without socket errors and non-2xx lines (wrk leaves them out when there are none).
        let text = "  Latency Distribution\n     50%  164.00us\n     99%    1.00s\n  \
                    12 requests in 1.00s, 1.00KB read\nRequests/sec:     12.00\n";
        let w = parse_wrk(text).unwrap();
        assert!((w.p99_us - 1e6).abs() < 1e-9);
        assert_eq!((w.requests, w.non_2xx, w.socket_errors), (12, 0, 0));
        assert!(w.server_cpu.is_nan());
        // Without --latency there are no percentiles: not a report the bench can use.
        let Err(err) = parse_wrk("Requests/sec:  1.00\n") else {
            panic!("read a report without percentiles")
        };
        assert!(err.to_string().contains("cannot read wrk's report"), "{err}");
    }

    #[test]
    fn cpu_busy_shares_from_proc_stat() {
        let before = CpuBusy::parse(
            "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 0 100 700 100 0 0 0 0 0\ncpu1 10 0 0 90 0 0 0 0 0 0\nintr 1\n",
        )
        .unwrap();
        assert_eq!(before.0, [(200, 1000), (10, 100)]);
        let after = CpuBusy::parse("cpu0 150 0 150 750 150 0 0 0 0 0\ncpu1 110 0 0 90 0 0 0 0 0 0\n").unwrap();
        let share = after.since(&before);
        assert!((share[0] - 0.5).abs() < 1e-9, "{share:?}");
        assert!((share[1] - 1.0).abs() < 1e-9, "{share:?}");
        // No time passed: no division by zero.
        assert_eq!(before.since(&before), [0.0, 0.0]);
        assert!(CpuBusy::parse("cpu0 1 2 3 4\n").is_err());
    }

    #[test]
    fn cpu_of_other_processes() {
        let stat = |pid: u32, name: &str, pgrp: u32, ticks: [u64; 4]| {
            ProcStat::parse(
                pid,
                &format!(
                    "{pid} ({name}) S 1 {pgrp} {pgrp} 0 -1 4194560 0 0 0 0 {} {} {} {} 20 0 1 0 1 0 0",
                    ticks[0], ticks[1], ticks[2], ticks[3]
                ),
            )
            .unwrap()
        };
        let p = stat(7, "a (b) c", 42, [3, 4, 5, 6]);
        assert_eq!((p.pid, p.pgrp, p.cpu, p.children_cpu), (7, 42, 7, 11));
        assert!(ProcStat::parse(1, "garbage").is_none());
        // user nice system idle iowait irq softirq steal
        let machine = |busy: u64, idle: u64| format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0\n");
        let earlier = [
            stat(10, "bench", 10, [5, 5, 1, 1]),
            stat(20, "nginx", 20, [10, 0, 0, 0]),
        ];
        let later = [
            stat(10, "bench", 10, [15, 5, 11, 1]),
            stat(20, "nginx", 20, [40, 0, 0, 0]),
            stat(21, "nginx", 20, [10, 0, 0, 0]),
            stat(30, "other", 30, [1000, 0, 0, 0]),
        ];
        let before = CpuSample::from_stat(&machine(100, 900), &earlier, 10, &[20]).unwrap();
        assert_eq!((before.busy, before.total, before.own), (100, 1000, 22));
        let after = CpuSample::from_stat(&machine(300, 1700), &later, 10, &[20]).unwrap();
        // Own: the bench with its reaped children (20 + 12) and group 20 (40 + 10); 60 of the 200 busy
        // ticks since, so others used 140 of 1000.
        assert_eq!(after.own, 82);
        assert!((after.others_since(&before) - 140.0 / 1000.0).abs() < 1e-9);
        assert!(CpuSample::from_stat("cpu  1 2 3\n", &[], 1, &[]).is_err());
        assert!(CpuSample::from_stat("intr 1\n", &[], 1, &[]).is_err());
    }

    #[test]
    fn counts_online_cpus() {
        assert_eq!(count_cpus("0-1\n").unwrap(), 2);
        assert_eq!(count_cpus("0\n").unwrap(), 1);
        assert_eq!(count_cpus("0-3,8,10-11").unwrap(), 7);
        assert!(count_cpus("a-b").is_err());
    }

    #[test]
    fn parses_complete_http1_responses_only() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(full).unwrap(), Some((200, &b"hello"[..])));
        assert_eq!(parse_response(&full[..full.len() - 1]).unwrap(), None);
        assert_eq!(parse_response(&full[..20]).unwrap(), None);
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_response(chunked).is_err());
    }

    #[test]
    fn renders_templates_and_refuses_unrendered_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let vars = [("PORT", "80".to_string()), ("DIR", "/x".to_string())];
        let path = write_config(dir.path(), "a.conf", "listen {{PORT}}; root {{DIR}}/{{PORT}};", &vars).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "listen 80; root /x/80;");
        assert!(write_config(dir.path(), "b.conf", "{{BACKEND}}", &vars).is_err());
        let args = nginx_args(Path::new("/run/x"), Path::new("/run/x/nginx-proxy.conf"));
        assert_eq!(
            args,
            [
                "-p",
                "/run/x/",
                "-e",
                "/run/x/logs/nginx-proxy.startup.log",
                "-c",
                "/run/x/nginx-proxy.conf"
            ]
        );
    }

    #[test]
    fn means_and_verdicts() {
        let w = |rps: f64| Wrk {
            rps,
            p50_us: 1.0,
            p99_us: 2.0,
            requests: 1,
            non_2xx: 0,
            socket_errors: 0,
            server_cpu: 0.5,
        };
        let runs = vec![
            ("a".to_string(), w(100.0)),
            ("b".to_string(), w(7.0)),
            ("a".to_string(), w(200.0)),
        ];
        assert!((mean_rps(&runs, "a") - 150.0).abs() < 1e-9);
        assert!(mean_rps(&runs, "c").is_nan());
        assert_eq!((verdict(true), verdict(false)), ("MET", "NOT MET"));
        assert_eq!(
            w(1234.4).table_row("x"),
            "| x | 1234 | 0.001 | 0.002 | 1 | 0 | 0 | 50% |"
        );
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&[Duration::from_millis(3)], 0.0), Duration::from_millis(3));
    }

    /// A report of made-up figures, rendered: the layout and wording of the report.
    fn sample_report() -> Report {
        let wrk = |rps: f64, errors: u64, cpu: f64| Wrk {
            rps,
            p50_us: 980.0,
            p99_us: 2500.0,
            requests: (rps * 10.0) as u64,
            non_2xx: errors,
            socket_errors: 0,
            server_cpu: cpu,
        };
        let hist = |base: u64| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for i in 0..1000 {
                h.record(base + i).unwrap();
            }
            h
        };
        let millis = |n: u64| Duration::from_micros(n * 1100);
        Report {
            tools: vec![
                ("haproxy".into(), "HAProxy version 2.6.12".into()),
                ("nginx".into(), "nginx version: nginx/1.22.1".into()),
                ("wrk".into(), "wrk 4.1.0".into()),
                ("microplane-gateway".into(), "microplane-gateway 0.1.0".into()),
            ],
            machine: "2 CPUs online, Test CPU @ 2.0GHz".into(),
            load_before: "0.42".into(),
            priority: "normal priority (raising it was not permitted); idle CPUs may halt".into(),
            others_cpu: 0.0123,
            commit: "abc1234".into(),
            closed: ClosedLoop {
                rate: 20_000.4,
                ok: 100_002,
                errors: 0,
            },
            open_rate: 10_000.2,
            direct: OpenLoop {
                hist: hist(100),
                achieved: 9_990.0,
                errors: 0,
            },
            through: OpenLoop {
                hist: hist(400),
                achieved: 9_400.0,
                errors: 2,
            },
            open_busy: [[0.4, 0.6], [0.9, 0.97]],
            backend_cpu: LOAD_CPU,
            closed_busy: [1.0, 0.8],
            wrk: vec![
                ("backend direct (ceiling, no proxy)".into(), wrk(90_000.0, 0, 0.7)),
                ("microplane-gateway".into(), wrk(40_000.0, 0, 1.0)),
                ("haproxy".into(), wrk(35_000.0, 0, 0.99)),
                ("nginx".into(), wrk(30_000.0, 0, 1.0)),
                ("nginx".into(), wrk(31_000.0, 0, 1.0)),
                ("haproxy".into(), wrk(36_000.0, 0, 0.99)),
                ("microplane-gateway".into(), wrk(41_000.0, 0, 1.0)),
            ],
            route_changes: (1..=PROBES as u64).rev().map(millis).collect(),
            bulk: Bulk {
                bytes: 123_456,
                routes: 1004,
                first: Duration::from_millis(30),
                all: Duration::from_millis(250),
                rounds: 3,
                round: Duration::from_millis(90),
            },
            auth: vec![
                (AUTH_OFF.into(), wrk(40_000.0, 0, 1.0)),
                (AUTH_ON.into(), wrk(30_000.0, 1, 1.0)),
                (AUTH_ON.into(), wrk(31_000.0, 0, 1.0)),
                (AUTH_OFF.into(), wrk(41_000.0, 0, 1.0)),
            ],
            rule_changes: (1..=RULE_CHANGES as u64).map(millis).collect(),
        }
    }

    /// The report of [`sample_report`] as the bench writes it, byte for byte.
    #[test]
    fn renders_the_report() {
        assert_eq!(
            sample_report().render(),
            include_str!("bench-gateway/testdata/report.md")
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=50).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 0.5), Duration::from_millis(25));
        assert_eq!(percentile(&s, 0.99), Duration::from_millis(50));
    }
}
