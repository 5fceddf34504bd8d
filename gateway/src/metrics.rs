//! Gateway metrics (Prometheus): requests and latency by tenant, service and code, plus sync state.
//! Labels are bounded: tenant and service come from the snapshot, never from what a client typed.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    tenant: String,
    service: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    tenant: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    ejections: Counter,
    snapshots: Family<ResultLabels, Counter>,
    version: Gauge<u64, AtomicU64>,
    routes: Gauge,
    problems: Gauge,
    connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("microplane_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served, by tenant, service and HTTP code",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "request_duration_seconds",
            "Time to the response head",
            duration.clone(),
        );
        let ejections = Counter::default();
        registry.register(
            "endpoint_ejections",
            "Endpoints ejected after failing",
            ejections.clone(),
        );
        let snapshots = Family::<ResultLabels, Counter>::default();
        registry.register("snapshots", "Routing snapshots received, by result", snapshots.clone());
        let version = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "snapshot_version",
            "Version of the routing snapshot served",
            version.clone(),
        );
        let routes = Gauge::default();
        registry.register("routes", "Routes in the snapshot served", routes.clone());
        let problems = Gauge::default();
        registry.register(
            "snapshot_problems",
            "Parts of the served snapshot left out (a tenant's broken key, a host two tenants claim, an undecodable descriptor set); the log says which",
            problems.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "sync_connected",
            "1 while the sync stream to the operator is open",
            connected.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            duration,
            ejections,
            snapshots,
            version,
            routes,
            problems,
            connected,
        }
    }

    /// Records one request.
    pub fn observe(&self, tenant: &str, service: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                tenant: tenant.to_string(),
                service: service.to_string(),
                code,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                tenant: tenant.to_string(),
                service: service.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// [`Metrics::observe`] for a request that resolved to a route: the route's metric handles are
    /// looked up once per route and code (kept in `handles`, which lives as long as the route), not
    /// on every request.
    pub fn observe_route(&self, handles: &RouteMetrics, tenant: &str, service: &str, code: u16, took: Duration) {
        let h = handles.inner.get_or_init(|| RouteHandles {
            duration: self
                .duration
                .get_or_create(&RouteLabels {
                    tenant: tenant.to_string(),
                    service: service.to_string(),
                })
                .clone(),
            codes: std::sync::RwLock::default(),
        });
        h.duration.observe(took.as_secs_f64());
        {
            let codes = h.codes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, c)) = codes.iter().find(|(k, _)| *k == code) {
                c.inc();
                return;
            }
        }
        let counter = self
            .requests
            .get_or_create(&RequestLabels {
                tenant: tenant.to_string(),
                service: service.to_string(),
                code,
            })
            .clone();
        counter.inc();
        let mut codes = h.codes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !codes.iter().any(|(k, _)| *k == code) {
            codes.push((code, counter));
        }
    }

    /// An endpoint was ejected.
    pub fn ejected(&self) {
        self.ejections.inc();
    }

    /// A snapshot was applied (or refused).
    pub fn snapshot(&self, applied: bool, version: u64, routes: usize) {
        let result = if applied { "applied" } else { "refused" };
        self.snapshots.get_or_create(&ResultLabels { result }).inc();
        if applied {
            self.version.set(version);
            self.routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
        }
    }

    /// Parts left out of the snapshot now served.
    pub fn snapshot_problems(&self, n: usize) {
        self.problems.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The sync stream opened or closed.
    pub fn connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A route's handles on its request metrics, made on its first request.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    inner: std::sync::OnceLock<RouteHandles>,
}

#[derive(Debug)]
struct RouteHandles {
    duration: Histogram,
    /// Request counters by HTTP code (a route answers with few distinct codes).
    codes: std::sync::RwLock<Vec<(u16, Counter)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_requests_by_bounded_labels() {
        let m = Metrics::new();
        m.observe("micro", "helloworld", 200, Duration::from_millis(2));
        m.observe("", "", 404, Duration::from_millis(1));
        m.snapshot(true, 3, 5);
        let text = m.encode();
        assert!(
            text.contains(r#"microplane_gateway_requests_total{tenant="micro",service="helloworld",code="200"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"microplane_gateway_requests_total{tenant="",service="",code="404"} 1"#));
        assert!(text.contains("microplane_gateway_snapshot_version 3"));
        assert!(text.contains("microplane_gateway_routes 5"));
    }

    #[test]
    fn route_handles_count_into_the_same_series() {
        let m = Metrics::new();
        let first = RouteMetrics::default();
        for code in [200, 200, 503] {
            m.observe_route(&first, "micro", "web", code, Duration::from_millis(2));
        }
        // A later snapshot's route makes new handles on the same series.
        let second = RouteMetrics::default();
        m.observe_route(&second, "micro", "web", 200, Duration::from_millis(2));
        m.observe("micro", "web", 200, Duration::from_millis(2));
        let text = m.encode();
        for line in [
            r#"microplane_gateway_requests_total{tenant="micro",service="web",code="200"} 4"#,
            r#"microplane_gateway_requests_total{tenant="micro",service="web",code="503"} 1"#,
            r#"microplane_gateway_request_duration_seconds_count{tenant="micro",service="web"} 5"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
