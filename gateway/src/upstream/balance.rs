//! The endpoint set of a service and the balancer that picks one endpoint per attempt: power of two
//! choices on outstanding requests, with ejection of endpoints that fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::h1::{self, H1Pool};
use super::h2::H2Channel;

/// Time base for ejection deadlines.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// How long an endpoint is ejected after `n` consecutive failures: 1 s doubling up to 30 s.
pub(crate) fn ejection_for(failures: u32) -> Duration {
    const EJECTION: microplane_runtime::Backoff =
        microplane_runtime::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    EJECTION.delay(failures)
}

/// One backend endpoint and what the gateway knows about it.
#[derive(Debug)]
pub struct Upstream {
    /// `ip:port`.
    pub address: String,
    /// `address` parsed (`None` when it is not an `ip:port`: connecting fails).
    socket: Option<std::net::SocketAddr>,
    /// `address` as a `Host` header.
    host: http::HeaderValue,
    /// The HTTP/2 connection of `Grpc` services (made on first use).
    grpc: H2Channel,
    /// `http://<address>`, the origin of gRPC calls.
    origin: http::Uri,
    /// Kept-alive HTTP/1.1 connections of `Http` services.
    pub h1: Arc<H1Pool>,
    outstanding: AtomicUsize,
    failures: AtomicU32,
    ejected_until: AtomicU64,
}

impl Upstream {
    fn new(address: &str) -> Self {
        Self {
            address: address.to_string(),
            socket: address.parse().ok(),
            host: http::HeaderValue::from_str(address).unwrap_or_else(|_| http::HeaderValue::from_static("invalid")),
            grpc: H2Channel::new(address),
            origin: format!("http://{address}")
                .parse()
                .unwrap_or_else(|_| http::Uri::from_static("http://invalid")),
            h1: Arc::default(),
            outstanding: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// The HTTP/2 connection to this endpoint for gRPC calls, made on first use and replaced
    /// when it ends.
    pub fn grpc(&self) -> H2Channel {
        self.grpc.clone()
    }

    /// The origin (`http://ip:port`) of gRPC calls to this endpoint.
    pub(crate) fn origin(&self) -> http::Uri {
        self.origin.clone()
    }

    /// A new HTTP/1.1 connection to this endpoint (driven by a task of its own), for its [`H1Pool`].
    pub(crate) async fn connect_h1(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<crate::body::BoxBody>, std::io::Error> {
        h1::connect(self.socket, &self.address).await
    }

    /// The `Host` header of requests to this endpoint.
    pub(crate) fn host_header(&self) -> http::HeaderValue {
        self.host.clone()
    }

    /// Requests in flight.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Whether it is ejected now.
    pub fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms()
    }

    /// Records a failure that says the endpoint is unreachable (connection refused, reset before the
    /// request was taken); ejects it for a while. Returns whether it was newly ejected.
    pub(crate) fn failed(&self) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let until = now_ms() + u64::try_from(ejection_for(n).as_millis()).unwrap_or(u64::MAX / 2);
        let before = self.ejected_until.swap(until, Ordering::Relaxed);
        before <= now_ms()
    }

    /// Records a success: the endpoint is healthy again.
    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }
}

/// An endpoint chosen for one request; counts as outstanding until dropped.
#[derive(Debug)]
pub(crate) struct Picked(Arc<Upstream>);

impl Picked {
    /// The endpoint.
    pub(crate) fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A service's endpoints in one snapshot.
#[derive(Debug, Default)]
pub(crate) struct EndpointSet {
    ready: Vec<Arc<Upstream>>,
    terminating: Vec<Arc<Upstream>>,
}

impl EndpointSet {
    /// Number of ready endpoints.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ready.len()
    }

    /// Ready and terminating endpoints (the latter used only when no ready one is left).
    pub(crate) fn new(ready: Vec<Arc<Upstream>>, terminating: Vec<Arc<Upstream>>) -> Self {
        Self { ready, terminating }
    }

    /// Chooses an endpoint: two random candidates among the ready, non-ejected ones not in
    /// `exclude`, the one with fewer requests in flight wins. When every ready endpoint is ejected
    /// or excluded, falls back to ejected ones, then to terminating ones: a chance beats a certain
    /// failure.
    pub(crate) fn pick(&self, exclude: &[&str]) -> Option<Picked> {
        let usable = |u: &&Arc<Upstream>| !exclude.contains(&u.address.as_str());
        let healthy: Vec<&Arc<Upstream>> = self.ready.iter().filter(usable).filter(|u| !u.ejected()).collect();
        let pool: Vec<&Arc<Upstream>> = if !healthy.is_empty() {
            healthy
        } else {
            let any: Vec<_> = self.ready.iter().filter(usable).collect();
            if !any.is_empty() {
                any
            } else {
                self.terminating.iter().filter(usable).collect()
            }
        };
        let chosen = match pool.len() {
            0 => return None,
            1 => pool[0],
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                if pool[b].outstanding() < pool[a].outstanding() {
                    pool[b]
                } else {
                    pool[a]
                }
            }
        };
        chosen.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Picked(chosen.clone()))
    }
}

