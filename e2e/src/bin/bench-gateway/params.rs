//! The measurement parameters: CPUs, loads, durations, counts and the requests and answers the
//! loads expect.

use std::time::Duration;

/// CPU of the proxies under test.
pub const PROXY_CPU: u32 = 0;
/// CPU of the backends, the load generators and this binary.
pub const LOAD_CPU: u32 = 1;
/// CPU of the backends (nginx in (b) and (e), helloworld in (a)) on a machine with a third CPU; on
/// one with two they share `LOAD_CPU` with the load generators.
pub const BACKEND_CPU: u32 = 2;
/// Connections of every load (wrk and the Rust generator).
pub const CONNECTIONS: usize = 64;
/// wrk's warm-up and measured durations: the ceiling in (b) and the runs of (e).
pub const WRK_WARMUP: &str = "2s";
pub const WRK_DURATION: &str = "10s";
/// (b)'s rounds: each proxy once per round, the rounds in every order of the three (each proxy
/// first, second and third twice), each run this long after this warm-up.
pub const ROUND_WARMUP: &str = "1s";
pub const ROUND_DURATION: &str = "4s";
pub const ROUND_ORDERS: [[usize; 3]; 6] = [[0, 1, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0], [1, 0, 2], [0, 2, 1]];
/// The generator's closed-loop run: warm-up, then measured.
pub const CLOSED_WARMUP: Duration = Duration::from_secs(1);
pub const CLOSED_MEASURE: Duration = Duration::from_secs(5);
/// The generator's open-loop runs: warm-up, then measured; at this share of the closed-loop rate.
pub const OPEN_WARMUP: Duration = Duration::from_secs(1);
pub const OPEN_MEASURE: Duration = Duration::from_secs(10);
pub const OPEN_SHARE: f64 = 0.5;
/// The open-loop rate is lowered until no CPU is busier than this in a run through the gateway
/// (issue 22: latencies at a load that queues nowhere), in at most this many runs of this length.
pub const OPEN_MAX_BUSY: f64 = 0.5;
pub const OPEN_CALIBRATION_RUNS: usize = 4;
pub const OPEN_CALIBRATION: Duration = Duration::from_secs(2);
/// An open-loop run that completed less than this share of the scheduled rate fell behind it.
pub const OPEN_KEPT_UP: f64 = 0.95;
/// A request that takes longer than this counts as an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Route changes measured in (c), routes added at once in (d).
pub const PROBES: usize = 50;
pub const BULK: usize = 1000;
/// Connections polling the bulk routes in (d).
pub const BULK_POLLERS: usize = 8;
/// How long one route change may take before the bench gives up on it.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rule changes measured in (f).
pub const RULE_CHANGES: usize = 100;
/// How long one rule change may take before the bench gives up on it.
pub const RULE_TIMEOUT: Duration = Duration::from_secs(10);
/// (b)'s first row: the backend without a proxy.
pub const CEILING: &str = "backend direct (ceiling, no proxy)";
/// The rows of (e).
pub const AUTH_OFF: &str = "auth off: tenant micro, public rule, no token";
pub const AUTH_ON: &str = "auth on: tenant secure, scope *, bearer token";
/// What the HTTP backend answers.
pub const BACKEND_BODY: &str = r#"{"message":"Hello"}"#;
/// The transcoded call of (a) and what it answers.
pub const JSON_REQUEST: &str = r#"{"name":"John"}"#;
pub const GREETING: &str = "Hello John";

/// (g): how long the attack lasts.
pub const ABUSE_DURATION: Duration = Duration::from_secs(10);
/// (g): the gateway's request body limit (its `--max-body-bytes` default, which the bench keeps).
pub const ABUSE_BODY_LIMIT: usize = 4 << 20;
/// (g): the size of the bodies just over the limit (HTTP/1.1 and HTTP/2).
pub const ABUSE_OVER_BODY: usize = 5 << 20;
/// (g): HTTP/1.1 connections posting JSON of tiny values just under the limit to the transcoded route.
pub const ABUSE_JSON_CONNS: usize = 32;
/// (g): HTTP/1.1 connections for each of the four over-the-limit attacks (`/web/` and
/// `/helloworld/call`, each with `Content-Length` and chunked).
pub const ABUSE_OVER_CONNS: usize = 8;
/// (g): HTTP/2 connections, and stream tasks on each (more than the gateway's 100 streams per
/// connection: the rest wait in h2's queue for a free stream).
pub const ABUSE_H2_CONNS: usize = 4;
pub const ABUSE_H2_STREAMS: usize = 128;
/// (g): each HTTP/2 stream sends its body in pieces of this size, one per interval (640 KiB/s: a
/// stream passes the limit after about 6.5 s).
pub const ABUSE_H2_CHUNK: usize = 16 << 10;
pub const ABUSE_H2_INTERVAL: Duration = Duration::from_millis(25);
/// (g): slow-loris connections; each adds a header line of this many bytes per interval.
pub const ABUSE_LORIS_CONNS: usize = 200;
pub const ABUSE_LORIS_LINE: usize = 2048;
pub const ABUSE_LORIS_INTERVAL: Duration = Duration::from_millis(200);
/// (g): an attacker's request that gets no answer in this time counts as an error.
pub const ABUSE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// (g): the normal client's calls per second (alternately transcoded and proxied).
pub const ABUSE_NORMAL_RATE: f64 = 50.0;
/// (g): how often the gateway's VmRSS is sampled.
pub const ABUSE_RSS_INTERVAL: Duration = Duration::from_millis(20);
/// (g): the attack stops early when the gateway's RSS passes this multiple of its pod limit (it
/// has no limit on the bench machine).
pub const ABUSE_RSS_STOP: f64 = 4.0;
/// (g): the wait after the attack before the RSS is read again.
pub const ABUSE_SETTLE: Duration = Duration::from_secs(2);
