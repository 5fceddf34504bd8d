//! `Http` services through the whole data path (docs/gateway.md): a gateway serving a snapshot
//! on loopback, in front of real HTTP/1.1 backends that record what reached them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Client, dead_addr, endpoints, wait_until};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use microplane_gateway::state::Gateway;
use microplane_wire::sync::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one request looked like when it reached a backend.
#[derive(Clone, Debug)]
struct Seen {
    /// The backend connection it came on (the gateway's local address).
    conn: SocketAddr,
    method: http::Method,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

/// How the backend treats a connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Keep-alive.
    KeepAlive,
    /// `Connection: close` on every response.
    Close,
    /// Keep-alive, but an idle connection is closed after 50 ms.
    IdleTimeout,
}

struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections that have ended.
    closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let record = seen.clone();
        let ended = closed.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                let ended = ended.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        async move { Ok::<_, Infallible>(respond(req, peer, &record).await) }
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.keep_alive(mode != Mode::Close);
                    if mode == Mode::IdleTimeout {
                        builder
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(Duration::from_millis(50));
                    }
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            seen,
            closed,
            task,
        }
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        let mut conns: Vec<SocketAddr> = self.seen().iter().map(|s| s.conn).collect();
        conns.sort();
        conns.dedup();
        conns.len()
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// `/ws`: a websocket-style upgrade that echoes bytes; `/stream`: three chunks, 50 ms apart;
/// `/endless`: a chunk every 10 ms, forever; anything else: `200 ok`.
async fn respond(mut req: Request<Incoming>, peer: SocketAddr, record: &Mutex<Vec<Seen>>) -> Response<Body> {
    let upgrade = (req.uri().path() == "/ws").then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path().to_string();
    record.lock().unwrap().push(Seen {
        conn: peer,
        method: parts.method,
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    let chunks = |n: Option<usize>, every: Duration| {
        let stream = futures::stream::unfold(0usize, move |i| async move {
            if n.is_some_and(|n| i >= n) {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk {i}\n")))),
                i + 1,
            ))
        });
        BodyExt::boxed(StreamBody::new(stream))
    };
    match path.as_str() {
        "/ws" => {
            let on = upgrade.unwrap();
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.unwrap());
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "websocket")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        }
        "/stream" => Response::new(chunks(Some(3), Duration::from_millis(50))),
        "/endless" => Response::new(chunks(None, Duration::from_millis(10))),
        _ => Response::builder()
            .header("keep-alive", "timeout=5")
            .header("x-backend", "yes")
            .body(Full::new(Bytes::from_static(b"ok")).boxed())
            .unwrap(),
    }
}

/// The `Http` service `web` on `addrs`.
fn web(addrs: &[SocketAddr]) -> v1::Service {
    v1::Service {
        name: "web".into(),
        protocol: v1::Protocol::Http as i32,
        endpoints: endpoints(addrs),
        ..Default::default()
    }
}

/// A gateway with the `Http` service `web` on `addrs`.
async fn gateway(addrs: &[SocketAddr]) -> (Arc<Gateway>, SocketAddr) {
    common::gateway(web(addrs), Vec::new()).await
}

