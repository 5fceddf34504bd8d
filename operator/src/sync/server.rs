//! The `microplane.sync.v1.RoutingSync` service: each gateway gets the current snapshot at once and
//! every newer one after; its acknowledgements are logged and counted. Callers must present the
//! shared token (`authorization: Bearer …`), compared in constant time.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use microplane_sync::v1::routing_sync_server::{RoutingSync, RoutingSyncServer};
use microplane_sync::v1::{GatewayMessage, Snapshot, gateway_message};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::SyncMetrics;

/// The service.
pub struct SyncService {
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    token: Arc<String>,
    metrics: SyncMetrics,
}

impl SyncService {
    /// Serves what `snapshots` holds to callers presenting `token`.
    pub fn new(snapshots: watch::Receiver<Option<Arc<Snapshot>>>, token: String, metrics: SyncMetrics) -> Self {
        Self {
            snapshots,
            token: Arc::new(token),
            metrics,
        }
    }

    fn authorized<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let presented = req
            .metadata()
            .get(microplane_sync::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !self.token.is_empty() && bool::from(presented.as_bytes().ct_eq(self.token.as_bytes())) {
            Ok(())
        } else {
            Err(Status::unauthenticated("a valid sync token is required"))
        }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl RoutingSync for SyncService {
    type WatchStream = SnapshotStream;

    async fn watch(&self, req: Request<Streaming<GatewayMessage>>) -> Result<Response<Self::WatchStream>, Status> {
        self.authorized(&req)?;
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
                        tracing::info!(gateway = %h.gateway, %peer, serving = h.version, "gateway connected");
                        name = h.gateway;
                    }
                    Ok(Some(GatewayMessage {
                        kind: Some(gateway_message::Kind::Ack(a)),
                    })) => {
                        let applied = a.error.is_empty();
                        metrics.sync_ack(applied);
                        if applied {
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
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves the sync service on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    service: SyncService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tracing::info!(%addr, "sync server listening");
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(RoutingSyncServer::new(service).max_encoding_message_size(256 << 20))
        .serve_with_shutdown(addr, shutdown)
        .await
}
