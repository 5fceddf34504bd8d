//! The downstream listener: HTTP/1.1 and h2c with the edge limits (docs/gateway.md, "Edge
//! limits"), each request handed to [`Gateway::handle`], and the drain on shutdown
//! (docs/gateway.md, "Health and shutdown").

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::peer::Peer;
use crate::state::Gateway;

/// Serves HTTP/1.1 and h2c on `listener` until `shutdown`, then lets open requests finish.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    serve_graceful(gateway, listener, shutdown, Drain::default(), None).await
}

/// How the gateway leaves on SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// After the signal, keep accepting and serving this long (not ready meanwhile), so that
    /// endpoints are withdrawn before the listener closes: no client meets a refused connection.
    pub delay: Duration,
    /// Then the longest wait for in-flight requests before exiting anyway.
    pub timeout: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            timeout: Duration::from_secs(25),
        }
    }
}

/// Concurrent HTTP/2 streams one client connection may open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// [`serve`] with a shutdown sequence: when `shutdown` resolves, `health` turns not ready at once;
/// new and open connections keep being served for `drain.delay`; then the listener closes, every
/// connection is asked to finish (HTTP/1.1 answers its request in flight with `Connection: close`
/// and closes, an idle keep-alive connection closes, HTTP/2 sends GOAWAY), and this returns when
/// the last one has ended, or after `drain.timeout`.
pub async fn serve_graceful(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Drain,
    health: Option<Arc<crate::health::Health>>,
) -> std::io::Result<()> {
    let shutdown = async move {
        shutdown.await;
        if let Some(h) = &health {
            h.shutting_down();
        }
        tracing::info!(
            delay_ms = drain.delay.as_millis(),
            "shutdown: not ready; still serving while endpoints are withdrawn"
        );
        tokio::time::sleep(drain.delay).await;
        tracing::info!("shutdown: closing the listener and draining connections");
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let s = gateway.settings.clone();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.idle_timeout)
        .max_buf_size(s.max_header_bytes.max(8192))
        // One flattened write per response instead of `writev`: for the small heads and bodies of
        // API traffic the kernel's vectored path costs more than copying them together. With the
        // backend pool writing flat too, CPU per proxied request in `make bench-gateway` fell from
        // about 42 to 38 µs (medians of 8 rounds; the run-to-run noise there is ±10%).
        .writev(false)
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        // Each stream holds a request's body and state: a client gets as many as an HTTP/1.1 client
        // would get connections from a browser, times a few (issue 20: 1024 let one connection hold
        // 1024 requests' memory).
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let open = Arc::new(OpenConnections::default());
    // At most `max_connections` are served at once; the next waits in the listen backlog.
    let slots = Arc::new(tokio::sync::Semaphore::new(s.max_connections));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the open connections.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let client = Arc::new(Peer::new(peer, &gateway.settings.trusted_proxies));
        let activity = Arc::new(Activity::new());
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            seen.request();
            let gw = gw.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(gw.handle(req, &client).await) }
        });
        let idle_timeout = s.idle_timeout;
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let registered = open.register();
        tokio::spawn(async move {
            let _slot = slot;
            let (stop, _guard) = registered;
            let mut conn = std::pin::pin!(conn);
            let mut stop = std::pin::pin!(stop);
            // The connection first: the stop signal is looked at only when the connection is not
            // done, and costs an atomic load (a shared watch would take a lock on every poll). A
            // connection on which no request started for `idle_timeout` is closed gracefully too
            // (HTTP/2 sends GOAWAY; streams in flight, such as a server-sent event stream, finish),
            // so idle HTTP/2 connections, which keep-alive pings would keep forever, free their
            // slot and memory.
            let result = loop {
                let idle_for = activity.idle_for();
                let check_in = idle_timeout.saturating_sub(idle_for);
                tokio::select! {
                    biased;
                    r = conn.as_mut() => break r,
                    _ = stop.as_mut() => {
                        conn.as_mut().graceful_shutdown();
                        break conn.await;
                    }
                    () = tokio::time::sleep(check_in) => {
                        if activity.idle_for() >= idle_timeout {
                            tracing::debug!(%peer, "idle connection closed");
                            conn.as_mut().graceful_shutdown();
                            break conn.await;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    open.stop_all();
    let drained = async {
        while open.count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let started = std::time::Instant::now();
    if tokio::time::timeout(drain.timeout, drained).await.is_err() {
        tracing::warn!(
            open = open.count(),
            timeout_s = drain.timeout.as_secs(),
            "connections still open after the drain timeout; closing"
        );
    } else {
        tracing::info!(took_ms = started.elapsed().as_millis(), "connections drained");
    }
    Ok(())
}

/// When a connection last started a request: milliseconds since the connection was accepted.
struct Activity {
    since: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A request started now.
    fn request(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the last request started (or since the connection was accepted).
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }
}

/// The open downstream connections, each with the sender that asks it to finish gracefully: the
/// request in flight completes, an idle keep-alive connection closes.
#[derive(Default)]
struct OpenConnections {
    inner: std::sync::Mutex<OpenInner>,
}

#[derive(Default)]
struct OpenInner {
    next: u64,
    /// By id; the sender is taken when the connection is asked to stop.
    conns: std::collections::HashMap<u64, Option<tokio::sync::oneshot::Sender<()>>>,
}

/// Removes its connection from [`OpenConnections`] when the connection's task ends.
struct Registered {
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.lock().conns.remove(&self.id);
    }
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new connection: the receiver of its stop signal, and the guard that unregisters it.
    fn register(self: &Arc<Self>) -> (tokio::sync::oneshot::Receiver<()>, Registered) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.conns.insert(id, Some(tx));
        drop(inner);
        (rx, Registered { open: self.clone(), id })
    }

    /// Asks every open connection to finish.
    fn stop_all(&self) {
        for tx in self.lock().conns.values_mut().filter_map(Option::take) {
            let _ = tx.send(());
        }
    }

    fn count(&self) -> usize {
        self.lock().conns.len()
    }
}
