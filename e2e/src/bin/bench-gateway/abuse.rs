//! (g): an abusive load on the gateway while a normal client keeps calling, with the gateway's
//! resident memory sampled from /proc.
//!
//! The attackers run in this process (on the load CPU) for [`ABUSE_DURATION`], all at once:
//! HTTP/1.1 connections posting JSON bodies of tiny values just under the body limit to the
//! transcoded route; connections posting bodies just over it to the transcoded and the proxied
//! route, with `Content-Length` and chunked; HTTP/2 (prior knowledge) connections opening as many
//! streams as the gateway allows, each sending a large body slowly; and slow-loris connections
//! whose request head never ends. Every attacker reconnects when the gateway closes on it and
//! starts over, until the run ends (its tasks are aborted then).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http::{Method, Request, StatusCode, header};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::h1::H1;
use crate::params::{
    ABUSE_BODY_LIMIT, ABUSE_DURATION, ABUSE_H2_CHUNK, ABUSE_H2_CONNS, ABUSE_H2_INTERVAL, ABUSE_H2_STREAMS,
    ABUSE_JSON_CONNS, ABUSE_LORIS_CONNS, ABUSE_LORIS_INTERVAL, ABUSE_LORIS_LINE, ABUSE_NORMAL_RATE, ABUSE_OVER_BODY,
    ABUSE_OVER_CONNS, ABUSE_REQUEST_TIMEOUT, ABUSE_RSS_INTERVAL, ABUSE_RSS_STOP, ABUSE_SETTLE, BACKEND_BODY,
    CALL_TIMEOUT, GREETING, JSON_REQUEST,
};
use crate::procs::Proc;

/// Which attacks (g) runs: a comma-separated subset of `json`, `over`, `h2`, `loris` (default: all),
/// to tell their shares of the gateway's memory apart.
pub const ATTACKS_ENV: &str = "BENCH_GATEWAY_ATTACKS";

/// The chart's values, for the gateway pod's memory limit.
const CHART_VALUES: &str = include_str!("../../../../charts/microplane/values.yaml");

/// What one kind of attacker did.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Connections opened (for HTTP/2: streams opened).
    pub opened: u64,
    /// Requests sent (for slow-loris: request heads started).
    pub requests: u64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests the gateway closed or reset the connection (or stream) on without an answer.
    pub closed: u64,
    /// Connections that could not be opened, requests that timed out.
    pub errors: u64,
    /// Body and header bytes handed to the socket.
    pub bytes: u64,
}

impl Tally {
    pub fn status(&self, code: u16) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }

    /// Answers other than `code`, as `status×count`.
    pub fn others(&self, code: u16) -> String {
        let v: Vec<String> = self
            .statuses
            .iter()
            .filter(|(c, _)| **c != code)
            .map(|(c, n)| format!("{c}×{n}"))
            .collect();
        if v.is_empty() { "—".into() } else { v.join(", ") }
    }
}

/// One row of the attack table.
#[derive(Clone, Debug)]
pub struct Attack {
    pub name: String,
    /// Connections kept busy at once (for HTTP/2: connections × streams tried per connection).
    pub concurrency: String,
    /// The answer this attack should get.
    pub expect: u16,
    pub tally: Tally,
}

/// The normal client's calls during the attack.
pub struct Normal {
    pub ok: u64,
    pub failed: u64,
    /// Latency from the scheduled send time, µs, of the calls that succeeded.
    pub hist: Histogram<u64>,
    /// Failures by reason (at most a few reasons are kept verbatim).
    pub failures: BTreeMap<String, u64>,
}

impl Normal {
    pub fn success(&self) -> f64 {
        let all = self.ok + self.failed;
        if all == 0 { 0.0 } else { self.ok as f64 / all as f64 }
    }
}

