//! The `microplane.sync.v1.RoutingSync` service: each gateway gets the current snapshot at once and
//! every newer one after; its acknowledgements are logged and counted. Callers present a bearer
//! token (`authorization: Bearer …`) that [`SyncAuth`] checks: a shared token, or a projected
//! ServiceAccount token reviewed with the API server. When the operator shuts down, every stream
//! ends at once, so gateways reconnect to another replica instead of waiting on this one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use microplane_wire::sync::v1::routing_sync_server::{RoutingSync, RoutingSyncServer};
use microplane_wire::sync::v1::{GatewayMessage, Snapshot, gateway_message};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::auth::SyncAuth;
use crate::metrics::SyncMetrics;

/// The service.
pub struct SyncService {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    auth: Arc<SyncAuth>,
    metrics: SyncMetrics,
    closing: watch::Receiver<bool>,
}

impl SyncService {
    /// Serves what `snapshots` holds to callers presenting the shared `token`.
    pub fn new(snapshots: watch::Receiver<Option<Arc<Snapshot>>>, token: String, metrics: SyncMetrics) -> Self {
        // Never closing: the sender is dropped, and `wait_for` on a closed channel that never held
        // `true` returns an error, which is treated as "keep going" below.
        let (_, closing) = watch::channel(false);
        Self::with_auth(snapshots, SyncAuth::Static(token), metrics, closing)
    }

    /// Serves what `snapshots` holds to callers `auth` admits, until `closing` turns true.
    pub fn with_auth(
        snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        auth: SyncAuth,
        metrics: SyncMetrics,
        closing: watch::Receiver<bool>,
    ) -> Self {
        Self {
            snapshots,
            auth: Arc::new(auth),
            metrics,
            closing,
        }
    }

    async fn authorized<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let presented = req
            .metadata()
            .get(microplane_wire::sync::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .trim();
        self.auth.check(presented).await.map_err(|refused| {
            let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(%peer, reason = %refused, "sync request refused");
            Status::unauthenticated("a valid sync token is required")
        })
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl RoutingSync for SyncService {
    type WatchStream = SnapshotStream;

    async fn watch(&self, req: Request<Streaming<GatewayMessage>>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.authorized(&req).await?;
        let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut incoming = req.into_inner();
        let metrics = self.metrics.clone();
        metrics.gateway_connected(1);
        tokio::spawn(async move {
            let mut name = String::new();
            loop {
                match incoming.message().await {
                    Ok(Some(GatewayMessage {
                        kind: Some(gateway_message::Kind::Hello(h)),
                    })) => {
                        tracing::info!(gateway = %h.gateway, %peer, %caller, serving = h.version, "gateway connected");
                        name = h.gateway;
                    }
                    Ok(Some(GatewayMessage {
                        kind: Some(gateway_message::Kind::Ack(a)),
                    })) => {
                        let applied = a.error.is_empty();
                        metrics.sync_ack(applied);
                        if applied && !a.problems.is_empty() {
                            tracing::warn!(gateway = %name, version = a.version, problems = %a.problems.join("; "), "gateway applied a snapshot without some parts");
                        } else if applied {
                            tracing::debug!(gateway = %name, version = a.version, "snapshot acknowledged");
                        } else {
                            tracing::warn!(gateway = %name, version = a.version, error = %a.error, "gateway refused a snapshot");
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            metrics.gateway_connected(-1);
            tracing::info!(gateway = %name, %peer, "gateway disconnected");
        });
        let rx = self.snapshots.clone();
        let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            // The first item is the current snapshot (once there is one); then every newer one.
            if !first && rx.changed().await.is_err() {
                return None;
            }
            loop {
                let current = rx.borrow_and_update().clone();
                if let Some(s) = current {
                    return Some((Ok(Snapshot::clone(&s)), (rx, false)));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        });
        // Shutting down: the stream ends (OK), and the gateway reconnects elsewhere.
        let mut closing = self.closing.clone();
        let stream = futures::StreamExt::take_until(stream, async move {
            if closing.wait_for(|c| *c).await.is_err() {
                // No one can ask this service to close.
                std::future::pending::<()>().await;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves the sync service on `addr` until `shutdown`: over TLS with `tls` (the serving
/// certificate and key, PEM), else cleartext h2c (host-process setups and tests only).
pub async fn serve(
    addr: SocketAddr,
    service: SyncService,
    tls: Option<&super::tls::Material>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(m) = tls {
        let identity = tonic::transport::Identity::from_pem(&m.cert, &m.key);
        builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
        tracing::info!(%addr, names = %m.dns_names, "sync server listening (TLS)");
    } else {
        tracing::warn!(%addr, "sync server listening in cleartext (no --sync-tls-secret): only for host-process setups");
    }
    builder
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(RoutingSyncServer::new(service).max_encoding_message_size(256 << 20))
        .serve_with_shutdown(addr, shutdown)
        .await
}
