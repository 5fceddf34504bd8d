//! What the data-path tests share: a gateway serving one service of tenant `micro` (public) on
//! loopback, a kept-alive HTTP/1.1 client of it, and waiting on a condition.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use microplane_gateway::metrics::Metrics;
use microplane_gateway::server::serve;
use microplane_gateway::state::{Gateway, Settings};
use microplane_gateway::sync;
use microplane_wire::sync::v1;
use tokio::net::{TcpListener, TcpStream};

/// A gateway serving tenant `micro` (the default, with a public rule) and its one `service`.
pub async fn gateway(service: v1::Service, descriptors: Vec<v1::Descriptors>) -> (Arc<Gateway>, SocketAddr) {
    let (gw, addr, _served) = gateway_until(service, descriptors, std::future::pending()).await;
    (gw, addr)
}

/// A gateway (not serving) holding a snapshot of tenant `micro` (public) and its one `service`.
pub fn gateway_state(service: v1::Service, descriptors: Vec<v1::Descriptors>) -> Arc<Gateway> {
    let gw = Arc::new(Gateway::new(
        Settings {
            access_log: false,
            ..Settings::default()
        },
        Metrics::new(),
    ));
    let wire = v1::Snapshot {
        version: 1,
        source: "test".into(),
        tenants: vec![v1::Tenant {
            name: "micro".into(),
            rules: vec![v1::Rule {
                id: "default".into(),
                r#type: "*".into(),
                name: "*".into(),
                endpoint: "*".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        services: vec![v1::Service {
            tenant: "micro".into(),
            ..service
        }],
        descriptors,
        ..Default::default()
    };
    assert_eq!(sync::apply(&gw, &wire), Ok(true));
    gw
}

/// [`gateway`], serving until `shutdown`; the handle ends when `serve` returns.
pub async fn gateway_until(
    service: v1::Service,
    descriptors: Vec<v1::Descriptors>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Arc<Gateway>, SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let gw = gateway_state(service, descriptors);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(serve(gw.clone(), listener, shutdown));
    (gw, addr, served)
}

/// Snapshot endpoints at `addrs`.
pub fn endpoints(addrs: &[SocketAddr]) -> Vec<v1::Endpoint> {
    addrs
        .iter()
        .map(|a| v1::Endpoint {
            address: a.to_string(),
            ..Default::default()
        })
        .collect()
}

/// A loopback address that refuses connections, reserved (bound, never listening) while the
/// returned socket lives, so that no other test's listener can take its port.
pub fn dead_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

/// Any free loopback port, for a listener.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Waits (up to 5 s) until `done` holds.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One kept-alive HTTP/1.1 client connection to the gateway; requests carry `Host: gw.test:<port>`.
pub struct Client {
    tx: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub addr: SocketAddr,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { tx, addr }
    }

    pub async fn send(&mut self, req: http::request::Builder, body: impl Into<Bytes>) -> Response<Incoming> {
        let req = req
            .header(header::HOST, format!("gw.test:{}", self.addr.port()))
            .body(Full::new(body.into()))
            .unwrap();
        self.tx.ready().await.unwrap();
        self.tx.send_request(req).await.unwrap()
    }

    /// `method path` with `body`, the whole answer.
    pub async fn fetch(&mut self, req: http::request::Builder, body: impl Into<Bytes>) -> (StatusCode, Bytes) {
        let resp = self.send(req, body).await;
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    pub async fn get(&mut self, path: &str) -> (StatusCode, Bytes) {
        self.fetch(Request::get(path), Bytes::new()).await
    }
}