/// Outcome of (g).
pub struct Abuse {
    /// The attacks run: all, or the subset [`ATTACKS_ENV`] names.
    pub selected: String,
    /// How long the attack ran (shorter than planned when the RSS passed [`ABUSE_RSS_STOP`] × limit).
    pub ran: Duration,
    pub stopped_early: bool,
    /// Gateway VmRSS just before the attack, bytes.
    pub rss_before: u64,
    /// Highest VmRSS sampled during the attack, bytes, and how many samples.
    pub rss_sampled: u64,
    pub samples: u64,
    /// VmHWM after the attack, bytes; `hwm_reset` when it was reset (clear_refs) right before, so
    /// it is the peak of the attack, not of the process's whole life.
    pub hwm: u64,
    pub hwm_reset: bool,
    /// Highest VmRSS per second of the attack, bytes.
    pub per_second: Vec<u64>,
    /// VmRSS [`ABUSE_SETTLE`] after the attackers were gone, bytes, and the gateway's open file
    /// descriptors then and before the attack (its connections).
    pub rss_after: u64,
    pub fds: [usize; 2],
    /// The gateway pod's memory limit, bytes, and where it was read.
    pub limit: u64,
    pub limit_source: String,
    pub attacks: Vec<Attack>,
    pub normal: Normal,
    /// The gateway still ran and answered `GET /web/` with 200 after the attack.
    pub alive_after: bool,
}

impl Abuse {
    /// The peak resident memory: the higher of the sampled maximum and VmHWM.
    pub fn peak(&self) -> u64 {
        self.rss_sampled.max(self.hwm)
    }

    pub fn met(&self) -> bool {
        self.peak() < self.limit
            && self.normal.ok + self.normal.failed > 0
            && self.normal.success() >= 0.99
            && self.alive_after
    }
}

/// A kibibyte field (`VmRSS`, `VmHWM`) of /proc/<pid>/status, in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// The open file descriptors of `pid` (0 when /proc does not tell).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A Kubernetes memory quantity (`512Mi`, `1G`, `1048576`) in bytes.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.trim().parse::<u64>().ok().map(|n| n * factor);
        }
    }
    q.parse().ok()
}

/// `gateway.resources.limits.memory` of the chart's values, in bytes.
pub fn pod_limit() -> Result<(u64, String)> {
    let values: serde_yaml::Value = serde_yaml::from_str(CHART_VALUES).context("parsing the chart's values")?;
    let q = values["gateway"]["resources"]["limits"]["memory"]
        .as_str()
        .ok_or_else(|| anyhow!("the chart's values set no gateway.resources.limits.memory"))?;
    let bytes = quantity_bytes(q).ok_or_else(|| anyhow!("gateway.resources.limits.memory {q:?} is no quantity"))?;
    Ok((
        bytes,
        format!("`gateway.resources.limits.memory: {q}` in charts/microplane/values.yaml"),
    ))
}

/// A JSON request of `len` bytes made of tiny values: `{"name":"x","a":[0,0,…,0]}`.
fn tiny_values(len: usize) -> Vec<u8> {
    let (head, tail) = (br#"{"name":"x","a":["#.as_slice(), b"0]}".as_slice());
    let n = (len.saturating_sub(head.len() + tail.len())) / 2;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head);
    for _ in 0..n {
        v.extend_from_slice(b"0,");
    }
    v.extend_from_slice(tail);
    v
}

/// `body` in chunked transfer coding, 64 KiB a chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 1000 + 16);
    for c in body.chunks(64 << 10) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

type Shared = Arc<Mutex<Tally>>;

fn tally(t: &Shared, f: impl FnOnce(&mut Tally)) {
    if let Ok(mut t) = t.lock() {
        f(&mut t);
    }
}

