//! `make bench-gateway`: the gateway's data path and routing sync, measured in one run on loopback.
//!
//! The bench plays the operator with the operator's own sync code: a
//! `microplane_operator::publish::server::SyncService` fed hand-built `v1::Snapshot`s through a
//! `watch` channel: tenant `micro` with the operator's default public rule; `helloworld` as a gRPC
//! service whose descriptors come from `microplane_operator::discovery::reflection::discover`; `web` as
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
//!   keep-alive connection per worker, to find its maximum throughput and the gateway's CPU time per
//!   transcoded call; then the same clients post the same JSON to `/web/` (proxied to the HTTP
//!   backend, not transcoded) for the gateway's CPU per proxied call. Then open loop at a rate where
//!   no CPU is more than half busy (from half the closed-loop rate, lowered after short runs of both
//!   paths until neither CPU passes 50%;
//!   the report gives the busy shares of the measured runs), once straight to helloworld over gRPC (h2c, a hand-framed `CallRequest`,
//!   `grpc-status` 0 checked in the trailers; the workers share one connection, as the gateway's
//!   own channel to helloworld does) and once through the gateway. A pacer thread releases the send
//!   times at fixed intervals and any free worker takes the next one; latency runs from the
//!   *scheduled* send time to the complete response, so a slow response is charged to the requests
//!   queued behind it too (no coordinated omission). A run that completes less than 95% of the
//!   scheduled rate fell behind and does not count. Latencies go into HDR histograms (µs, 3
//!   significant digits); the added latency is gateway − direct per percentile.
//! - **(b) Proxy throughput and CPU per request.** `wrk -t1 -c64 --latency` against the backend
//!   itself (the ceiling, no proxy; 2 s warm-up, then 10 s), then 6 rounds of the three proxies'
//!   `/web/` (1 s warm-up, then 4 s each), the rounds in all six orders of the three, so that each
//!   proxy runs first, second and third equally often and a drift of a shared machine's speed
//!   weighs on all alike. Per run: requests/s, p50, p99, non-2xx responses and socket errors from
//!   wrk's report; the CPU time of the server under test (its process group, from /proc/<pid>/stat)
//!   and the busy time of CPU 0 (from /proc/stat: the proxy with the kernel's work for it, softirq
//!   included), each divided by the requests wrk completed. The report gives each proxy's median
//!   and range over its 6 runs, and the ratios of the medians: CPU per request is what a 2-CPU
//!   machine measures steadily; throughput there also depends on what shares the other CPU.
//! - **(c) Route change latency.** 50 times: publish a snapshot adding an HTTP route `probe-<i>`
//!   (to the nginx backend) with `send_replace`, and poll `GET /probe-<i>/` back to back on one
//!   kept-alive connection until the first 200; the time from `send_replace` to that 200.
//! - **(d) 1000 routes at once.** Publish one snapshot adding `bulk-0` … `bulk-999` and poll all of
//!   them in rounds (8 kept-alive connections) until every one answered 200; the time from
//!   `send_replace` to the last route's first 200.
//! - **(e) Auth on vs off.** The wrk run of (b)'s ceiling (2 s warm-up, 10 s) against the gateway's `/web/` four times, in
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
//! - **(g) Abusive load.** Last, against the same gateway (its memory state after (a)–(f)): VmHWM is
//!   reset (`clear_refs` 5), then for 10 s this binary attacks it from 268 connections at once: 32
//!   HTTP/1.1 connections posting 4 MiB JSON bodies of tiny values (`{"name":"x","a":[0,0,…]}`,
//!   refused by the transcoder's cap of one value per 16 bytes) to `POST /helloworld/call`; 8 each
//!   posting 5 MiB (over `--max-body-bytes`, 4 MiB) to `/web/` and to `/helloworld/call`, with
//!   `Content-Length` and chunked; 4 HTTP/2 prior-knowledge connections with 128 stream tasks each
//!   (the gateway allows 100 at once; the rest queue in h2), each stream sending a 5 MiB body at
//!   16 KiB per 25 ms; and 200 slow-loris connections whose request head grows by a 2 KiB header
//!   line every 200 ms and never ends. Every attacker reconnects and starts over when the gateway
//!   answers or closes. Meanwhile a normal client sends `POST /helloworld/call {"name":"John"}` and
//!   `GET /web/` alternately at 50/s (kept-alive connections, 5 s timeout, latency from the
//!   scheduled time), and a thread samples the gateway's VmRSS every 20 ms; VmHWM is read at the
//!   end. The peak (the higher of the two) is compared with the gateway pod's memory limit,
//!   `gateway.resources.limits.memory` of the chart's values; the table counts each attack's
//!   answers (413 and 431 expected), closes without answer and errors. The attack stops early if
//!   the RSS passes 4× the limit (nothing limits it on the bench machine). `BENCH_GATEWAY_PART=g`
//!   runs (g) alone, right after the setup; `BENCH_GATEWAY_ATTACKS` (a comma-separated subset of
//!   `json`, `over`, `h2`, `loris`) runs only some of its attacks, to tell their costs apart.
//!
//! The report (markdown) goes to stdout and `.state/bench/gateway-report.md` with MET/NOT MET per
//! target. The exit status is non-zero only when the bench could not run, never for a missed target.
//!
//! # Code
//!
//! `session` is the bench's own process (its session, priority and signals); `procs` the processes
//! it starts and stops; `cpu` and `host` what it reads from /proc and /sys; `fixtures` the snapshots
//! it publishes as the operator; `h1` its HTTP/1.1 client for checks and polling; `load` the
//! generator of (a); `wrk` the runs of (b) and (e); `changes` the measurements of (c), (d) and (f);
//! `report` the report; `abuse` the attackers, the normal client and the RSS sampler of (g);
//! `params` the measurement parameters.

