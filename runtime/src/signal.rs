//! The shutdown signal.

use std::future::Future;
use std::io;

/// Completes on SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C), logging which (`received
/// SIGTERM`, `received SIGINT`). The handlers are installed when this is called, so signals that
/// arrive before the future is polled are not lost; installing them fails only when the process may
/// not handle signals.
///
/// The future is `Send` and `'static`; wrap it in `futures::FutureExt::shared` to hand it to several
/// tasks.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("received SIGTERM"),
                _ = interrupt.recv() => tracing::info!("received SIGINT"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("received Ctrl-C");
        })
    }
}