/// Every endpoint the gateway knows, shared across snapshots.
#[derive(Debug, Default)]
pub struct Upstreams {
    by_address: Mutex<HashMap<String, Arc<Upstream>>>,
}

impl Upstreams {
    /// The upstream for `address`, created on first sight.
    pub fn get(&self, address: &str) -> Arc<Upstream> {
        let mut map = self
            .by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(address.to_string())
            .or_insert_with(|| Arc::new(Upstream::new(address)))
            .clone()
    }

    /// Forgets endpoints no snapshot references any more (their connections close once the last
    /// request using them ends).
    pub(crate) fn retain(&self, live: &std::collections::HashSet<String>) {
        let mut map = self
            .by_address
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|addr, _| live.contains(addr));
    }

    /// Number of endpoints known.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_address.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> (Upstreams, EndpointSet) {
        let ups = Upstreams::default();
        let ready = (0..n).map(|i| ups.get(&format!("10.0.0.{i}:8080"))).collect();
        (ups, EndpointSet::new(ready, vec![]))
    }

    #[test]
    fn spreads_over_every_endpoint() {
        let (_u, s) = set(3);
        let mut seen = HashMap::new();
        for _ in 0..300 {
            let p = s.pick(&[]).unwrap();
            *seen.entry(p.upstream().address.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn prefers_fewer_outstanding() {
        let (_u, s) = set(2);
        // Hold many requests on one endpoint: p2c with two endpoints always compares both.
        let held: Vec<_> = (0..10).map(|_| s.pick(&[]).unwrap()).collect();
        let busy = held
            .iter()
            .map(|p| p.upstream().address.clone())
            .fold(HashMap::new(), |mut m, a| {
                *m.entry(a).or_insert(0) += 1;
                m
            });
        // Ten picks over two endpoints with least-outstanding stay balanced.
        assert!(busy.values().all(|&n| n == 5), "{busy:?}");
        drop(held);
        assert!(s.ready.iter().all(|u| u.outstanding() == 0));
    }

    #[test]
    fn ejects_and_recovers() {
        let (_u, s) = set(2);
        let bad = s.ready[0].clone();
        assert!(bad.failed());
        assert!(bad.ejected());
        for _ in 0..50 {
            assert_ne!(s.pick(&[]).unwrap().upstream().address, bad.address);
        }
        bad.succeeded();
        assert!(!bad.ejected());
    }

    #[test]
    fn all_ejected_still_tries_and_exclusion_works() {
        let (_u, s) = set(2);
        s.ready[0].failed();
        s.ready[1].failed();
        assert!(s.pick(&[]).is_some());
        let first = s.ready[0].address.clone();
        for _ in 0..20 {
            assert_ne!(s.pick(&[first.as_str()]).unwrap().upstream().address, first);
        }
        let both = [s.ready[0].address.as_str(), s.ready[1].address.as_str()];
        assert!(s.pick(&both).is_none());
    }

    #[test]
    fn terminating_only_when_nothing_ready() {
        let ups = Upstreams::default();
        let s = EndpointSet::new(vec![ups.get("10.0.0.1:1")], vec![ups.get("10.0.0.2:1")]);
        for _ in 0..20 {
            assert_eq!(s.pick(&[]).unwrap().upstream().address, "10.0.0.1:1");
        }
        assert_eq!(s.pick(&["10.0.0.1:1"]).unwrap().upstream().address, "10.0.0.2:1");
        let empty = EndpointSet::default();
        assert!(empty.pick(&[]).is_none());
    }

    #[test]
    fn ejection_grows_and_is_bounded() {
        assert_eq!(ejection_for(1), Duration::from_secs(1));
        assert_eq!(ejection_for(2), Duration::from_secs(2));
        assert_eq!(ejection_for(6), Duration::from_secs(30).min(Duration::from_secs(32)));
        assert_eq!(ejection_for(60), Duration::from_secs(30));
    }

    #[test]
    fn upstreams_are_shared_and_retained() {
        let ups = Upstreams::default();
        let a = ups.get("a:1");
        assert!(Arc::ptr_eq(&a, &ups.get("a:1")));
        ups.get("b:1");
        ups.retain(&["a:1".to_string()].into_iter().collect());
        assert_eq!(ups.len(), 1);
    }
}
