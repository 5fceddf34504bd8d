//! The report: markdown with every figure and a MET/NOT MET verdict per target.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::abuse::Abuse;
use crate::changes::Bulk;
use crate::load::{ClosedLoop, OpenLoop};
use crate::params::{
    ABUSE_DURATION, ABUSE_NORMAL_RATE, ABUSE_RSS_INTERVAL, ABUSE_RSS_STOP, ABUSE_SETTLE, AUTH_OFF, AUTH_ON,
    BACKEND_BODY, BULK, BULK_POLLERS, CEILING, CLOSED_MEASURE, CLOSED_WARMUP, CONNECTIONS, LOAD_CPU, OPEN_KEPT_UP,
    OPEN_MAX_BUSY, OPEN_MEASURE, OPEN_SHARE, OPEN_WARMUP, PROXY_CPU, ROUND_DURATION, ROUND_ORDERS, ROUND_WARMUP,
    RULE_CHANGES, WRK_DURATION, WRK_WARMUP,
};
use crate::wrk::Wrk;

/// Targets.
const TARGET_AUTH_RATIO: f64 = 0.8;
const TARGET_RULE_P99_MS: f64 = 100.0;
const TARGET_HAPROXY_RATIO: f64 = 1.0;
/// The gateway's process CPU per proxied request, at most this multiple of haproxy's.
const TARGET_CPU_PER_REQUEST_RATIO: f64 = 1.0;
const TARGET_ADDED_P99_MS: f64 = 0.5;
const TARGET_ROUTE_P99_MS: f64 = 100.0;
const TARGET_BULK_MS: f64 = 1000.0;

/// Everything the report shows.
pub struct Report {
    pub tools: Vec<(String, String)>,
    pub machine: String,
    /// The 1-minute load average before anything started: other work on the machine skews results.
    pub load_before: String,
    /// The priority the bench ran at.
    pub priority: String,
    /// Share of the machine's CPU time that processes other than the bench's used while it measured.
    pub others_cpu: f64,
    pub commit: String,
    pub closed: ClosedLoop,
    /// The gateway's CPU time per transcoded call in the closed loop, µs.
    pub closed_cpu_us: f64,
    /// The same for the same request proxied to the HTTP backend (`POST /web/`).
    pub proxied_cpu_us: f64,
    pub open_rate: f64,
    pub direct: OpenLoop,
    pub through: OpenLoop,
    /// Busy share of CPU 0 and CPU 1 during the direct and the gateway open-loop runs.
    pub open_busy: [[f64; 2]; 2],
    /// The CPU the backends were pinned to.
    pub backend_cpu: u32,
    /// The same for the closed-loop run.
    pub closed_busy: [f64; 2],
    pub wrk: Vec<(String, Wrk)>,
    pub route_changes: Vec<Duration>,
    pub bulk: Bulk,
    /// (e): wrk with auth off, on, on, off.
    pub auth: Vec<(String, Wrk)>,
    /// (f): rule change → first answer that follows it.
    pub rule_changes: Vec<Duration>,
    /// (g): the abusive load.
    pub abuse: Abuse,
}

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

/// CPU 0's time per request, except for the backend alone, which does not run on CPU 0.
fn core_column(name: &str, us: f64) -> String {
    if name == CEILING {
        "—".into()
    } else {
        format!("{us:.1}")
    }
}

/// The wrk runs named `name`.
fn runs<'a>(all: &'a [(String, Wrk)], name: &'a str) -> impl Iterator<Item = &'a Wrk> + 'a {
    all.iter().filter(move |(n, _)| n == name).map(|(_, w)| w)
}

/// Median and range of `values` (NaN when there are none).
fn spread(values: impl IntoIterator<Item = f64>) -> Spread {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return Spread {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

/// A median with the range around it.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    /// `median (min–max)` with `decimals` decimals.
    fn show(self, decimals: usize) -> String {
        format!("{:.d$} ({:.d$}–{:.d$})", self.median, self.min, self.max, d = decimals)
    }
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
    /// This run as a row of the wrk tables: name, req/s, p50, p99, requests, non-2xx, socket errors,
    /// server CPU, its CPU per request and CPU 0's per request.
    fn table_row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {:.0}% | {:.1} | {} |",
            self.rps,
            self.p50_us / 1e3,
            self.p99_us / 1e3,
            self.requests,
            self.non_2xx,
            self.socket_errors,
            self.server_cpu * 100.0,
            self.server_us_per_request(),
            core_column(name, self.core_us_per_request())
        )
    }
}

