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
/// wrk's warm-up and measured durations.
pub const WRK_WARMUP: &str = "2s";
pub const WRK_DURATION: &str = "10s";
/// The generator's closed-loop run: warm-up, then measured.
pub const CLOSED_WARMUP: Duration = Duration::from_secs(1);
pub const CLOSED_MEASURE: Duration = Duration::from_secs(5);
/// The generator's open-loop runs: warm-up, then measured; at this share of the closed-loop rate.
pub const OPEN_WARMUP: Duration = Duration::from_secs(1);
pub const OPEN_MEASURE: Duration = Duration::from_secs(10);
pub const OPEN_SHARE: f64 = 0.5;
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
/// The rows of (e).
pub const AUTH_OFF: &str = "auth off: tenant micro, public rule, no token";
pub const AUTH_ON: &str = "auth on: tenant secure, scope *, bearer token";
/// What the HTTP backend answers.
pub const BACKEND_BODY: &str = r#"{"message":"Hello"}"#;
/// The transcoded call of (a) and what it answers.
pub const JSON_REQUEST: &str = r#"{"name":"John"}"#;
pub const GREETING: &str = "Hello John";
