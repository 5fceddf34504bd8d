//! Graceful shutdown, in process: after the shutdown signal the gateway is not ready at once, keeps
//! serving new and open connections for the shutdown delay, then closes the listener, lets the
//! request in flight finish (with `Connection: close`) and returns.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Client, endpoints};
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use microplane_gateway::health::{Health, Readiness};
use microplane_gateway::server::{Drain, serve_graceful};
use microplane_gateway::state::Gateway;
use microplane_wire::sync::v1;
use tokio::net::TcpListener;

/// A backend answering requests whose path has `slow` after `delay`, others at once.
async fn slow_backend(delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    if req.uri().path().contains("slow") {
                        tokio::time::sleep(delay).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"slow ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn gateway(backend: SocketAddr) -> Arc<Gateway> {
    common::gateway_state(
        v1::Service {
            name: "web".into(),
            protocol: v1::Protocol::Http as i32,
            endpoints: endpoints(&[backend]),
            ..Default::default()
        },
        vec![],
    )
}

#[tokio::test]
async fn shutdown_flips_readiness_serves_through_the_delay_and_drains_in_flight_requests() {
    let backend = slow_backend(Duration::from_millis(900)).await;
    let gw = gateway(backend);
    let health = Arc::new(Health::new(Duration::from_secs(30)));
    health.connected();
    health.snapshot_applied();
    assert_eq!(health.readiness(), Readiness::Ready);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drain = Drain {
        delay: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
    };
    let served = tokio::spawn(serve_graceful(
        gw,
        listener,
        async {
            let _ = stop_rx.await;
        },
        drain,
        Some(health.clone()),
    ));

    // A kept-alive connection, opened before the signal.
    let mut early = Client::connect(addr).await;
    let (status, _) = early.get("/web/").await;
    assert_eq!(status, StatusCode::OK);

    // A request in flight when the signal arrives.
    let in_flight = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let resp = c.send(Request::get("/web/slow"), Bytes::new()).await;
        let status = resp.status();
        let close = resp.headers().get(header::CONNECTION).cloned();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, body, close)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    stop_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(health.readiness(), Readiness::ShuttingDown, "not ready at once");

    // During the delay: a new connection and the open one are still served.
    let (status, _) = Client::connect(addr).await.get("/web/").await;
    assert_eq!(status, StatusCode::OK, "new connections are served during the delay");
    let (status, _) = early.get("/web/").await;
    assert_eq!(status, StatusCode::OK, "open connections are served during the delay");

    // The request in flight completes, and the server returns once it has.
    let (status, body, close) = in_flight.await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"slow ok"[..]));
    assert_eq!(
        close.as_ref().map(|v| v.to_str().unwrap()),
        Some("close"),
        "answered after the delay: the connection is closed"
    );
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("drained within the timeout")
        .unwrap()
        .unwrap();
    assert!(signalled.elapsed() >= drain.delay, "served for the whole delay");

    // After the drain the listener is closed.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn the_drain_timeout_bounds_the_wait() {
    let backend = slow_backend(Duration::from_secs(30)).await;
    let gw = gateway(backend);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve_graceful(
        gw,
        listener,
        async {
            let _ = stop_rx.await;
        },
        Drain {
            delay: Duration::ZERO,
            timeout: Duration::from_millis(300),
        },
        None,
    ));
    tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let _ = c.send(Request::get("/web/slow-hang"), Bytes::new()).await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(3), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Issue 20, item 4: an HTTP/2 connection answers keep-alive pings forever, so an idle one was never
/// closed and held its slot of `--max-connections` and its memory. One on which no request started
/// for the idle timeout is closed (GOAWAY); one in use stays open.
#[tokio::test]
async fn idle_http2_connections_are_closed_and_busy_ones_kept() {
    use microplane_gateway::metrics::Metrics;
    use microplane_gateway::state::Settings;

    let idle = Duration::from_millis(400);
    let gw = Arc::new(Gateway::new(
        Settings {
            access_log: false,
            idle_timeout: idle,
            ..Settings::default()
        },
        Metrics::new(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(microplane_gateway::server::serve(gw, listener, std::future::pending()));

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let started = Instant::now();
    // Busy: a request every 150 ms for three idle timeouts keeps it open.
    while started.elapsed() < idle * 3 {
        let req = Request::get(format!("http://{addr}/helloworld/call"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.expect("the busy connection stays open");
        assert_eq!(
            resp.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "no snapshot: 503, but answered"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(!conn.is_finished());
    // Idle: closed by the gateway within about one more timeout.
    let closed = tokio::time::timeout(idle * 4, conn).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection was not closed");
}
