//! `Grpc` services through the whole data path: a gateway serving a snapshot on loopback, in front
//! of real HTTP/2 gRPC backends (tonic's server side with the dynamic codec, helloworld's proto).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use microplane_gateway::metrics::Metrics;
use microplane_gateway::server::{Gateway, Settings, serve};
use microplane_gateway::sync;
use microplane_gateway::transcode::{DynamicCodec, request_from_json};
use microplane_sync::v1;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Response, Status};

const HELLOWORLD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/helloworld/proto");

fn descriptor_set() -> prost_types::FileDescriptorSet {
    protox::compile(["helloworld.proto"], [HELLOWORLD]).unwrap()
}

fn message(name: &str) -> MessageDescriptor {
    DescriptorPool::from_file_descriptor_set(descriptor_set())
        .unwrap()
        .get_message_by_name(name)
        .unwrap()
}

fn reply(name: &str, body: Value) -> DynamicMessage {
    request_from_json(&message(name), body.to_string().as_bytes()).unwrap()
}

fn field(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name)
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A helloworld backend over h2c: `Call` greets (`name` "fail" → NotFound), `Stream` sends `count`
/// replies. Counts the connections it accepted.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(addr: SocketAddr, greeting: &'static str) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let req = req.map(tonic::body::Body::new);
                    Ok::<_, Infallible>(handle(req, greeting).await)
                });
                conns.spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn handle(req: Request<tonic::body::Body>, greeting: &'static str) -> http::Response<tonic::body::Body> {
    match req.uri().path() {
        "/helloworld.Helloworld/Call" => {
            let mut server = tonic::server::Grpc::new(DynamicCodec::new(message("helloworld.CallRequest")));
            let service = tower::service_fn(move |r: tonic::Request<DynamicMessage>| async move {
                let name = field(r.get_ref(), "name");
                if name == "fail" {
                    return Err(Status::not_found(
                        r#"{"id":"helloworld","code":404,"detail":"nobody called fail","status":"Not Found"}"#,
                    ));
                }
                let identity = r
                    .metadata()
                    .get("micro-namespace")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                Ok(Response::new(reply(
                    "helloworld.CallResponse",
                    json!({"message": format!("{greeting} {name} ({identity})")}),
                )))
            });
            server.unary(service, req).await
        }
        "/helloworld.Helloworld/Stream" => {
            let mut server = tonic::server::Grpc::new(DynamicCodec::new(message("helloworld.StreamRequest")));
            let service = tower::service_fn(|r: tonic::Request<DynamicMessage>| async move {
                let name = field(r.get_ref(), "name");
                let count = r.get_ref().get_field_by_name("count").unwrap().as_i64().unwrap();
                let replies: Vec<Result<DynamicMessage, Status>> = (0..count)
                    .map(|i| {
                        Ok(reply(
                            "helloworld.StreamResponse",
                            json!({"message": format!("{i} {name}")}),
                        ))
                    })
                    .collect();
                Ok::<_, Status>(Response::new(tokio_stream::iter(replies)))
            });
            server.server_streaming(service, req).await
        }
        _ => Status::unimplemented("no such method").into_http(),
    }
}

/// A gateway serving tenant `micro` (public) with the `Grpc` service `helloworld` on `endpoints`.
async fn gateway(endpoints: &[SocketAddr]) -> (Arc<Gateway>, SocketAddr) {
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
            name: "helloworld".into(),
            protocol: v1::Protocol::Grpc as i32,
            endpoints: endpoints
                .iter()
                .map(|a| v1::Endpoint {
                    address: a.to_string(),
                    ..Default::default()
                })
                .collect(),
            descriptors: "hw".into(),
        }],
        descriptors: vec![v1::Descriptors {
            key: "hw".into(),
            file_descriptor_set: descriptor_set().encode_to_vec(),
            services: vec!["helloworld.Helloworld".into()],
        }],
        ..Default::default()
    };
    assert_eq!(sync::apply(&gw, &wire), Ok(true));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(gw.clone(), listener, std::future::pending()));
    (gw, addr)
}

/// One kept-alive HTTP/1.1 client connection to the gateway.
struct Client(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self(tx)
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "gw.test")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.0.ready().await.unwrap();
        let resp = self.0.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn call(&mut self, name: &str) -> (StatusCode, String) {
        self.request("POST", "/helloworld/call", &json!({ "name": name }).to_string())
            .await
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn unary_streaming_and_errors_over_one_multiplexed_connection() {
    let backend = Backend::start(free_addr(), "Hello").await;
    let (_gw, addr) = gateway(&[backend.addr]).await;
    let mut c = Client::connect(addr).await;

    assert_eq!(
        c.call("John").await,
        (StatusCode::OK, r#"{"message":"Hello John (micro)"}"#.to_string())
    );
    let (status, body) = c.request("GET", "/helloworld/call?name=Query", "").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"message":"Hello Query (micro)"}"#)
    );
    let (status, body) = c.request("GET", "/helloworld/stream?name=Bo&count=3", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "{\"message\":\"0 Bo\"}\n{\"message\":\"1 Bo\"}\n{\"message\":\"2 Bo\"}\n"
    );
    let (status, body) = c.call("fail").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["detail"], "nobody called fail", "{err}");

    // Many calls at once share the one connection.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(Client::connect(addr).await);
    }
    for round in 0..5 {
        let calls = clients.iter_mut().map(|c| c.call("Many"));
        for (status, body) in futures::future::join_all(calls).await {
            assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        }
    }
    assert_eq!(backend.connections(), 1, "one HTTP/2 connection per endpoint");
    backend.task.abort();
}

#[tokio::test]
async fn an_unreachable_endpoint_is_skipped_and_a_restarted_backend_reconnected() {
    let dead = free_addr();
    let backend = Backend::start(free_addr(), "Hello").await;
    let (gw, addr) = gateway(&[dead, backend.addr]).await;
    let mut c = Client::connect(addr).await;
    for i in 0..20 {
        let (status, body) = c.call(&format!("n{i}")).await;
        assert_eq!(status, StatusCode::OK, "call {i}: {body}");
    }
    assert!(gw.upstreams.get(&dead.to_string()).ejected());

    // The backend goes away (its connections close) and comes back on the same address.
    let at = backend.addr;
    backend.task.abort();
    let _ = backend.task.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (gw2, addr2) = gateway(&[at]).await;
    let mut c2 = Client::connect(addr2).await;
    let (status, _) = c2.call("nobody home").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(gw2.upstreams.get(&at.to_string()).ejected());
    let again = Backend::start(at, "Welcome back").await;
    let (status, body) = c.call("Jo").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"message":"Welcome back Jo (micro)"}"#),
        "the first call after the restart is served on a new connection"
    );
    again.task.abort();
}
