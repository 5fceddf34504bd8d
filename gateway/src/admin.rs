//! The admin port: `/healthz` (the sync task lives), `/readyz` ([`crate::health`]), `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::health::{Health, Readiness};
use crate::metrics::Metrics;

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: Metrics,
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(s): State<AdminState>| async move {
                if s.health.live() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "sync task stopped")
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                match s.health.readiness() {
                    Readiness::Ready => (StatusCode::OK, "ready".to_string()),
                    r => (StatusCode::SERVICE_UNAVAILABLE, r.describe()),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
            }),
        )
        .with_state(AdminState { health, metrics });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
