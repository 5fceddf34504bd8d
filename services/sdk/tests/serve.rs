//! The SDK server on its own (no service of its own): health, reflection, and a shutdown that
//! does not wait forever for a client that keeps a stream open.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use microplane_sdk::{Address, Options, Service};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn open_streams_do_not_hold_shutdown_forever() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let options = Options::new(
        "bare",
        Address::Host {
            host: "127.0.0.1".into(),
            port: 0,
        },
    );
    let service = Service::with_options(options)
        .unwrap()
        .shutdown_timeout(Duration::from_millis(300));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(service.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));

    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let check = health.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(check.into_inner().status(), ServingStatus::Serving);
    // A watcher that never hangs up: graceful shutdown would wait for it forever.
    let mut watch = health.watch(HealthCheckRequest::default()).await.unwrap().into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let begun = Instant::now();
    stop.send(()).unwrap();
    let update = tokio::time::timeout(TIMEOUT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.status(), ServingStatus::NotServing);
    tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("gave up waiting in time")
        .unwrap()
        .unwrap();
    assert!(
        begun.elapsed() >= Duration::from_millis(300),
        "waited for the shutdown timeout first"
    );
}

#[tokio::test]
async fn invalid_descriptors_fail_at_start() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = Options::new(
        "bad",
        Address::Host {
            host: "127.0.0.1".into(),
            port: 0,
        },
    );
    let service = Service::with_options(options)
        .unwrap()
        .file_descriptor_set(b"\xff\xff not a descriptor set");
    let err = service
        .serve_with_listener(listener, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.category(), "reflection", "{err}");
}