mod abuse;
mod changes;
mod cpu;
mod fixtures;
mod h1;
mod host;
mod load;
mod params;
mod procs;
mod report;
mod session;
mod wrk;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use http::StatusCode;
use microplane_gateway::auth::token::SigningKey;
use microplane_operator::discovery::reflection;
use microplane_operator::metrics::SyncMetrics;
use microplane_operator::publish::server;
use microplane_wire::sync::v1;
use tokio::sync::watch;

use crate::abuse::abusive_load;
use crate::changes::{bulk_routes, route_changes, rule_changes};
use crate::cpu::{CpuBusy, CpuSample, clock_ticks_per_second, group_ticks, online_cpus};
use crate::fixtures::{DESCRIPTORS_KEY, Routing, SECURE, SECURE_KID, TENANT, secure_token, unix_nanos};
use crate::h1::H1;
use crate::host::{commit, load_average, machine};
use crate::load::{Target, closed_loop, open_loop};
use crate::params::{
    ABUSE_DURATION, AUTH_OFF, AUTH_ON, BACKEND_BODY, BACKEND_CPU, BULK, CEILING, CLOSED_MEASURE, CLOSED_WARMUP,
    CONNECTIONS, GREETING, JSON_REQUEST, LOAD_CPU, OPEN_CALIBRATION, OPEN_CALIBRATION_RUNS, OPEN_MAX_BUSY,
    OPEN_MEASURE, OPEN_SHARE, OPEN_WARMUP, PROBES, PROXY_CPU, ROUND_DURATION, ROUND_ORDERS, ROUND_WARMUP, RULE_CHANGES,
    WRK_DURATION, WRK_WARMUP,
};
use crate::procs::{Proc, free_ports, nginx_args, pin, tool, version, wait_http_ok, write_config};
use crate::report::Report;
use crate::session::{SESSION_ENV, hold_cpu_latency, interrupted, raise_priority, supervise};
use crate::wrk::{Durations, measure_wrk};

/// wrk runs of the ceiling and of (e), and of (b)'s rounds.
const FULL_RUN: Durations = Durations {
    warmup: WRK_WARMUP,
    measured: WRK_DURATION,
};
const ROUND_RUN: Durations = Durations {
    warmup: ROUND_WARMUP,
    measured: ROUND_DURATION,
};

