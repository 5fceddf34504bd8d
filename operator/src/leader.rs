//! Leader election on a coordination.k8s.io Lease: one replica writes, standbys keep their caches
//! warm and take over when the lease expires.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct Election {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease duration in seconds.
    pub duration: u64,
}

/// Starts leader election; the receiver says whether this replica leads. Without election the
/// receiver is always true.
pub async fn start(client: Client, election: Option<Election>) -> anyhow::Result<watch::Receiver<bool>> {
    let Some(e) = election else {
        // The sender is dropped: receivers keep reading `true`, and nothing ever changes it.
        let (_, rx) = watch::channel(true);
        return Ok(rx);
    };
    let manager = LeaseManagerBuilder::new(client, &e.name)
        .with_namespace(&e.namespace)
        .with_identity(&e.identity)
        .with_duration(e.duration)
        .with_grace(e.duration / 3)
        .with_field_manager("microplane.dev/operator-lease")
        .build()
        .await?;
    let (rx, handle) = manager.watch().await;
    tokio::spawn(async move {
        match handle.await {
            Ok(Ok(_)) => tracing::info!("lease manager stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "lease manager failed"),
            Err(e) => tracing::error!(error = %e, "lease manager task failed"),
        }
    });
    let mut log_rx = rx.clone();
    tokio::spawn(async move {
        loop {
            tracing::info!(leader = *log_rx.borrow_and_update(), "leadership");
            if log_rx.changed().await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