/// Reads from `stream` until `want` has arrived (or the stream ends); everything read.
async fn read_until(stream: &mut TcpStream, want: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("no data within 5 s")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn shutdown_completes_the_request_in_flight_and_closes_idle_connections() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_gw, addr, served) = common::gateway_until(web(&[backend.addr]), Vec::new(), async {
        let _ = stopped.await;
    })
    .await;
    // An idle keep-alive connection that has served one request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /web/ HTTP/1.1\r\nhost: gw\r\n\r\n").await.unwrap();
    assert!(read_until(&mut idle, "\r\n\r\nok").await.starts_with("HTTP/1.1 200"));
    // A response in flight: three chunks, 50 ms apart.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /web/stream HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut busy, "chunk 0").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    stop.send(()).unwrap();
    // The idle connection is closed, the busy one gets the rest of its response, then closes.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection stays open after shutdown")
        .unwrap();
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&rest));
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut tail))
        .await
        .expect("the busy connection stays open after its response")
        .unwrap();
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains("chunk 2") && tail.ends_with("0\r\n\r\n"), "{tail}");
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns once its connections have closed")
        .unwrap()
        .unwrap();
    // A new connection is refused: the listener is gone.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn forwards_the_rest_of_the_path_the_query_the_body_and_forwarding_headers() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (_gw, addr) = gateway(&[backend.addr]).await;
    let mut c = Client::connect(addr).await;

    let resp = c
        .send(
            Request::post("/web/a/%62%20c/./c/../d?x=1&y=%20")
                .header(header::CONNECTION, "x-hop")
                .header("x-hop", "secret")
                .header(header::TE, "trailers")
                .header("x-forwarded-for", "10.1.2.3")
                .header("micro-account-id", "forged")
                .header(header::CONTENT_TYPE, "text/plain"),
            "hello backend",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(headers["x-backend"], "yes");
    assert!(
        !headers.contains_key("keep-alive"),
        "hop-by-hop response header: {headers:?}"
    );

    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, http::Method::POST);
    assert_eq!(
        s.uri, "/a/b%20c/d?x=1&y=%20",
        "the rest of the path, cleaned, decoded and encoded canonically; the query as sent"
    );
    assert_eq!(s.body, "hello backend");
    assert_eq!(s.headers[header::HOST], backend.addr.to_string());
    assert_eq!(
        s.headers["x-forwarded-for"], "127.0.0.1",
        "a client that is no trusted proxy cannot forge where it comes from"
    );
    assert_eq!(s.headers["x-forwarded-host"], format!("gw.test:{}", addr.port()));
    assert_eq!(s.headers["x-forwarded-proto"], "http");
    assert_eq!(s.headers[header::CONTENT_TYPE], "text/plain");
    assert_eq!(s.headers["micro-namespace"], "micro");
    for gone in ["x-hop", "te", "micro-account-id"] {
        assert!(
            !s.headers.contains_key(gone),
            "{gone} reached the backend: {:?}",
            s.headers
        );
    }

    // A path that is only the service is the backend's root; a query alone is kept.
    assert_eq!(c.get("/web").await.0, StatusCode::OK);
    assert_eq!(c.get("/web/?q=1").await.0, StatusCode::OK);
    let uris: Vec<String> = backend.seen().iter().skip(1).map(|s| s.uri.clone()).collect();
    assert_eq!(uris, ["/", "/?q=1"]);
    backend.task.abort();
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (gw, addr) = gateway(&[backend.addr]).await;
    let mut c = Client::connect(addr).await;
    for _ in 0..20 {
        assert_eq!(c.get("/web/").await, (StatusCode::OK, Bytes::from_static(b"ok")));
    }
    assert_eq!(
        backend.connections(),
        1,
        "sequential requests share one backend connection"
    );

    // Concurrent requests need a connection each, and those are pooled in turn.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Client::connect(addr).await);
    }
    for _ in 0..5 {
        let calls = clients.iter_mut().map(|c| c.get("/web/stream"));
        for (status, body) in futures::future::join_all(calls).await {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, "chunk 0\nchunk 1\nchunk 2\n");
        }
    }
    assert!(backend.connections() <= 5, "{} connections", backend.connections());
    let pool = gw.routing.upstreams.get(&backend.addr.to_string());
    assert!(pool.h1.idle() >= 1 && pool.h1.idle() <= 4, "{} idle", pool.h1.idle());
    backend.task.abort();
}

#[tokio::test]
async fn a_backend_that_closes_connections_is_invisible_to_clients() {
    let backend = Backend::start(Mode::Close).await;
    let (gw, addr) = gateway(&[backend.addr]).await;
    let mut c = Client::connect(addr).await;
    for i in 0..30 {
        let (status, body) = c.get(&format!("/web/{i}")).await;
        assert_eq!((status, body.as_ref()), (StatusCode::OK, b"ok".as_ref()), "request {i}");
    }
    assert_eq!(backend.connections(), 30);
    // A connection the backend closed is never kept.
    let upstream = gw.routing.upstreams.get(&backend.addr.to_string());
    wait_until("the last closed connection left the pool", || upstream.h1.idle() == 0).await;
    // The next request gets a connection of its own, not one the backend closed.
    assert_eq!(c.get("/web/again").await.0, StatusCode::OK);
    assert_eq!(backend.connections(), 31, "a new connection for the next request");
    wait_until("that one left the pool too", || upstream.h1.idle() == 0).await;
    backend.task.abort();
}

#[tokio::test]
async fn an_unreachable_endpoint_is_skipped_for_requests_with_bodies_too() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (dead, _reserved) = dead_addr();
    let (gw, addr) = gateway(&[dead, backend.addr]).await;
    let mut c = Client::connect(addr).await;
    for i in 0..20 {
        let resp = c.send(Request::post(format!("/web/post-{i}")), "payload").await;
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 20, "every request reached the live endpoint once");
    assert!(seen.iter().all(|s| s.body == "payload"));
    assert!(gw.routing.upstreams.get(&dead.to_string()).ejected());

    // With no live endpoint left: 503 in the the gateway's error JSON.
    let (_gw, only_dead) = gateway(&[dead]).await;
    let mut c = Client::connect(only_dead).await;
    let (status, body) = c.get("/web/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], 503, "{json}");
    backend.task.abort();
}

