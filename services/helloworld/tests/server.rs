//! Starts the real helloworld server on 127.0.0.1 (port 0) and calls it as the gateway and the
//! kubelet would: Call and Stream, gRPC health, server reflection, live config, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use helloworld::pb::helloworld_client::HelloworldClient;
use helloworld::pb::{CallRequest, StreamRequest};
use microplane_sdk::errors::MicroError;
use microplane_sdk::{Address, Options, Service};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    channel: Channel,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), microplane_sdk::Error>>,
}

impl Running {
    async fn start(config_dir: Option<&Path>, drain: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let mut options = Options::new(
            "helloworld",
            Address::Host {
                host: "127.0.0.1".into(),
                port: 0,
            },
        );
        options.config_dir = config_dir.map(Path::to_path_buf);
        let service = helloworld::service(Service::with_options(options).unwrap())
            .config_poll_interval(Duration::from_millis(50))
            .drain_delay(drain);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(service.serve_with_listener(listener, async {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .connect()
            .await
            .unwrap();
        Self { channel, stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        drop(self.channel);
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("stops in time")
            .unwrap()
            .unwrap();
    }
}

fn write_config(dir: &Path, greeting: &str) {
    std::fs::create_dir_all(dir.join("greeter")).unwrap();
    let document = serde_json::json!({"helloworld": {"greeting": greeting}});
    // Like the kubelet: write aside, then swap in, so a reader never sees half a file.
    std::fs::write(dir.join("greeter/config.json.tmp"), document.to_string()).unwrap();
    std::fs::rename(dir.join("greeter/config.json.tmp"), dir.join("greeter/config.json")).unwrap();
}

async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn call_and_stream() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "Hi");
    let server = Running::start(Some(dir.path()), Duration::ZERO).await;
    let mut client = HelloworldClient::new(server.channel.clone());

    let response = client.call(CallRequest { name: "Alice".into() }).await.unwrap();
    assert_eq!(response.into_inner().message, "Hi Alice");

    let refused = client.call(CallRequest { name: String::new() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let error = MicroError::from_status(&refused).expect("a Micro error in the message");
    assert_eq!(error, MicroError::new("helloworld.call", 400, "name is required"));

    let stream = client
        .stream(StreamRequest {
            name: "Bob".into(),
            count: 5,
        })
        .await
        .unwrap()
        .into_inner();
    let messages: Vec<String> = stream.map(|m| m.unwrap().message).collect().await;
    assert_eq!(messages, ["Hi Bob"; 5]);

    let empty = client
        .stream(StreamRequest {
            name: "Bob".into(),
            count: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.collect::<Vec<_>>().await.len(), 0);

    for count in [-1, 1001] {
        let refused = client
            .stream(StreamRequest {
                name: "Bob".into(),
                count,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{count}");
        assert_eq!(MicroError::from_status(&refused).unwrap().id, "helloworld.stream");
    }
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha;

    let server = Running::start(None, Duration::ZERO).await;
    assert_eq!(health(&server.channel, "").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        health(&server.channel, "helloworld.Helloworld").await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(
        health(&server.channel, "nope.Nope").await.unwrap_err().code(),
        Code::NotFound
    );

    // v1: list the services, then fetch the file that defines Helloworld.
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("helloworld.Helloworld".into())),
        },
    ];
    let mut responses = ServerReflectionClient::new(server.channel.clone())
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "helloworld.Helloworld",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a file descriptor");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.package(), "helloworld");
    let service = &file.service[0];
    assert_eq!(service.name(), "Helloworld");
    let methods: Vec<(&str, bool)> = service
        .method
        .iter()
        .map(|m| (m.name(), m.server_streaming()))
        .collect();
    assert_eq!(methods, [("Call", false), ("Stream", true)]);

    // v1alpha, which older tools (and grpcurl's fallback) use.
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    assert!(list.service.iter().any(|s| s.name == "helloworld.Helloworld"));
    server.stop().await;
}

#[tokio::test]
async fn follows_config_changes_without_restart() {
    let (warnings, _guard) = Warnings::capture();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "Hi");
    let server = Running::start(Some(dir.path()), Duration::ZERO).await;
    let mut client = HelloworldClient::new(server.channel.clone());
    let call = |client: &mut HelloworldClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .call(CallRequest { name: "Cy".into() })
                .await
                .unwrap()
                .into_inner()
                .message
        }
    };
    assert_eq!(call(&mut client).await, "Hi Cy");

    write_config(dir.path(), "Howdy");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if call(&mut client).await == "Howdy Cy" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new greeting never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken document keeps the last good one: once the service has read it (it says so in its
    // log), the old greeting is still served.
    assert!(warnings.lines().is_empty(), "{:?}", warnings.lines());
    std::fs::write(dir.path().join("greeter/config.json"), "{not json").unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !warnings
        .lines()
        .iter()
        .any(|l| l.contains("keeping the last good configuration"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken document was never read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(call(&mut client).await, "Howdy Cy");
    // And a good document after it is followed again.
    write_config(dir.path(), "Hey");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while call(&mut client).await != "Hey Cy" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the config was not followed after the broken one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// Warnings logged on this thread (a `#[tokio::test]` runs its tasks there) while the guard of
/// [`Warnings::capture`] lives: the evidence that the service has read what a test wrote.
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let warnings = Self::default();
        let guard = tracing::subscriber::set_default(warnings.clone());
        (warnings, guard)
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        *meta.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut line = Line(String::new());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn reports_not_serving_while_draining() {
    let server = Running::start(None, Duration::from_secs(2)).await;
    assert_eq!(
        health(&server.channel, "helloworld.Helloworld").await.unwrap(),
        ServingStatus::Serving
    );
    let mut watch = HealthClient::new(server.channel.clone())
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::Serving);

    server.stop.send(()).unwrap();
    let update = tokio::time::timeout(TIMEOUT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.status(), ServingStatus::NotServing);
    // Still answering during the drain delay, with the new status.
    assert_eq!(
        health(&server.channel, "helloworld.Helloworld").await.unwrap(),
        ServingStatus::NotServing
    );
    let mut client = HelloworldClient::new(server.channel.clone());
    assert!(client.call(CallRequest { name: "late".into() }).await.is_ok());
    drop(watch);
    drop(client);
    drop(server.channel);
    tokio::time::timeout(TIMEOUT, server.task)
        .await
        .expect("stops in time")
        .unwrap()
        .unwrap();
}