const NGINX_BACKEND_CONF: &str = include_str!("../../../bench/nginx-backend.conf");
const NGINX_PROXY_CONF: &str = include_str!("../../../bench/nginx-proxy.conf");
const HAPROXY_CFG: &str = include_str!("../../../bench/haproxy.cfg");

/// When set, the bench starts everything, prints the addresses and waits for Ctrl-C instead of
/// measuring: the same setup, driven by hand (wrk, perf).
const HOLD_ENV: &str = "BENCH_GATEWAY_HOLD";

/// The directory of the `microplane-gateway` and `helloworld` binaries to measure (default: this
/// binary's directory).
const BINARIES_ENV: &str = "BENCH_GATEWAY_BINARIES";

/// `a` runs (a) only and prints its figures instead of a report (for working on the data path);
/// `g` runs (g) only, right after the setup, and writes its report to `gateway-report-g.md`.
const PART_ENV: &str = "BENCH_GATEWAY_PART";

/// With `BENCH_GATEWAY_PART=a`: the open-loop rate (calls/s) instead of half the closed-loop one.
const OPEN_RATE_ENV: &str = "BENCH_GATEWAY_OPEN_RATE";

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

async fn run(priority: String) -> Result<()> {
    let state = std::env::var_os("BENCH_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| microplane_e2e::repo_root().join(".state/bench"));
    let base = state.join("gateway");
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let dir = tempfile::Builder::new().prefix("run-").tempdir_in(&base)?;
    match bench(dir.path(), priority).await {
        Ok((report, name)) => {
            println!("{report}");
            let file = state.join(name);
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

/// Runs the bench; the report and the name of its file.
async fn bench(dir: &Path, priority: String) -> Result<(String, &'static str)> {
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
        None,
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
    let part = std::env::var(PART_ENV).unwrap_or_default();

    // (g) alone.
    if part == "g" {
        eprintln!("(g) abusive load for {} s ({PART_ENV}=g)", ABUSE_DURATION.as_secs());
        let abuse = abusive_load(gw_addr, &mut gateway).await?;
        let others_cpu = CpuSample::take(&groups)?.others_since(&cpu_before);
        let _ = stop_sync.send(());
        let mut o = vec![
            format!("# bench-gateway: (g) only ({PART_ENV}=g)"),
            String::new(),
            format!(
                "Commit {}; {}; 1-minute load average before the run {load_before}; {priority}. The gateway pinned \
                 to CPU {PROXY_CPU} (TOKIO_WORKER_THREADS=1), the attackers and the normal client to CPU {LOAD_CPU}. \
                 Processes other than the bench's used {:.1}% of the machine's CPU time.",
                commit(),
                machine(),
                others_cpu * 100.0
            ),
        ];
        o.extend(abuse.section());
        o.extend([
            String::new(),
            "## Targets".into(),
            String::new(),
            "| target | measured | verdict |".into(),
            "|---|---|---|".into(),
            abuse.target_row(),
        ]);
        return Ok((o.join("\n") + "\n", "gateway-report-g.md"));
    }

    // (b) Proxy throughput and CPU per request: the backend alone (the ceiling), then rounds of
    // the three proxies in every order, so that a drift of the machine's speed (a shared VM's
    // neighbours) weighs on all alike; the report takes medians.
    let only_a = part == "a";
    let mut wrk_results = Vec::new();
    let proxies = ["microplane-gateway", "haproxy", "nginx"];
    let mut runs = vec![(CEILING, None)];
    runs.extend(ROUND_ORDERS.iter().flatten().map(|&i| (proxies[i], Some(i))));
    for (round, (name, which)) in runs.into_iter().enumerate() {
        if only_a {
            break;
        }
        let (addr, path, proc, durations) = match which {
            None => (backend_addr, "/", &mut backend, FULL_RUN),
            Some(0) => (gw_addr, "/web/", &mut gateway, ROUND_RUN),
            Some(1) => (haproxy_addr, "/web/", &mut haproxy_proc, ROUND_RUN),
            Some(_) => (nginx_addr, "/web/", &mut nginx_proc, ROUND_RUN),
        };
        eprintln!("(b) {}/{} wrk against {name}", round + 1, ROUND_ORDERS.len() * 3 + 1);
        let url = format!("http://{addr}{path}");
        wrk_results.push((name.to_string(), measure_wrk(&wrk, &url, &[], proc, durations).await?));
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
        auth_results.push((
            name.to_string(),
            measure_wrk(&wrk, &url, headers, &mut gateway, FULL_RUN).await?,
        ));
    }

    // (a) Added latency of JSON transcoding.
    eprintln!("(a) closed loop through the gateway");
    let through = Target::Gateway(gw_addr);
    let direct = Target::Direct(hello_addr);
    let busy = CpuBusy::take()?;
    let hz = clock_ticks_per_second();
    let ticks = group_ticks(gateway.child.id())?;
    let closed = closed_loop(&through, CONNECTIONS, CLOSED_WARMUP, CLOSED_MEASURE).await?;
    let closed_busy = CpuBusy::take()?.since(&busy);
    ensure!(closed.ok > 0, "no request through the gateway succeeded");
    // The gateway's CPU per call, over the warm-up and the measured window alike: transcoded, then
    // the same request from the same clients proxied to the HTTP backend.
    let per_call = |ticks: u64, run: &load::ClosedLoop| {
        ticks as f64 / hz * 1e6 / (run.rate * (CLOSED_WARMUP + CLOSED_MEASURE).as_secs_f64())
    };
    let closed_cpu_us = per_call(group_ticks(gateway.child.id())?.saturating_sub(ticks), &closed);
    let ticks = group_ticks(gateway.child.id())?;
    let proxied = closed_loop(&Target::Proxied(gw_addr), CONNECTIONS, CLOSED_WARMUP, CLOSED_MEASURE).await?;
    ensure!(proxied.ok > 0, "no proxied request through the gateway succeeded");
    let proxied_cpu_us = per_call(group_ticks(gateway.child.id())?.saturating_sub(ticks), &proxied);
    // The open-loop rate: one at which no CPU is more than half busy, so that the latencies are the
    // path's and not a queue's. From half the closed-loop rate, scaled down until a short run
    // through the gateway keeps both CPUs at or under `OPEN_MAX_BUSY`. With (a) alone it may be set
    // by hand, to compare builds at the same load.
    let open_rate = match std::env::var(OPEN_RATE_ENV).ok().and_then(|r| r.parse::<f64>().ok()) {
        Some(rate) if only_a => rate,
        _ => {
            let mut rate = closed.rate * OPEN_SHARE;
            for _ in 0..OPEN_CALIBRATION_RUNS {
                let mut peak = 0.0_f64;
                for path in [&direct, &through] {
                    let busy = CpuBusy::take()?;
                    open_loop(path, CONNECTIONS, rate, Duration::ZERO, OPEN_CALIBRATION).await?;
                    peak = CpuBusy::take()?.since(&busy).into_iter().fold(peak, f64::max);
                }
                eprintln!("(a) calibration at {rate:.0}/s: busiest CPU {:.0}%", peak * 100.0);
                if peak <= OPEN_MAX_BUSY {
                    break;
                }
                rate *= OPEN_MAX_BUSY / peak * 0.9;
            }
            rate
        }
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
    let route_changes = route_changes(&mut routing, &snapshots, gw_addr, &mut gateway).await?;

    // (f) Rule changes, before (d) makes every snapshot a thousand routes larger.
    eprintln!("(f) {RULE_CHANGES} rule changes");
    let rule_changes = rule_changes(&mut routing, &snapshots, gw_addr, &mut gateway, &on_headers).await?;

    // (d) 1000 routes at once.
    eprintln!("(d) {BULK} routes in one snapshot");
    let bulk = bulk_routes(&mut routing, &snapshots, gw_addr).await?;
    gateway.check_running()?;

    // (g) Abusive load, last: it leaves the gateway's memory and connections as it may.
    eprintln!("(g) abusive load for {} s", ABUSE_DURATION.as_secs());
    let abuse = abusive_load(gw_addr, &mut gateway).await?;

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
        closed_cpu_us,
        proxied_cpu_us,
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
        abuse,
    };
    Ok((report.render(), "gateway-report.md"))
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