#[tokio::test]
async fn an_abandoned_response_never_leaves_its_connection_in_the_pool() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (gw, addr) = gateway(&[backend.addr]).await;
    {
        let mut c = Client::connect(addr).await;
        let resp = c.send(Request::get("/web/endless"), "").await;
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "chunk 0\n");
        // The client goes away mid-body.
    }
    wait_until("the abandoned backend connection closed", || backend.closed() == 1).await;
    let upstream = gw.routing.upstreams.get(&backend.addr.to_string());
    assert_eq!(upstream.h1.idle(), 0, "a connection with a body in flight was pooled");
    let mut c = Client::connect(addr).await;
    assert_eq!(c.get("/web/").await.0, StatusCode::OK);
    assert_eq!(backend.connections(), 2);
    backend.task.abort();
}

#[tokio::test]
async fn websockets_are_upgraded_end_to_end() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (_gw, addr) = gateway(&[backend.addr]).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /web/ws HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed after {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"ping"[..], b"second message"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    let seen = backend.seen();
    assert_eq!(seen[0].headers[header::UPGRADE], "websocket");
    assert_eq!(seen[0].headers[header::CONNECTION], "upgrade");
    backend.task.abort();
}

#[tokio::test]
async fn idle_connections_the_backend_closed_are_replaced_unnoticed() {
    let backend = Backend::start(Mode::IdleTimeout).await;
    let (gw, addr) = gateway(&[backend.addr]).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Client::connect(addr).await);
    }
    let calls = clients.iter_mut().map(|c| c.get("/web/stream"));
    for (status, _) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK);
    }
    let upstream = gw.routing.upstreams.get(&backend.addr.to_string());
    assert_eq!(upstream.h1.idle(), 5);
    // The backend closes all five while they sit in the pool.
    wait_until("the backend closed its idle connections", || backend.closed() == 5).await;
    wait_until("the gateway saw them close", || upstream.h1.idle() == 0).await;
    for i in 0..10 {
        let (status, body) = clients[0].get(&format!("/web/after-{i}")).await;
        assert_eq!((status, body.as_ref()), (StatusCode::OK, b"ok".as_ref()), "request {i}");
    }
    assert_eq!(
        backend.connections(),
        6,
        "five closed ones were dropped, one new one serves"
    );
    backend.task.abort();
}

/// A backend that answers one request per connection and closes it without saying so.
async fn abrupt_backend() -> (
    SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabrupt").await;
                // Closed with no `Connection: close`.
            });
        }
    });
    (addr, accepted, task)
}

#[tokio::test]
async fn a_connection_closed_without_notice_is_not_used_again() {
    let (backend, accepted, task) = abrupt_backend().await;
    let (gw, addr) = gateway(&[backend]).await;
    let upstream = gw.routing.upstreams.get(&backend.to_string());
    let mut c = Client::connect(addr).await;
    for i in 0..20 {
        let (status, body) = c.get(&format!("/web/{i}")).await;
        assert_eq!(
            (status, body.as_ref()),
            (StatusCode::OK, b"abrupt".as_ref()),
            "request {i}"
        );
        // The close reaches the gateway before the next request, as between a real client's requests.
        wait_until("the gateway saw the close", || upstream.h1.idle() == 0).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 20);
    task.abort();
}

/// Issue 20, item 4: `Http` bodies are bounded like transcoded ones (docs/gateway.md: 413 above
/// `--max-body-bytes`), before anything reaches the backend.
#[tokio::test]
async fn bodies_over_the_limit_are_refused_before_the_backend() {
    let backend = Backend::start(Mode::KeepAlive).await;
    let (gw, addr) = gateway(&[backend.addr]).await;
    let mut c = Client::connect(addr).await;
    let too_big = vec![b'x'; gw.settings.max_body_bytes + 1];
    let (status, body) = c.fetch(Request::post("/web/upload"), too_big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body:?}");
    assert!(backend.seen().is_empty());
    let mut c = Client::connect(addr).await;
    let (status, _) = c.fetch(Request::post("/web/upload"), vec![b'x'; 1024]).await;
    assert_eq!(status, StatusCode::OK);
}