/// An HTTP/1.1 attacker: `head` then `body` on a kept-alive connection, over and over; the answer
/// is read while the body is still being written (the gateway may refuse before the end).
async fn h1_attacker(addr: SocketAddr, head: Bytes, body: Bytes, t: Shared) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = BytesMut::with_capacity(16 << 10);
    loop {
        let reused = conn.is_some();
        let mut stream = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    tally(&t, |t| t.opened += 1);
                    s
                }
                Err(_) => {
                    tally(&t, |t| t.errors += 1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        buf.clear();
        let (mut rd, mut wr) = stream.split();
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let write = {
            let (sent, head, body) = (sent.clone(), head.clone(), body.clone());
            async move {
                wr.write_all(&head).await?;
                for c in body.chunks(64 << 10) {
                    wr.write_all(c).await?;
                    sent.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
                Ok::<_, io::Error>(())
            }
        };
        let read = read_response(&mut rd, &mut buf);
        let outcome = tokio::time::timeout(ABUSE_REQUEST_TIMEOUT, async {
            tokio::pin!(write, read);
            let mut wrote: Option<bool> = None;
            loop {
                tokio::select! {
                    w = &mut write, if wrote.is_none() => wrote = Some(w.is_ok()),
                    r = &mut read => return (r, wrote == Some(true)),
                }
            }
        })
        .await;
        let sent = sent.load(Ordering::Relaxed);
        tally(&t, |t| t.bytes += sent);
        match outcome {
            Ok((Ok(Some((status, keep_alive))), wrote_all)) => {
                tally(&t, |t| {
                    t.requests += 1;
                    *t.statuses.entry(status).or_default() += 1;
                });
                if keep_alive && wrote_all {
                    conn = Some(stream);
                }
            }
            // A kept-alive connection the gateway closed after the previous answer (it had not read
            // all of that body): not an answer to this request, which goes again on a new one.
            Ok((Ok(None) | Err(_), _)) if reused => {}
            Ok((Ok(None) | Err(_), _)) => tally(&t, |t| {
                t.requests += 1;
                t.closed += 1;
            }),
            Err(_) => tally(&t, |t| {
                t.requests += 1;
                t.errors += 1;
            }),
        }
    }
}

/// Reads one response: its status and whether the connection may be reused (`Content-Length`
/// framing, no `Connection: close`, body read). `None` when the gateway closed first.
async fn read_response(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> io::Result<Option<(u16, bool)>> {
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(head)) => {
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
                    let close = resp
                        .headers
                        .iter()
                        .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close"));
                    Some((resp.code.unwrap_or(0), head, len, close))
                }
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        };
        match parsed {
            // Without Content-Length the end of the body is not known: answer counted, connection dropped.
            Some((status, _, None, _)) => return Ok(Some((status, false))),
            Some((status, head, Some(len), close)) if buf.len() >= head + len => {
                return Ok(Some((status, !close)));
            }
            _ => {}
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// A slow-loris connection: a request head that grows by a header line every
/// [`ABUSE_LORIS_INTERVAL`] and never ends; when the gateway answers or closes, again on a new one.
async fn loris(addr: SocketAddr, t: Shared) {
    let line = Bytes::from(format!(
        "x-loris: {}\r\n",
        "a".repeat(ABUSE_LORIS_LINE.saturating_sub(11))
    ));
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                tally(&t, |t| t.errors += 1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tally(&t, |t| {
            t.opened += 1;
            t.requests += 1;
        });
        buf.clear();
        let (mut rd, mut wr) = stream.split();
        let write = loris_write(&mut wr, line.clone(), t.clone());
        let read = read_response(&mut rd, &mut buf);
        tokio::pin!(write, read);
        // A failed write (the gateway closed) still waits for what it may have answered.
        let mut writing = true;
        let r = loop {
            tokio::select! {
                _ = &mut write, if writing => writing = false,
                r = &mut read => break r,
            }
        };
        match r {
            Ok(Some((status, _))) => tally(&t, |t| *t.statuses.entry(status).or_default() += 1),
            Ok(None) | Err(_) => tally(&t, |t| t.closed += 1),
        }
    }
}

/// The head of a slow-loris request: its start, then a header line every [`ABUSE_LORIS_INTERVAL`]
/// until writing fails.
async fn loris_write(wr: &mut (impl tokio::io::AsyncWrite + Unpin), line: Bytes, t: Shared) -> io::Result<()> {
    let start = b"POST /helloworld/call HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n";
    wr.write_all(start).await?;
    tally(&t, |t| t.bytes += start.len() as u64);
    loop {
        tokio::time::sleep(ABUSE_LORIS_INTERVAL).await;
        wr.write_all(&line).await?;
        tally(&t, |t| t.bytes += line.len() as u64);
    }
}

/// An HTTP/2 (prior knowledge) connection with [`ABUSE_H2_STREAMS`] stream tasks, each posting a
/// large body in small pieces slowly; the gateway allows fewer streams at once, so the rest wait in
/// h2's queue. A new connection when the old one ends.
async fn h2_attacker(addr: SocketAddr, chunk: Bytes, t: Shared) {
    loop {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                tally(&t, |t| t.errors += 1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((send, conn)) = h2::client::handshake(stream).await else {
            tally(&t, |t| t.errors += 1);
            continue;
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let _ = conn.await;
        });
        for _ in 0..ABUSE_H2_STREAMS {
            tasks.spawn(h2_streams(addr, send.clone(), chunk.clone(), t.clone()));
        }
        drop(send);
        // The stream tasks end when the connection is gone; the connection task with them.
        while tasks.join_next().await.is_some() {}
    }
}

/// Streams, one after the other, on one connection, until it fails.
async fn h2_streams(addr: SocketAddr, send: h2::client::SendRequest<Bytes>, chunk: Bytes, t: Shared) {
    loop {
        let Ok(mut ready) = send.clone().ready().await else {
            return;
        };
        let Ok(req) = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/helloworld/call"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
        else {
            return;
        };
        let Ok((response, mut body)) = ready.send_request(req, false) else {
            return;
        };
        tally(&t, |t| {
            t.opened += 1;
            t.requests += 1;
        });
        let t2 = t.clone();
        let chunk = chunk.clone();
        let sending = async move {
            let mut sent = 0usize;
            while sent < ABUSE_OVER_BODY {
                let want = chunk.len().min(ABUSE_OVER_BODY - sent);
                body.reserve_capacity(want);
                let mut cap = body.capacity();
                while cap == 0 {
                    match futures::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                        Some(Ok(c)) => cap = c,
                        Some(Err(e)) => return Err(e),
                        None => return Ok(()),
                    }
                }
                let n = cap.min(want);
                body.send_data(chunk.slice(..n), false)?;
                sent += n;
                tally(&t2, |t| t.bytes += n as u64);
                tokio::time::sleep(ABUSE_H2_INTERVAL).await;
            }
            body.send_data(Bytes::new(), true)?;
            // Keep the stream's send half until the answer comes.
            std::future::pending::<()>().await;
            Ok::<(), h2::Error>(())
        };
        tokio::pin!(sending, response);
        let mut sending_done = false;
        let answer = tokio::time::timeout(ABUSE_REQUEST_TIMEOUT, async {
            loop {
                tokio::select! {
                    r = &mut response => return r,
                    _ = &mut sending, if !sending_done => sending_done = true,
                }
            }
        })
        .await;
        match answer {
            Ok(Ok(resp)) => tally(&t, |t| *t.statuses.entry(resp.status().as_u16()).or_default() += 1),
            Ok(Err(_)) => tally(&t, |t| t.closed += 1),
            Err(_) => tally(&t, |t| t.errors += 1),
        }
    }
}

/// The normal client: alternately `POST /helloworld/call {"name":"John"}` and `GET /web/`, at
/// [`ABUSE_NORMAL_RATE`] per second on a pool of kept-alive connections, until `stop` is set.
async fn normal_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> Result<Normal> {
    let pool: Arc<Mutex<Vec<H1>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ABUSE_NORMAL_RATE));
    let mut calls = JoinSet::new();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let at = tick.tick().await.into_std();
        let pool = pool.clone();
        let transcoded = k.is_multiple_of(2);
        k += 1;
        calls.spawn(async move {
            let r = tokio::time::timeout(CALL_TIMEOUT, async {
                let taken = pool.lock().ok().and_then(|mut p| p.pop());
                let mut conn = match taken {
                    Some(c) => c,
                    None => H1::connect(addr).await?,
                };
                let (status, body) = if transcoded {
                    conn.post_json("/helloworld/call", JSON_REQUEST).await?
                } else {
                    conn.get("/web/").await?
                };
                let ok = status == StatusCode::OK
                    && if transcoded {
                        serde_json::from_slice::<serde_json::Value>(&body).ok()
                            == Some(serde_json::json!({"message": GREETING}))
                    } else {
                        body == BACKEND_BODY.as_bytes()
                    };
                anyhow::ensure!(
                    ok,
                    "{} answered {status}",
                    if transcoded {
                        "POST /helloworld/call"
                    } else {
                        "GET /web/"
                    }
                );
                if let Ok(mut p) = pool.lock() {
                    p.push(conn);
                }
                Ok::<_, anyhow::Error>(())
            })
            .await;
            let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            match r {
                Ok(Ok(())) => Ok(micros),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            }
        });
    }
    let mut normal = Normal {
        ok: 0,
        failed: 0,
        hist: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
        failures: BTreeMap::new(),
    };
    while let Some(r) = calls.join_next().await {
        match r? {
            Ok(micros) => {
                normal.ok += 1;
                normal.hist.saturating_record(micros.max(1));
            }
            Err(reason) => {
                normal.failed += 1;
                let key = if normal.failures.len() < 5 || normal.failures.contains_key(&reason) {
                    reason
                } else {
                    "other".to_string()
                };
                *normal.failures.entry(key).or_default() += 1;
            }
        }
    }
    Ok(normal)
}

