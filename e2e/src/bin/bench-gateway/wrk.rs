//! wrk runs against the servers under test, and what they measured from wrk's report.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};

use crate::cpu::{CpuBusy, clock_ticks_per_second, group_ticks};
use crate::params::{CONNECTIONS, LOAD_CPU, PROXY_CPU};
use crate::procs::Proc;

/// What wrk measured.
pub struct Wrk {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    /// CPU the server under test (its process group) used during the measured run, in CPUs.
    pub server_cpu: f64,
    /// CPU seconds the server under test (its process group) used during the measured run.
    pub server_secs: f64,
    /// Busy seconds of the proxies' CPU during the measured run: the server under test with the
    /// kernel's work on that CPU (softirq: the loopback's packets) and anything else that ran there.
    pub core_secs: f64,
}

impl Wrk {
    /// CPU time of the server under test per request, µs.
    pub fn server_us_per_request(&self) -> f64 {
        per_request_us(self.server_secs, self.requests)
    }

    /// Busy time of the proxies' CPU per request, µs.
    pub fn core_us_per_request(&self) -> f64 {
        per_request_us(self.core_secs, self.requests)
    }
}

fn per_request_us(secs: f64, requests: u64) -> f64 {
    if requests == 0 {
        return f64::NAN;
    }
    secs * 1e6 / requests as f64
}

/// How long a wrk run warms up and then measures (wrk's duration syntax: `2s`).
#[derive(Clone, Copy)]
pub struct Durations {
    pub warmup: &'static str,
    pub measured: &'static str,
}

/// A wrk warm-up, then the measured run, with the CPU the server under test and the proxies' CPU
/// used meanwhile.
pub async fn measure_wrk(
    wrk: &Path,
    url: &str,
    headers: &[(String, String)],
    server: &mut Proc,
    durations: Durations,
) -> Result<Wrk> {
    run_wrk(wrk, url, durations.warmup, false, headers).await?;
    let hz = clock_ticks_per_second();
    let (ticks, core, started) = (group_ticks(server.child.id())?, CpuBusy::take()?, Instant::now());
    let mut result = parse_wrk(&run_wrk(wrk, url, durations.measured, true, headers).await?)?;
    let used = group_ticks(server.child.id())?.saturating_sub(ticks) as f64 / hz;
    let core = CpuBusy::take()?.busy_ticks_since(&core, PROXY_CPU) as f64 / hz;
    result.server_cpu = used / started.elapsed().as_secs_f64();
    result.server_secs = used;
    result.core_secs = core;
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
        server_secs: f64::NAN,
        core_secs: f64::NAN,
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
    fn cpu_per_request() {
        let mut w =
            parse_wrk("     50%  1.00ms\n     99%  2.00ms\n  4000 requests in 1.00s, 1KB read\nRequests/sec: 4000\n")
                .unwrap();
        (w.server_secs, w.core_secs) = (0.1, 0.2);
        assert!((w.server_us_per_request() - 25.0).abs() < 1e-9);
        assert!((w.core_us_per_request() - 50.0).abs() < 1e-9);
        w.requests = 0;
        assert!(w.core_us_per_request().is_nan());
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
        assert!(w.server_us_per_request().is_nan());
        // Without --latency there are no percentiles: not a report the bench can use.
        let Err(err) = parse_wrk("Requests/sec:  1.00\n") else {
            panic!("read a report without percentiles")
        };
        assert!(err.to_string().contains("cannot read wrk's report"), "{err}");
    }
}
