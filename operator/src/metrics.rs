//! Prometheus metrics of the operator. Labels are bounded: controller and error category, never
//! object names.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    /// `microservice`, `tenant`, `config` or `authrule`.
    pub controller: &'static str,
}

/// Label of error metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// The controller.
    pub controller: &'static str,
    /// [`crate::Error::category`].
    pub category: &'static str,
}

/// Label of write metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    /// The controller.
    pub controller: &'static str,
    /// Kind written, e.g. `Deployment`, or `status`.
    pub kind: &'static str,
}

/// Label of API request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    /// HTTP method (GET also covers list and watch).
    pub method: &'static str,
}

/// API requests this process sent, by method: counted by a layer on the client.
#[derive(Clone, Default)]
pub struct ApiRequests(pub Family<VerbLabel, Counter>);

impl ApiRequests {
    /// Counts one request.
    pub fn count(&self, method: &http::Method) {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::PATCH => "PATCH",
            http::Method::DELETE => "DELETE",
            _ => "other",
        };
        self.0.get_or_create(&VerbLabel { method }).inc();
    }
}

/// The operator's metrics.
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Family<ControllerLabel, Counter>,
    /// Reconciles that failed, by category.
    pub errors: Family<ErrorLabel, Counter>,
    /// Reconcile duration.
    pub duration: Family<ControllerLabel, Histogram>,
    /// Writes (applies, deletes, status patches) sent to the API server.
    pub writes: Family<WriteLabel, Counter>,
    /// All API requests, by method.
    pub api_requests: ApiRequests,
    /// The gateway sync.
    pub sync: SyncMetrics,
    registry: Registry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AckLabel {
    result: &'static str,
}

/// Metrics of the gateway sync, shared with its server.
#[derive(Clone, Debug, Default)]
pub struct SyncMetrics {
    gateways: Gauge,
    acks: Family<AckLabel, Counter>,
    version: Gauge,
}

impl SyncMetrics {
    /// A gateway stream opened (+1) or closed (-1).
    pub fn gateway_connected(&self, delta: i64) {
        self.gateways.inc_by(delta);
    }

    /// A gateway acknowledged a snapshot.
    pub fn sync_ack(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.acks.get_or_create(&AckLabel { result }).inc();
    }

    /// A snapshot was published.
    pub fn published(&self, version: u64) {
        self.version.set(i64::try_from(version).unwrap_or(i64::MAX));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(ApiRequests::default())
    }
}

impl Metrics {
    /// Metrics that include the request counter of the client.
    pub fn new(api_requests: ApiRequests) -> Self {
        let mut registry = Registry::with_prefix("microplane_operator");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let writes = Family::<WriteLabel, Counter>::default();
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            errors.clone(),
        );
        registry.register("reconcile_duration_seconds", "Reconcile duration", duration.clone());
        registry.register("writes", "Writes sent to the API server, by kind", writes.clone());
        registry.register(
            "api_requests",
            "Requests sent to the API server, by method",
            api_requests.0.clone(),
        );
        let sync = SyncMetrics::default();
        registry.register(
            "sync_gateways",
            "Gateways following the snapshot stream",
            sync.gateways.clone(),
        );
        registry.register("sync_acks", "Snapshot acknowledgements, by result", sync.acks.clone());
        registry.register(
            "sync_snapshot_version",
            "Version of the latest snapshot published",
            sync.version.clone(),
        );
        Self {
            reconciles,
            errors,
            duration,
            writes,
            api_requests,
            sync,
            registry,
        }
    }

    /// Records one reconcile.
    pub fn reconciled(&self, controller: &'static str, took: Duration, error: Option<&crate::Error>) {
        self.reconciles.get_or_create(&ControllerLabel { controller }).inc();
        self.duration
            .get_or_create(&ControllerLabel { controller })
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            self.errors
                .get_or_create(&ErrorLabel {
                    controller,
                    category: e.category(),
                })
                .inc();
        }
    }

    /// Records one write.
    pub fn wrote(&self, controller: &'static str, kind: &'static str) {
        self.writes.get_or_create(&WriteLabel { controller, kind }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