/// Samples the gateway's VmRSS every [`ABUSE_RSS_INTERVAL`] on a thread of its own (not delayed by
/// the busy runtime) until `stop`; sets `overrun` when it passes `ceiling`. Returns the maximum,
/// the number of samples and the maximum per second.
fn sample_rss(
    pid: u32,
    ceiling: u64,
    stop: Arc<AtomicBool>,
    overrun: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64, Vec<u64>)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let (mut max, mut n, mut per_second) = (0u64, 0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            if let Ok(rss) = proc_status_bytes(pid, "VmRSS") {
                max = max.max(rss);
                n += 1;
                let s = start.elapsed().as_secs() as usize;
                if per_second.len() <= s {
                    per_second.resize(s + 1, 0);
                }
                per_second[s] = per_second[s].max(rss);
                if rss > ceiling {
                    overrun.store(true, Ordering::Relaxed);
                }
            }
            std::thread::sleep(ABUSE_RSS_INTERVAL);
        }
        (max, n, per_second)
    })
}

/// Runs (g) against the gateway at `addr` (process `gateway`).
pub async fn abusive_load(addr: SocketAddr, gateway: &mut Proc) -> Result<Abuse> {
    let pid = gateway.child.id();
    let (limit, limit_source) = pod_limit()?;
    // The bodies, built once and shared by every attacker.
    let under = Bytes::from(tiny_values(ABUSE_BODY_LIMIT - 64));
    let over = Bytes::from(tiny_values(ABUSE_OVER_BODY));
    let over_chunked = Bytes::from(chunked(&over));
    let h2_chunk = over.slice(..ABUSE_H2_CHUNK);
    let head = |path: &str, len: Option<usize>| {
        let framing = match len {
            Some(n) => format!("content-length: {n}"),
            None => "transfer-encoding: chunked".to_string(),
        };
        Bytes::from(format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
        ))
    };
    let mb = |n: usize| n as f64 / f64::from(1 << 20);
    let selected = std::env::var(ATTACKS_ENV).unwrap_or_default();
    let runs = |kind: &str| selected.is_empty() || selected.split(',').any(|k| k.trim() == kind);
    let h1_rows = [
        (
            "json",
            format!(
                "HTTP/1.1 `POST /helloworld/call`, {:.0} MiB JSON of tiny values (`[0,0,…]`)",
                mb(under.len())
            ),
            ABUSE_JSON_CONNS,
            head("/helloworld/call", Some(under.len())),
            under.clone(),
        ),
        (
            "over",
            format!("HTTP/1.1 `POST /web/`, {:.0} MiB, Content-Length", mb(over.len())),
            ABUSE_OVER_CONNS,
            head("/web/", Some(over.len())),
            over.clone(),
        ),
        (
            "over",
            format!("HTTP/1.1 `POST /web/`, {:.0} MiB, chunked", mb(over.len())),
            ABUSE_OVER_CONNS,
            head("/web/", None),
            over_chunked.clone(),
        ),
        (
            "over",
            format!(
                "HTTP/1.1 `POST /helloworld/call`, {:.0} MiB, Content-Length",
                mb(over.len())
            ),
            ABUSE_OVER_CONNS,
            head("/helloworld/call", Some(over.len())),
            over.clone(),
        ),
        (
            "over",
            format!("HTTP/1.1 `POST /helloworld/call`, {:.0} MiB, chunked", mb(over.len())),
            ABUSE_OVER_CONNS,
            head("/helloworld/call", None),
            over_chunked.clone(),
        ),
    ];

    // The peak of the attack alone: VmHWM reset to the current RSS (clear_refs 5, Linux ≥ 4.0).
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let rss_before = proc_status_bytes(pid, "VmRSS")?;
    let fds_before = open_fds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let overrun = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(
        pid,
        (limit as f64 * ABUSE_RSS_STOP) as u64,
        stop.clone(),
        overrun.clone(),
    );
    let normal = tokio::spawn(normal_client(addr, stop.clone()));

    let mut attackers = JoinSet::new();
    let mut attacks = Vec::new();
    for (kind, name, conns, head, body) in h1_rows {
        if !runs(kind) {
            continue;
        }
        let t = Shared::default();
        for _ in 0..conns {
            attackers.spawn(h1_attacker(addr, head.clone(), body.clone(), t.clone()));
        }
        attacks.push((name, conns.to_string(), 413, t));
    }
    if runs("h2") {
        let t = Shared::default();
        for _ in 0..ABUSE_H2_CONNS {
            attackers.spawn(h2_attacker(addr, h2_chunk.clone(), t.clone()));
        }
        attacks.push((
            format!(
                "HTTP/2 prior knowledge `POST /helloworld/call`, {:.0} MiB bodies at {} KiB per {} ms per stream",
                mb(ABUSE_OVER_BODY),
                ABUSE_H2_CHUNK >> 10,
                ABUSE_H2_INTERVAL.as_millis()
            ),
            format!("{ABUSE_H2_CONNS} × {ABUSE_H2_STREAMS} streams"),
            413,
            t,
        ));
    }
    if runs("loris") {
        let t = Shared::default();
        for _ in 0..ABUSE_LORIS_CONNS {
            attackers.spawn(loris(addr, t.clone()));
        }
        attacks.push((
            format!(
                "slow-loris: a request head growing by {} bytes per {} ms, never ended",
                ABUSE_LORIS_LINE,
                ABUSE_LORIS_INTERVAL.as_millis()
            ),
            ABUSE_LORIS_CONNS.to_string(),
            431,
            t,
        ));
    }

    let start = Instant::now();
    while start.elapsed() < ABUSE_DURATION && !overrun.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        gateway.check_running()?;
    }
    let ran = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    attackers.abort_all();
    while attackers.join_next().await.is_some() {}
    let normal = normal.await??;
    let (rss_sampled, samples, per_second) = sampler.join().map_err(|_| anyhow!("the RSS sampler panicked"))?;
    let hwm = proc_status_bytes(pid, "VmHWM")?;
    tokio::time::sleep(ABUSE_SETTLE).await;
    gateway.check_running()?;
    let rss_after = proc_status_bytes(pid, "VmRSS")?;
    let fds_after = open_fds(pid);
    let alive_after = match H1::connect(addr).await {
        Ok(mut c) => matches!(c.get("/web/").await, Ok((StatusCode::OK, _))),
        Err(_) => false,
    };
    let attacks = attacks
        .into_iter()
        .map(|(name, concurrency, expect, t)| Attack {
            name,
            concurrency,
            expect,
            tally: t.lock().map(|t| t.clone()).unwrap_or_default(),
        })
        .collect();
    Ok(Abuse {
        selected: if selected.is_empty() { "all".into() } else { selected },
        ran,
        stopped_early: ran < ABUSE_DURATION,
        rss_before,
        rss_sampled,
        samples,
        hwm,
        hwm_reset,
        per_second,
        rss_after,
        fds: [fds_before, fds_after],
        limit,
        limit_source,
        attacks,
        normal,
        alive_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_the_charts_limit() {
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1048576"), Some(1 << 20));
        assert_eq!(quantity_bytes("lots"), None);
        let (limit, source) = pod_limit().unwrap();
        assert!(limit > 0 && source.contains("values.yaml"), "{limit} {source}");
    }

    #[test]
    fn bodies_of_tiny_values_and_chunks() {
        let b = tiny_values(1000);
        assert!(b.len() <= 1000 && b.len() >= 998, "{}", b.len());
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["name"], "x");
        assert!(v["a"].as_array().unwrap().len() > 450);
        assert_eq!(chunked(b"hello"), b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn reads_proc_status() {
        let pid = std::process::id();
        assert!(proc_status_bytes(pid, "VmRSS").unwrap() > 0);
        assert!(proc_status_bytes(pid, "VmNothing").is_err());
    }

    #[tokio::test]
    async fn reads_responses_and_their_framing() {
        let mut buf = BytesMut::new();
        let mut r: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig";
        assert_eq!(read_response(&mut r, &mut buf).await.unwrap(), Some((413, true)));
        buf.clear();
        let mut r: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(read_response(&mut r, &mut buf).await.unwrap(), Some((413, false)));
        buf.clear();
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort";
        assert_eq!(read_response(&mut r, &mut buf).await.unwrap(), None);
    }
}
