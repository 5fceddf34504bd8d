//! Issue 20, item 7: the sync stream carries every tenant's signing keys, so it is served over TLS
//! with the operator's own CA. A client trusting that CA gets snapshots; a cleartext client, a
//! client trusting another CA and a client dialling a name the certificate does not hold get
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use microplane_operator::metrics::SyncMetrics;
use microplane_operator::publish::server::{SyncService, serve};
use microplane_operator::publish::tls;
use microplane_wire::sync::v1::routing_sync_client::RoutingSyncClient;
use microplane_wire::sync::v1::{GatewayMessage, Hello, Snapshot, gateway_message};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const TOKEN: &str = "sync-test-token";

async fn server(material: Option<tls::Material>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let snapshot = Snapshot {
        version: 7,
        source: "tls-test".into(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(Some(Arc::new(snapshot)));
    tokio::spawn(async move {
        let service = SyncService::new(rx, TOKEN.into(), SyncMetrics::default());
        let _keep = tx;
        serve(addr, service, material.as_ref(), std::future::pending())
            .await
            .unwrap();
    });
    // Listening once a connection is accepted; the server binds in its task.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync server never listened on {addr}"
        );
        tick.tick().await;
    }
    addr
}

/// The first snapshot a gateway gets from `endpoint`, or why it got none.
async fn first_snapshot(endpoint: Endpoint) -> Result<u64, String> {
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let mut client = RoutingSyncClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", token.clone());
        Ok(req)
    });
    let hello = GatewayMessage {
        kind: Some(gateway_message::Kind::Hello(Hello {
            gateway: "test".into(),
            version: 0,
        })),
    };
    let mut stream = client
        .watch(tokio_stream::iter(vec![hello]))
        .await
        .map_err(|e| format!("watch: {e:?}"))?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .map_err(|_| "no snapshot in time".to_string())?
        .map_err(|e| format!("stream: {e:?}"))?
        .ok_or("stream ended")?;
    Ok(first.version)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// Dials the server at `addr` over TLS, trusting `ca` and expecting the name `host`.
fn tls(addr: SocketAddr, host: &str, ca: &str) -> Endpoint {
    Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(host),
        )
        .unwrap()
}

#[tokio::test]
async fn the_sync_stream_is_served_over_tls_to_clients_trusting_the_operator_ca() {
    let names = vec!["localhost".to_string()];
    let material = tls::issue(None, &names, now()).unwrap();
    let (ca, ca_key) = (material.ca_cert.clone(), material.ca_key.clone());
    let addr = server(Some(material)).await;
    assert_eq!(first_snapshot(tls(addr, "localhost", &ca)).await, Ok(7));

    // Cleartext h2c, as gateways dialled before: nothing.
    let cleartext = Endpoint::from_shared(format!("http://127.0.0.1:{}", addr.port())).unwrap();
    assert!(first_snapshot(cleartext).await.is_err());

    // Another CA (say, another cluster's operator): refused by the client.
    let other = tls::issue(None, &names, now()).unwrap();
    assert!(first_snapshot(tls(addr, "localhost", &other.ca_cert)).await.is_err());

    // A serving certificate issued again under the same CA (new names, or close to expiry): the
    // gateways' ca.crt still verifies it.
    let renewed = tls::issue(Some((&ca, &ca_key)), &names, now()).unwrap();
    assert_eq!(renewed.ca_cert, ca);
    let renewed_addr = server(Some(renewed)).await;
    assert_eq!(first_snapshot(tls(renewed_addr, "localhost", &ca)).await, Ok(7));

    // A name the certificate does not hold.
    assert!(
        first_snapshot(tls(addr, "microplane-operator.elsewhere.svc", &ca))
            .await
            .is_err()
    );
}
