//! The gateway keeps serving its last snapshot while the operator is away, and picks up what changed
//! when it returns. Its own suite: it stops the shared operator.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use microplane_e2e::gateway::Gateway;
use microplane_e2e::operator::{Operator, http_get};
use microplane_e2e::{Cluster, apply_helloworld, create_tenant, install_crds};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

/// Both tests stop the shared operator: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn serves_while_the_operator_is_away_and_catches_up_after() {
    let _one = SERIAL.lock().await;
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    let gw = Gateway::ensure(&c).await.unwrap();
    let ns = create_tenant(&c, "gw-away", json!({}), T).await.unwrap();
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    gw.wait_status(&ns, "POST", "/helloworld/call", r#"{"name":"before"}"#, 200, T)
        .await
        .unwrap();

    Operator::stop().await.unwrap();
    for i in 0..20 {
        let r = gw.call(&ns, "POST", "/helloworld/call", &format!(r#"{{"name":"away{i}"}}"#));
        assert_eq!(r.status, 200, "while the operator is away: {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A change made while it is away is served once it is back.
    apply_helloworld(&c, &ns, "second", 1).await.unwrap();
    // `second` runs helloworld, so its endpoint is Helloworld.Call: /second/helloworld/call.
    let r = gw.call(&ns, "POST", "/second/helloworld/call", r#"{"name":"x"}"#);
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("service second not found"), "{}", r.body);
    Operator::ensure(&c).await.unwrap();
    let r = gw
        .wait_status(&ns, "POST", "/second/helloworld/call", r#"{"name":"back"}"#, 200, T)
        .await
        .unwrap();
    assert_eq!(r.json(), json!({"message": "Hello back"}));
    let r = gw.call(&ns, "POST", "/helloworld/call", r#"{"name":"after"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A gateway whose sync stream stays down past `--sync-stale-seconds` (8 s in the e2e values) says
/// so on `/readyz` and leaves its Service, instead of serving a snapshot that ages forever; with the
/// operator back, it is ready and serving again.
#[tokio::test]
async fn a_gateway_long_without_its_sync_stream_turns_unready() {
    let _one = SERIAL.lock().await;
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    let gw = Gateway::ensure(&c).await.unwrap();
    let ns = create_tenant(&c, "gw-stale", json!({}), T).await.unwrap();
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    gw.wait_status(&ns, "POST", "/helloworld/call", r#"{"name":"before"}"#, 200, T)
        .await
        .unwrap();

    let stopped = std::time::Instant::now();
    Operator::stop().await.unwrap();
    let deadline = stopped + Duration::from_secs(60);
    let body = loop {
        let (status, body) = http_get(&gw.admin, "/readyz").unwrap();
        if status == 503 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("sync stream down"), "{body}");
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_secs(8),
        "unready only past the threshold, not after {after:?}"
    );

    Operator::ensure(&c).await.unwrap();
    let gw = Gateway::ensure(&c).await.unwrap();
    gw.wait_status(&ns, "POST", "/helloworld/call", r#"{"name":"back"}"#, 200, T)
        .await
        .unwrap();
}
