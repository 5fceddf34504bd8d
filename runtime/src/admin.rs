//! The admin server of the operator and the gateway: `GET /healthz` (liveness), `GET /readyz`
//! (readiness) and `GET /metrics` (OpenMetrics text).
//!
//! A probe answers 200 with its body when it passes and 503 with the reason when it does not, both as
//! `text/plain; charset=utf-8`. `/metrics` answers 200 with what the metrics source encodes.
//!
//! ```no_run
//! # async fn run(registry: std::sync::Arc<prometheus_client::registry::Registry>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use microplane_runtime::admin::Admin;
//!
//! let synced = Arc::new(AtomicBool::new(false));
//! let ready = synced.clone();
//! let admin = Admin::new()
//!     .readiness(move || match ready.load(Ordering::Acquire) {
//!         true => Ok("ok".into()),
//!         false => Err("caches not synced".into()),
//!     })
//!     .registry(registry);
//! admin.serve("0.0.0.0:8081".parse().unwrap(), std::future::pending()).await
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a probe says: `Ok(body)` answers 200, `Err(reason)` 503.
pub type Probe = Result<Cow<'static, str>, Cow<'static, str>>;

type Check = Arc<dyn Fn() -> Probe + Send + Sync>;
type Encode = Arc<dyn Fn() -> String + Send + Sync>;

/// The admin server: a liveness and a readiness check, run on every request, and a metrics source.
/// [`Admin::new`] passes both probes with `ok` and serves empty metrics.
#[derive(Clone)]
pub struct Admin {
    live: Check,
    ready: Check,
    metrics: Encode,
}

impl Default for Admin {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin server whose probes always pass (`ok`) and whose metrics are empty.
    pub fn new() -> Self {
        Self {
            live: Arc::new(|| Ok(Cow::Borrowed("ok"))),
            ready: Arc::new(|| Ok(Cow::Borrowed("ok"))),
            metrics: Arc::new(String::new),
        }
    }

    /// `/healthz` runs `check`.
    #[must_use]
    pub fn liveness(mut self, check: impl Fn() -> Probe + Send + Sync + 'static) -> Self {
        self.live = Arc::new(check);
        self
    }

    /// `/readyz` runs `check`.
    #[must_use]
    pub fn readiness(mut self, check: impl Fn() -> Probe + Send + Sync + 'static) -> Self {
        self.ready = Arc::new(check);
        self
    }

    /// `/metrics` serves what `encode` returns (OpenMetrics text), e.g. a registry known only later.
    #[must_use]
    pub fn metrics(mut self, encode: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Arc::new(encode);
        self
    }

    /// `/metrics` serves `registry` ([`encode`]).
    #[must_use]
    pub fn registry(self, registry: Arc<Registry>) -> Self {
        self.metrics(move || encode(&registry))
    }

    /// The routes, for tests or to serve elsewhere.
    pub fn router(self) -> Router {
        Router::new()
            .route(
                "/healthz",
                get(|State(s): State<Admin>| async move { answer((s.live)()) }),
            )
            .route(
                "/readyz",
                get(|State(s): State<Admin>| async move { answer((s.ready)()) }),
            )
            .route(
                "/metrics",
                get(|State(s): State<Admin>| async move { ([(header::CONTENT_TYPE, OPENMETRICS)], (s.metrics)()) }),
            )
            .with_state(self)
    }

    /// Serves on `addr` until `shutdown` completes.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(%addr, "admin server listening");
        self.serve_with_listener(listener, shutdown).await
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve_with_listener(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn answer(probe: Probe) -> impl IntoResponse {
    match probe {
        Ok(body) => (StatusCode::OK, body),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// `registry` as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt as _;

    use super::*;

    async fn get(admin: &Admin, path: &str) -> (StatusCode, Option<String>, String) {
        let response = admin
            .clone()
            .router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    const TEXT: Option<&str> = Some("text/plain; charset=utf-8");

    #[tokio::test]
    async fn defaults_pass_with_ok_and_empty_metrics() {
        let admin = Admin::new();
        assert_eq!(
            get(&admin, "/healthz").await,
            (StatusCode::OK, TEXT.map(str::to_string), "ok".into())
        );
        assert_eq!(
            get(&admin, "/readyz").await,
            (StatusCode::OK, TEXT.map(str::to_string), "ok".into())
        );
        assert_eq!(
            get(&admin, "/metrics").await,
            (StatusCode::OK, Some(OPENMETRICS.to_string()), String::new())
        );
        assert_eq!(get(&admin, "/other").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn probes_run_on_every_request() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let admin = Admin::new()
            .readiness(move || {
                if flag.load(Ordering::Acquire) {
                    Ok("ready".into())
                } else {
                    Err(format!("sync stream down for {}s", 31).into())
                }
            })
            .liveness(|| Err("sync task stopped".into()));
        assert_eq!(
            get(&admin, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT.map(str::to_string),
                "sync stream down for 31s".into()
            )
        );
        ready.store(true, Ordering::Release);
        assert_eq!(get(&admin, "/readyz").await.2, "ready");
        assert_eq!(get(&admin, "/readyz").await.0, StatusCode::OK);
        assert_eq!(
            get(&admin, "/healthz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT.map(str::to_string),
                "sync task stopped".into()
            )
        );
    }

    #[tokio::test]
    async fn metrics_encode_the_registry() {
        let mut registry = Registry::with_prefix("microplane_test");
        let counter = Counter::<u64>::default();
        registry.register("things", "Things counted", counter.clone());
        counter.inc();
        let admin = Admin::new().registry(Arc::new(registry));
        let (status, content_type, body) = get(&admin, "/metrics").await;
        assert_eq!((status, content_type.as_deref()), (StatusCode::OK, Some(OPENMETRICS)));
        assert!(body.contains("microplane_test_things_total 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[tokio::test]
    async fn serves_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(Admin::new().serve_with_listener(listener, async {
            let _ = stopped.await;
        }));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
