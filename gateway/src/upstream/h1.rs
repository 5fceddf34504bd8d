//! Kept-alive HTTP/1.1 connections to one `Http` endpoint, and the response body that gives its
//! connection back.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::body::{BoxBody, BoxError};

/// How long a connection to an `Http` endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an unused kept-alive backend connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per endpoint.
const MAX_IDLE: usize = 256;
/// Kept-alive HTTP/1.1 connections to one `Http` endpoint, most recently used first.
///
/// A connection is taken for one request and comes back when that request's response body has
/// ended, so it never carries two requests at once; one whose body was abandoned, or that was
/// upgraded, is never reused. The pool belongs to the endpoint's [`Upstream`](super::Upstream), so it lives as long
/// as some snapshot routes to that endpoint.
#[derive(Debug, Default)]
pub struct H1Pool {
    idle: Mutex<Vec<(http1::SendRequest<BoxBody>, Instant)>>,
}

impl H1Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(http1::SendRequest<BoxBody>, Instant)>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used open connection, if any.
    pub(crate) fn take(&self) -> Option<http1::SendRequest<BoxBody>> {
        let mut idle = self.lock();
        while let Some((tx, since)) = idle.pop() {
            if !tx.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(tx);
            }
        }
        None
    }

    /// Returns a connection whose exchange ended; drops the ones idle for too long.
    fn put(&self, tx: http1::SendRequest<BoxBody>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        let stale = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push((tx, now));
        }
    }

    /// Open connections kept idle now (one the backend closed is as good as gone: it is dropped
    /// when next taken).
    pub fn idle(&self) -> usize {
        self.lock().iter().filter(|(tx, _)| !tx.is_closed()).count()
    }
}

/// Opens a new HTTP/1.1 connection to `address`, driven by a task of its own.
pub(super) async fn connect(
    socket: Option<SocketAddr>,
    address: &str,
) -> Result<http1::SendRequest<BoxBody>, std::io::Error> {
    let addr: SocketAddr =
        socket.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an ip:port address"))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    // Flattened writes (head and body copied into one buffer, one `send`) rather than `writev`, as
    // the downstream server does (see `server::serve`).
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .handshake::<_, BoxBody>(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    let address = address.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, upstream = %address, "backend connection ended with an error");
        }
    });
    Ok(tx)
}

/// A backend response body that gives its connection back to the pool when it ends.
pub(crate) struct PooledBody {
    inner: Incoming,
    conn: Option<(http1::SendRequest<BoxBody>, Arc<H1Pool>)>,
}

impl PooledBody {
    /// The body of a response read on `conn`'s connection; `conn` goes back to its pool when the
    /// body ends (at once if it already has). Without `conn` (an upgraded connection), nothing is
    /// given back.
    pub(crate) fn new(inner: Incoming, conn: Option<(http1::SendRequest<BoxBody>, Arc<H1Pool>)>) -> Self {
        let mut body = Self { inner, conn };
        body.release_if_done();
        body
    }

    fn release_if_done(&mut self) {
        if self.inner.is_end_stream()
            && let Some((tx, pool)) = self.conn.take()
        {
            pool.put(tx);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some((tx, pool)) = self.conn.take() {
                    pool.put(tx);
                }
            }
            Poll::Ready(Some(Ok(_))) => self.release_if_done(),
            // A broken body leaves the connection in an unknown state: it is not reused.
            Poll::Ready(Some(Err(_))) => self.conn = None,
            Poll::Pending => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