impl Report {
    pub fn render(&self) -> String {
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
             Open loop at **{:.0} req/s** ({:.0}% of that: a rate at which no CPU is more than {:.0}% busy, \
             found from {:.0}% by short runs of both paths), {}s after {}s warm-up, latency from the \
             scheduled send time (HDR histogram):",
            CLOSED_MEASURE.as_secs(),
            CLOSED_WARMUP.as_secs(),
            self.closed.rate,
            self.closed.errors,
            self.closed_busy[0] * 100.0,
            self.closed_busy[1] * 100.0,
            self.open_rate,
            self.open_rate / self.closed.rate * 100.0,
            OPEN_MAX_BUSY * 100.0,
            OPEN_SHARE * 100.0,
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
                 the closed loop at {:.1}× the rate: requests that arrive one at a time are not batched by any \
                 stage (one wake-up, epoll round and context switch per request and process). Its percentiles \
                 include queueing on the load side, not only the path under test{remedy}.",
                self.closed_busy[1] * 100.0,
                self.closed.rate / self.open_rate
            ));
        }
        line(String::new());
        line(format!(
            "Gateway CPU per call in the closed loop: transcoded (`POST /helloworld/call`, JSON → protobuf over \
             the one HTTP/2 connection to helloworld and back) **{:.1} µs**; the same request from the same \
             clients proxied to the HTTP backend (`POST /web/`, an HTTP/1.1 connection per request in flight) \
             {:.1} µs: {:.2}×.",
            self.closed_cpu_us,
            self.proxied_cpu_us,
            self.closed_cpu_us / self.proxied_cpu_us
        ));
        let added_p99 = added[2];
        // Latencies under a load that queues nowhere: no CPU over half busy in the measured runs.
        let unqueued = self
            .open_busy
            .iter()
            .all(|b| b.iter().all(|&x| x <= OPEN_MAX_BUSY + 0.02));
        let a_clean = self.through.errors == 0 && self.direct.errors == 0 && self.closed.errors == 0;
        // Either run falling behind the schedule measures queueing, not the path.
        let kept_up = [&self.direct, &self.through]
            .iter()
            .all(|r| r.achieved >= OPEN_KEPT_UP * self.open_rate);

        // (b)
        line(String::new());
        line("## (b) Proxy throughput and CPU per request".into());
        line(String::new());
        line(format!(
            "Backend: nginx returning `200 {BACKEND_BODY}` with keep-alive. Each proxy maps `/web/<rest>` to the \
             backend's `/<rest>`, adds X-Forwarded-For/-Host/-Proto, keeps backend connections alive, logs nothing. \
             `wrk -t1 -c{CONNECTIONS} --latency`: the backend alone for {WRK_DURATION} after a {WRK_WARMUP} \
             warm-up (the ceiling), then {} rounds of the three proxies, {ROUND_DURATION} each after a \
             {ROUND_WARMUP} warm-up, the rounds in every order of the three. Process CPU: the CPU time of the \
             server under test (its processes) per request wrk completed; CPU {PROXY_CPU}: all busy time of the \
             proxies' CPU per request (the proxy with the kernel's work for it, softirq included).",
            ROUND_ORDERS.len()
        ));
        line(String::new());
        line(
            "| target | runs | req/s, median (range) | process CPU µs/request | CPU 0 µs/request | non-2xx | socket errors |"
                .into(),
        );
        line("|---|---|---|---|---|---|---|".into());
        let mut names: Vec<&str> = Vec::new();
        for (n, _) in &self.wrk {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let all = &self.wrk;
        let of = |name| runs(all, name);
        for name in &names {
            let rps = spread(of(name).map(|w| w.rps));
            let process = spread(of(name).map(Wrk::server_us_per_request));
            let core = spread(of(name).map(Wrk::core_us_per_request));
            line(format!(
                "| {name} | {} | {} | {} | {} | {} | {} |",
                of(name).count(),
                rps.show(0),
                process.show(1),
                if *name == CEILING {
                    "—".to_string()
                } else {
                    core.show(1)
                },
                of(name).map(|w| w.non_2xx).sum::<u64>(),
                of(name).map(|w| w.socket_errors).sum::<u64>()
            ));
        }
        let median = |name: &str, f: fn(&Wrk) -> f64| spread(runs(all, name).map(f)).median;
        let rps_of = |w: &Wrk| w.rps;
        let (gw, hap, ngx) = (
            median("microplane-gateway", rps_of),
            median("haproxy", rps_of),
            median("nginx", rps_of),
        );
        let vs_haproxy = gw / hap;
        let vs_nginx = gw / ngx;
        let cpu_ratio = |peer: &str, f: fn(&Wrk) -> f64| median("microplane-gateway", f) / median(peer, f);
        let cpu_vs_haproxy = cpu_ratio("haproxy", Wrk::server_us_per_request);
        let b_clean = self.wrk.iter().all(|(_, w)| w.non_2xx == 0 && w.socket_errors == 0);
        line(String::new());
        line(format!(
            "Ratios of the medians, gateway to haproxy / to nginx: process CPU per request **{cpu_vs_haproxy:.2}×** / \
             {:.2}×; CPU {PROXY_CPU} per request {:.2}× / {:.2}×; throughput {vs_haproxy:.2}× / {vs_nginx:.2}×.",
            cpu_ratio("nginx", Wrk::server_us_per_request),
            cpu_ratio("haproxy", Wrk::core_us_per_request),
            cpu_ratio("nginx", Wrk::core_us_per_request),
        ));
        line(String::new());
        line("Every run, in the order run (server CPU: 100% = one CPU):".into());
        line(String::new());
        line(
            "| target | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors | server CPU | µs/request | CPU 0 µs/request |"
                .into(),
        );
        line("|---|---|---|---|---|---|---|---|---|---|".into());
        for (name, w) in &self.wrk {
            line(w.table_row(name));
        }

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
        line(
            "| gateway | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors | gateway CPU | µs/request | CPU 0 µs/request |"
                .into(),
        );
        line("|---|---|---|---|---|---|---|---|---|---|".into());
        for (name, w) in &self.auth {
            line(w.table_row(name));
        }
        let (off_rps, on_rps) = (mean_rps(&self.auth, AUTH_OFF), mean_rps(&self.auth, AUTH_ON));
        let auth_ratio = if off_rps > 0.0 { on_rps / off_rps } else { f64::NAN };
        let e_clean = !self.auth.is_empty() && self.auth.iter().all(|(_, w)| w.non_2xx == 0 && w.socket_errors == 0);
        line(String::new());
        let mean_cpu = |name: &str| {
            let v: Vec<f64> = self
                .auth
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, w)| w.server_us_per_request())
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (off_cpu, on_cpu) = (mean_cpu(AUTH_OFF), mean_cpu(AUTH_ON));
        line(format!(
            "Means: off **{off_rps:.0} req/s**, on **{on_rps:.0} req/s**; ratio on/off = **{auth_ratio:.2}×**. \
             Gateway CPU per request: off {off_cpu:.1} µs, on {on_cpu:.1} µs (+{:.1} µs for verifying and \
             authorizing).",
            on_cpu - off_cpu
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

        // (g)
        for l in self.abuse.section() {
            line(l);
        }

        // Targets.
        line(String::new());
        line("## Targets".into());
        line(String::new());
        line("| target | measured | verdict |".into());
        line("|---|---|---|".into());
        let a_note = match (a_clean, kept_up, unqueued) {
            (true, true, true) => String::new(),
            (false, _, _) => " (with errors)".into(),
            (true, false, _) => " (a run fell behind the rate: not a valid measure)".into(),
            (true, true, false) => format!(
                " (a CPU was over {:.0}% busy: not at the load asked for)",
                OPEN_MAX_BUSY * 100.0
            ),
        };
        line(format!(
            "| (a) added p99 of JSON transcoding at {:.0} req/s ≤ {TARGET_ADDED_P99_MS} ms | {added_p99:.3} ms{a_note} | {} |",
            self.open_rate,
            verdict(a_clean && kept_up && unqueued && added_p99 <= TARGET_ADDED_P99_MS)
        ));
        line(format!(
            "| (b) gateway process CPU per proxied request ≤ {TARGET_CPU_PER_REQUEST_RATIO:.1}× haproxy's | \
             {cpu_vs_haproxy:.2}× ({:.1} vs {:.1} µs){} | {} |",
            median("microplane-gateway", Wrk::server_us_per_request),
            median("haproxy", Wrk::server_us_per_request),
            if b_clean { "" } else { " (with errors)" },
            verdict(b_clean && cpu_vs_haproxy <= TARGET_CPU_PER_REQUEST_RATIO)
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
        line(self.abuse.target_row());
        o
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

impl Abuse {
    /// The (g) section of the report, line by line.
    pub fn section(&self) -> Vec<String> {
        let mut o = Vec::new();
        o.push(String::new());
        o.push(format!(
            "## (g) Abusive load: the gateway's peak memory vs its pod limit, {:.1} s of attack",
            self.ran.as_secs_f64()
        ));
        o.push(String::new());
        o.push(
            "All attackers at once, from this binary (on the load CPU), against the same gateway; each reconnects \
             when the gateway closes on it. Meanwhile a normal client calls `POST /helloworld/call {\"name\":\"John\"}` \
             and `GET /web/` alternately at a fixed rate, on kept-alive connections. MiB sent: handed to \
             the socket, also what the gateway never read before it answered (413 on a too large \
             `Content-Length` at once). The proxied route streams a chunked body to the backend as it arrives: \
             the bench's nginx answers 200 without reading it, which can come before the gateway has counted \
             4 MiB."
                .into(),
        );
        if self.selected != "all" {
            o.push(String::new());
            o.push(format!(
                "Only these attacks ran ({}): {}.",
                crate::abuse::ATTACKS_ENV,
                self.selected
            ));
        }
        o.push(String::new());
        o.push("| attack | connections | requests | expected answers | other answers | closed without answer | errors | MiB sent |".into());
        o.push("|---|---|---|---|---|---|---|---|".into());
        for a in &self.attacks {
            let t = &a.tally;
            o.push(format!(
                "| {} | {} | {} | {}×{} | {} | {} | {} | {:.0} |",
                a.name,
                a.concurrency,
                t.requests,
                a.expect,
                t.status(a.expect),
                t.others(a.expect),
                t.closed,
                t.errors,
                mib(t.bytes)
            ));
        }
        let n = &self.normal;
        let p99 = n.hist.value_at_quantile(0.99) as f64 / 1e3;
        o.push(String::new());
        o.push(format!(
            "Normal calls ({ABUSE_NORMAL_RATE:.0}/s, latency from the scheduled send time): **{} ok, {} failed** \
             ({:.2}% ok); p50 {:.3} ms, p99 **{p99:.3} ms**, max {:.3} ms.",
            n.ok,
            n.failed,
            n.success() * 100.0,
            n.hist.value_at_quantile(0.5) as f64 / 1e3,
            n.hist.max() as f64 / 1e3
        ));
        for (reason, count) in &n.failures {
            o.push(format!("- {count}× {reason}"));
        }
        o.push(String::new());
        o.push("| gateway RSS before | peak (VmHWM) | peak sampled | pod limit | peak / limit | RSS after |".into());
        o.push("|---|---|---|---|---|---|".into());
        o.push(format!(
            "| {:.1} MiB | **{:.1} MiB** | {:.1} MiB | {:.0} MiB | **{:.2}** | {:.1} MiB |",
            mib(self.rss_before),
            mib(self.hwm),
            mib(self.rss_sampled),
            mib(self.limit),
            self.peak() as f64 / self.limit as f64,
            mib(self.rss_after)
        ));
        o.push(String::new());
        let per_second: Vec<String> = self.per_second.iter().map(|b| format!("{:.0}", mib(*b))).collect();
        o.push(format!(
            "VmRSS sampled every {} ms ({} samples); its highest per second, MiB: {}. VmHWM {} (clear_refs) \
             right before the attack. The limit is {}. RSS after: {} s after the attackers were gone, when the \
             gateway had {} open file descriptors ({} before the attack). The gateway {} afterwards.",
            ABUSE_RSS_INTERVAL.as_millis(),
            self.samples,
            per_second.join(", "),
            if self.hwm_reset {
                "was reset"
            } else {
                "could not be reset: it is the process's whole life, was not reset"
            },
            self.limit_source,
            ABUSE_SETTLE.as_secs(),
            self.fds[1],
            self.fds[0],
            if self.alive_after {
                "still answered `GET /web/` with 200"
            } else {
                "did NOT answer `GET /web/` with 200"
            }
        ));
        if self.stopped_early {
            o.push(String::new());
            o.push(format!(
                "The attack was stopped after {:.1} s of the planned {} s: the gateway's RSS passed {ABUSE_RSS_STOP}× \
                 its pod limit.",
                self.ran.as_secs_f64(),
                ABUSE_DURATION.as_secs()
            ));
        }
        o
    }

    /// (g)'s row of the targets table.
    pub fn target_row(&self) -> String {
        format!(
            "| (g) under abusive load: peak RSS < pod limit and normal calls ≥ 99% ok | {:.1} MiB of {:.0} MiB, \
             {:.2}% ok (p99 {:.1} ms){} | {} |",
            mib(self.peak()),
            mib(self.limit),
            self.normal.success() * 100.0,
            self.normal.hist.value_at_quantile(0.99) as f64 / 1e3,
            if self.alive_after {
                ""
            } else {
                ", gateway dead afterwards"
            },
            verdict(self.met())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::PROBES;

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
            server_secs: 0.000_02,
            core_secs: 0.000_03,
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
            "| x | 1234 | 0.001 | 0.002 | 1 | 0 | 0 | 50% | 20.0 | 30.0 |"
        );
        let odd = spread([3.0, 1.0, 2.0]);
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        assert_eq!(spread([4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(spread([]).median.is_nan());
        assert_eq!(spread([1.24, 2.0]).show(1), "1.6 (1.2–2.0)");
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
            server_secs: cpu * 10.0,
            core_secs: 10.0,
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
            closed_cpu_us: 31.25,
            proxied_cpu_us: 25.0,
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
                ("haproxy".into(), wrk(34_000.0, 1, 0.98)),
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
            abuse: sample_abuse(hist(3000)),
        }
    }

    /// (g) with made-up figures.
    fn sample_abuse(hist: Histogram<u64>) -> Abuse {
        use crate::abuse::{Attack, Normal, Tally};
        let mib = |n: u64| n << 20;
        let tally = |requests: u64, statuses: &[(u16, u64)], closed: u64| Tally {
            opened: requests,
            requests,
            statuses: statuses.iter().copied().collect(),
            closed,
            errors: 0,
            bytes: mib(requests * 4),
        };
        Abuse {
            selected: "all".into(),
            ran: Duration::from_millis(10_020),
            stopped_early: false,
            rss_before: mib(20),
            rss_sampled: mib(200),
            samples: 480,
            hwm: mib(210),
            hwm_reset: true,
            per_second: vec![mib(40), mib(150), mib(200)],
            rss_after: mib(30),
            fds: [20, 21],
            limit: mib(512),
            limit_source: "`gateway.resources.limits.memory: 512Mi` in charts/microplane/values.yaml".into(),
            attacks: vec![
                Attack {
                    name: "HTTP/1.1 `POST /helloworld/call`, 4 MiB JSON of tiny values (`[0,0,…]`)".into(),
                    concurrency: "32".into(),
                    expect: 413,
                    tally: tally(100, &[(413, 99)], 1),
                },
                Attack {
                    name: "slow-loris".into(),
                    concurrency: "200".into(),
                    expect: 431,
                    tally: tally(250, &[(408, 2), (431, 50)], 0),
                },
            ],
            normal: Normal {
                ok: 999,
                failed: 1,
                hist,
                failures: [("no answer within 5s".to_string(), 1)].into_iter().collect(),
            },
            alive_after: true,
        }
    }

    /// The report of [`sample_report`] as the bench has always written it, byte for byte. A change
    /// of the layout is written to the file with `BENCH_REPORT_BLESS=1` (then read the diff).
    #[test]
    fn renders_the_report() {
        let rendered = sample_report().render();
        if std::env::var_os("BENCH_REPORT_BLESS").is_some() {
            let file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin/bench-gateway/testdata/report.md");
            std::fs::write(file, &rendered).unwrap();
            return;
        }
        assert_eq!(rendered, include_str!("testdata/report.md"));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=50).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 0.5), Duration::from_millis(25));
        assert_eq!(percentile(&s, 0.99), Duration::from_millis(50));
    }
}
