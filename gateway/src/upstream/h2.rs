//! HTTP/2 connections to `Grpc` endpoints: the transport under tonic's client (`tonic::client::Grpc`
//! does the gRPC framing, codecs and status) built straight on the `h2` crate.
//!
//! Why not tonic's `Channel`: a call through it crosses four tasks (the caller, the `Buffer`
//! worker, hyper's connection task and a task hyper spawns per request to wait for the response).
//! Here the caller's task sends the request, its one-message body and awaits the response; only the
//! connection's own I/O runs in a task of its own. One connection per endpoint multiplexes every
//! call; it is made on first use, replaced when it ends, and kept honest with HTTP/2 pings (every
//! 20 s, 10 s to answer, also while idle), as the `Channel` was.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};

use crate::body::BoxError;

/// How long a connection to a `Grpc` endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Ping interval on a backend connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Time a ping has to be answered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A call that certainly never reached the backend's handler: no connection could be made, or the
/// server refused the stream (REFUSED_STREAM, or above a GOAWAY's last stream). Sending it again
/// elsewhere is safe for any method.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotSent(pub String);

/// Whether a failed call is a [`NotSent`]: the only failure after which the call may go to another
/// endpoint. Decided by the error's type alone, never by its text: a status a backend answered
/// (whatever its code and words) has no source, and was sent.
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<NotSent>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The HTTP/2 connection to one endpoint, shared by every call to it; cloning is cheap.
#[derive(Clone, Debug)]
pub struct H2Channel {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// `ip:port`, for logs.
    address: String,
    socket: Option<SocketAddr>,
    /// The open connection, with a number telling it from its successors.
    current: Mutex<Option<(u64, h2::client::SendRequest<Bytes>)>>,
    /// One connect at a time.
    connecting: tokio::sync::Mutex<u64>,
}

impl H2Channel {
    /// A channel to `address` (`ip:port`); connects on first use.
    pub(crate) fn new(address: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                address: address.to_string(),
                socket: address.parse().ok(),
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(0),
            }),
        }
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.shared.current().is_some()
    }
}

impl Shared {
    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// The open connection (with its generation, and whether it is new), or a new one.
    async fn sender(self: &Arc<Self>) -> Result<(u64, h2::client::SendRequest<Bytes>, bool), BoxError> {
        if let Some((g, tx)) = self.current() {
            return Ok((g, tx, false));
        }
        let mut generation = self.connecting.lock().await;
        // Someone else may have connected while this call waited.
        if let Some((g, tx)) = self.current() {
            return Ok((g, tx, true));
        }
        let addr = self
            .socket
            .ok_or_else(|| NotSent(format!("connecting: {} is not an ip:port address", self.address)))?;
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(NotSent(format!("connecting: tcp connect error: {e}")).into()),
            Err(_) => return Err(NotSent("connecting: tcp connect timed out".into()).into()),
        };
        let _ = stream.set_nodelay(true);
        let (tx, mut conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 22)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| NotSent(format!("connecting: HTTP/2 handshake: {e}")))?;
        *generation += 1;
        let this_generation = *generation;
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((this_generation, tx.clone()));
        let shared = Arc::downgrade(self);
        let address = self.address.clone();
        let ping = conn.ping_pong();
        tokio::spawn(async move {
            let result = match ping {
                Some(ping) => drive_with_keepalive(&mut conn, ping).await,
                None => (&mut conn).await.map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, upstream = %address, "backend connection ended");
            }
            if let Some(shared) = shared.upgrade() {
                shared.forget(this_generation);
            }
        });
        Ok((this_generation, tx, true))
    }

    fn current(&self) -> Option<(u64, h2::client::SendRequest<Bytes>)> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|(g, tx)| (*g, tx.clone()))
    }
}

/// Drives `conn` until it ends, pinging the peer every [`KEEPALIVE_INTERVAL`]; a ping unanswered for
/// [`KEEPALIVE_TIMEOUT`] ends it.
async fn drive_with_keepalive(
    conn: &mut h2::client::Connection<tokio::net::TcpStream, Bytes>,
    mut ping: h2::PingPong,
) -> Result<(), String> {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE_INTERVAL, KEEPALIVE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ended = &mut *conn => return ended.map_err(|e| e.to_string()),
            _ = interval.tick() => {
                let pong = ping.ping(h2::Ping::opaque());
                tokio::select! {
                    ended = &mut *conn => return ended.map_err(|e| e.to_string()),
                    answered = tokio::time::timeout(KEEPALIVE_TIMEOUT, pong) => match answered {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(format!("ping: {e}")),
                        Err(_) => return Err("keep-alive ping unanswered".into()),
                    },
                }
            }
        }
    }
}

