//! `Grpc` services through the whole data path: a gateway serving a snapshot on loopback, in front
//! of real HTTP/2 gRPC backends (tonic's server side with the dynamic codec, helloworld's proto).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Client, any_port, dead_addr, endpoints, wait_until};
use http::{Request, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use microplane_gateway::state::Gateway;
use microplane_gateway::transcode::{DynamicCodec, request_from_json};
use microplane_wire::sync::v1;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::{Value, json};
use tokio::net::TcpListener;
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

/// A gateway with the `Grpc` service `helloworld` on `addrs`.
async fn gateway(addrs: &[SocketAddr]) -> (Arc<Gateway>, SocketAddr) {
    let helloworld = v1::Service {
        name: "helloworld".into(),
        protocol: v1::Protocol::Grpc as i32,
        endpoints: endpoints(addrs),
        descriptors: "hw".into(),
        ..Default::default()
    };
    let descriptors = v1::Descriptors {
        key: "hw".into(),
        file_descriptor_set: descriptor_set().encode_to_vec(),
        services: vec!["helloworld.Helloworld".into()],
    };
    common::gateway(helloworld, vec![descriptors]).await
}

/// `method path` with a JSON body; the answer as text.
async fn request(c: &mut Client, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    let (status, body) = c.fetch(req, body.to_string()).await;
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn call(c: &mut Client, name: &str) -> (StatusCode, String) {
    request(c, "POST", "/helloworld/call", &json!({ "name": name }).to_string()).await
}

#[tokio::test]
async fn unary_streaming_and_errors_over_one_multiplexed_connection() {
    let backend = Backend::start(any_port(), "Hello").await;
    let (_gw, addr) = gateway(&[backend.addr]).await;
    let mut c = Client::connect(addr).await;

    assert_eq!(
        call(&mut c, "John").await,
        (StatusCode::OK, r#"{"message":"Hello John (micro)"}"#.to_string())
    );
    let (status, body) = request(&mut c, "GET", "/helloworld/call?name=Query", "").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"message":"Hello Query (micro)"}"#)
    );
    let (status, body) = request(&mut c, "GET", "/helloworld/stream?name=Bo&count=3", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "{\"message\":\"0 Bo\"}\n{\"message\":\"1 Bo\"}\n{\"message\":\"2 Bo\"}\n"
    );
    let (status, body) = call(&mut c, "fail").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["detail"], "nobody called fail", "{err}");

    // Many calls at once share the one connection.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(Client::connect(addr).await);
    }
    for round in 0..5 {
        let calls = clients.iter_mut().map(|c| call(c, "Many"));
        for (status, body) in futures::future::join_all(calls).await {
            assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        }
    }
    assert_eq!(backend.connections(), 1, "one HTTP/2 connection per endpoint");
    backend.task.abort();
}

#[tokio::test]
async fn an_unreachable_endpoint_is_skipped_and_a_restarted_backend_reconnected() {
    let (dead, _reserved) = dead_addr();
    let backend = Backend::start(any_port(), "Hello").await;
    let (gw, addr) = gateway(&[dead, backend.addr]).await;
    let mut c = Client::connect(addr).await;
    for i in 0..20 {
        let (status, body) = call(&mut c, &format!("n{i}")).await;
        assert_eq!(status, StatusCode::OK, "call {i}: {body}");
    }
    assert!(gw.routing.upstreams.get(&dead.to_string()).ejected());

    // The backend goes away (its connections close) and comes back on the same address.
    let at = backend.addr;
    backend.task.abort();
    let _ = backend.task.await;
    let channel = gw.routing.upstreams.get(&at.to_string()).grpc();
    wait_until("the gateway saw its connection close", || !channel.is_connected()).await;
    let (gw2, addr2) = gateway(&[at]).await;
    let mut c2 = Client::connect(addr2).await;
    let (status, _) = call(&mut c2, "nobody home").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(gw2.routing.upstreams.get(&at.to_string()).ejected());
    let again = Backend::start(at, "Welcome back").await;
    let (status, body) = call(&mut c, "Jo").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"message":"Welcome back Jo (micro)"}"#),
        "the first call after the restart is served on a new connection"
    );
    again.task.abort();
}