/// Whether an HTTP/2 error on a stream means the server never processed it: it refused the stream,
/// or it was above the last stream of a graceful GOAWAY.
fn refused(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM)
        || (e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR))
}

impl<B> tower::Service<Request<B>> for H2Channel
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<H2Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<H2Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            // The gateway sends unary requests: one message, read whole before anything is sent.
            let body = body.collect().await.map_err(Into::into)?;
            let trailers = body.trailers().cloned();
            let data = body.to_bytes();
            let request = Request::from_parts(parts, ());
            let end = data.is_empty() && trailers.is_none();
            // Until `send_request` succeeds nothing is on the wire. A kept connection that ended (or
            // is going away) is forgotten and the call tried once more on a fresh one; a fresh one
            // that fails too makes the call go elsewhere.
            let not_sent = |generation: u64, e: h2::Error| -> BoxError {
                shared.forget(generation);
                NotSent(format!("connection closed: {e}")).into()
            };
            let mut retried = false;
            let (response, mut stream) = loop {
                let (generation, tx, fresh) = shared.sender().await?;
                match tx.ready().await {
                    Ok(mut tx) => break tx.send_request(request, end).map_err(|e| not_sent(generation, e))?,
                    Err(e) if fresh || retried => return Err(not_sent(generation, e)),
                    Err(e) => {
                        let e = not_sent(generation, e);
                        tracing::debug!(error = %e, upstream = %shared.address, "kept connection unusable; reconnecting");
                        retried = true;
                    }
                }
            };
            if !end {
                stream.send_data(data, trailers.is_none())?;
                if let Some(t) = trailers {
                    stream.send_trailers(t)?;
                }
            }
            let response = response.await.map_err(|e| -> BoxError {
                if refused(&e) {
                    NotSent(format!("stream refused: {e}")).into()
                } else {
                    e.into()
                }
            })?;
            let (parts, recv) = response.into_parts();
            Ok(Response::from_parts(
                parts,
                H2Body {
                    recv,
                    trailers_done: false,
                },
            ))
        })
    }
}

/// A response body read from an HTTP/2 stream, releasing flow-control capacity as it goes.
#[derive(Debug)]
pub struct H2Body {
    recv: h2::RecvStream,
    trailers_done: bool,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.trailers_done {
            return Poll::Ready(None);
        }
        if !this.recv.is_end_stream() {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Ready(Ok(trailers)) => {
                this.trailers_done = true;
                Poll::Ready(trailers.map(|t: HeaderMap| Ok(Frame::trailers(t))))
            }
            Poll::Ready(Err(e)) => {
                this.trailers_done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refused_streams_were_never_processed() {
        assert!(refused(&h2::Error::from(h2::Reason::REFUSED_STREAM)));
        for reason in [
            h2::Reason::CANCEL,
            h2::Reason::INTERNAL_ERROR,
            h2::Reason::PROTOCOL_ERROR,
            h2::Reason::NO_ERROR,
        ] {
            assert!(!refused(&h2::Error::from(reason)), "{reason:?}");
        }
    }

    #[test]
    fn a_call_that_was_not_sent_may_go_elsewhere() {
        let not_sent = tonic::Status::from_error(Box::new(NotSent("connection closed: broken pipe".into())));
        assert!(never_sent(&not_sent));
        // A stream reset after the server took it may have done work.
        let reset = tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert!(!never_sent(&reset));
    }

    #[tokio::test]
    async fn nothing_listening_is_not_sent() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut channel = H2Channel::new(&addr.to_string());
        let req = Request::post(format!("http://{addr}/x.Y/Z"))
            .body(http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let err = tower::Service::call(&mut channel, req).await.unwrap_err();
        assert!(err.downcast_ref::<NotSent>().is_some(), "{err}");
        assert!(!channel.is_connected());
    }
}
