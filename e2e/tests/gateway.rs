//! The gateway end to end: real processes (operator, gateway, helloworld pods run by the node agent),
//! routes from the operator's snapshot stream, endpoints from real EndpointSlices.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use microplane_crds::{CondType, MicroService};
use microplane_e2e::gateway::{Gateway, with_tenant};
use microplane_e2e::{Cluster, apply_helloworld, wait_for};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

async fn setup(prefix: &str) -> (Cluster, Gateway, microplane_e2e::TestTenant) {
    with_tenant(prefix, json!({}), T)
        .await
        .expect("the e2e tier needs the control plane")
}

fn condition(ms: &MicroService, type_: CondType) -> Option<(String, String)> {
    ms.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_routed(c: &Cluster, ns: &str, name: &str) -> MicroService {
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), ns);
    wait_for(
        &api,
        name,
        |m: Option<&MicroService>| {
            m.is_some_and(|m| {
                condition(m, CondType::Ready).is_some_and(|(s, _)| s == "True")
                    && condition(m, CondType::Routed).is_some_and(|(s, _)| s == "True")
            })
        },
        T,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn calls_through_the_gateway_by_post_and_get() {
    let (c, gw, ns) = setup("gw-call").await;
    let started = Instant::now();
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    let ms = wait_routed(&c, &ns, "helloworld").await;
    let st = ms.status.unwrap();
    assert!(
        st.endpoints.contains(&"Helloworld.Call".to_string()),
        "{:?}",
        st.endpoints
    );
    assert!(st.endpoints.contains(&"Helloworld.Stream".to_string()));
    assert!(
        st.url.as_deref().is_some_and(|u| u.ends_with("/helloworld")),
        "{:?}",
        st.url
    );

    // A new MicroService becomes callable with nothing restarted.
    let r = gw
        .wait_status(&ns, "POST", "/helloworld/call", r#"{"name":"John"}"#, 200, T)
        .await
        .unwrap();
    println!("apply → first call served: {:?}", started.elapsed());
    assert_eq!(r.json(), json!({"message": "Hello John"}));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = gw.call(&ns, "GET", "/helloworld/call?name=Jane", "");
    assert_eq!((r.status, r.json()), (200, json!({"message": "Hello Jane"})));
    // What `curl -d '{…}'` sends: JSON labelled as a form; and a real form.
    for (ct, body, who) in [
        ("application/x-www-form-urlencoded", r#"{"name":"Curl"}"#, "Curl"),
        ("application/x-www-form-urlencoded", "name=Form", "Form"),
    ] {
        let headers = [("Micro-Namespace", ns.as_str()), ("Content-Type", ct)];
        let r = microplane_e2e::gateway::request(&gw.addr, "POST", "/helloworld/call", &headers, body).unwrap();
        assert_eq!((r.status, r.json()), (200, json!({"message": format!("Hello {who}")})));
    }
    // One segment: Helloworld.Call.
    let r = gw.call(&ns, "POST", "/helloworld", r#"{"name":"Solo"}"#);
    assert_eq!((r.status, r.json()), (200, json!({"message": "Hello Solo"})));

    // Server streaming as newline-delimited JSON.
    let r = gw.call(&ns, "POST", "/helloworld/stream", r#"{"name":"S","count":3}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = r.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{}", r.body);

    // Errors are docs/gateway.md#errors JSON.
    let check = |r: microplane_e2e::gateway::Reply, code: u16, detail_has: &str| {
        assert_eq!(r.status, code, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["code"], json!(code), "{v}");
        assert!(v["detail"].as_str().unwrap_or("").contains(detail_has), "{v}");
        assert!(v["id"].is_string() && v["status"].is_string(), "{v}");
    };
    check(gw.call(&ns, "POST", "/helloworld/nope", "{}"), 404, "Helloworld.Nope");
    check(gw.call(&ns, "POST", "/nosuchservice/call", "{}"), 404, "nosuchservice");
    check(
        gw.call("no-such-tenant", "POST", "/helloworld/call", "{}"),
        404,
        "no-such-tenant",
    );
    check(gw.call(&ns, "POST", "/helloworld/call", r#"{"name": "#), 400, "");
    check(gw.call(&ns, "POST", "/helloworld/call", r#"{"nmae":"x"}"#), 400, "nmae");
    check(gw.call(&ns, "POST", "/helloworld/call", r#"{"name": 5}"#), 400, "name");
    check(gw.call(&ns, "GET", "/helloworld/call?nmae=x", ""), 400, "nmae");
    check(gw.call(&ns, "POST", "/helloworld%2Fcall", "{}"), 400, "");

    // Edge limits: a body over 4 MiB, a header block over 64 KiB.
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(5 << 20));
    check(gw.call(&ns, "POST", "/helloworld/call", &big), 413, "larger than");
    let huge = "h".repeat(70 << 10);
    let headers = [("Micro-Namespace", ns.as_str()), ("X-Huge", huge.as_str())];
    let r = microplane_e2e::gateway::request(&gw.addr, "POST", "/helloworld/call", &headers, "{}").unwrap();
    assert_eq!(r.status, 431, "{}", r.body);
    // CORS: a preflight is answered at once, and answers carry the headers; without a tenant policy
    // any origin may call, never with the browser's credentials (docs/gateway.md#cors).
    let headers = [("Micro-Namespace", ns.as_str()), ("Origin", "https://app.example")];
    let r = microplane_e2e::gateway::request(&gw.addr, "OPTIONS", "/helloworld/call", &headers, "").unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let r =
        microplane_e2e::gateway::request(&gw.addr, "POST", "/helloworld/call", &headers, r#"{"name":"C"}"#).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));

    // Requests are counted by tenant, service and code.
    let m = gw.metrics().unwrap();
    assert!(
        m.contains(&format!(
            r#"microplane_gateway_requests_total{{tenant="{ns}",service="helloworld",code="200"}}"#
        )),
        "{m}"
    );
}

#[tokio::test]
async fn scaling_to_three_spreads_requests_over_three_pods() {
    let (c, gw, ns) = setup("gw-scale").await;
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    wait_routed(&c, &ns, "helloworld").await;
    gw.wait_status(&ns, "POST", "/helloworld/call", r#"{"name":"a"}"#, 200, T)
        .await
        .unwrap();
    apply_helloworld(&c, &ns, "helloworld", 3).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    // Wait until the gateway has spread calls over three upstreams.
    let deadline = Instant::now() + T;
    loop {
        for _ in 0..30 {
            let r = gw.call(&ns, "POST", "/helloworld/call", r#"{"name":"b"}"#);
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for u in gw.upstreams_of(&ns).into_iter().rev().take(30) {
            *seen.entry(u).or_default() += 1;
        }
        if seen.len() == 3 && seen.values().all(|&n| n >= 3) {
            break;
        }
        assert!(Instant::now() < deadline, "last 30 calls went to {seen:?}");
        let running = pods.list(&ListParams::default()).await.unwrap().items.len();
        println!("pods: {running}, last 30 upstreams: {seen:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn deleting_a_pod_under_load_fails_no_request() {
    let (c, gw, ns) = setup("gw-load").await;
    apply_helloworld(&c, &ns, "helloworld", 2).await.unwrap();
    wait_routed(&c, &ns, "helloworld").await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    // Both endpoints serve before the load starts.
    let deadline = Instant::now() + T;
    loop {
        for _ in 0..20 {
            gw.call(&ns, "POST", "/helloworld/call", r#"{"name":"w"}"#);
        }
        let distinct: std::collections::BTreeSet<String> = gw.upstreams_of(&ns).into_iter().rev().take(20).collect();
        if distinct.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never saw two upstreams");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let gw = gw.clone();
        let ns = ns.to_string();
        let sent = sent.clone();
        tokio::task::spawn_blocking(move || {
            let until = Instant::now() + Duration::from_secs(8);
            let mut results: BTreeMap<u16, usize> = BTreeMap::new();
            let mut failures = Vec::new();
            while Instant::now() < until {
                let r = gw.call(&ns, "POST", "/helloworld/call", r#"{"name":"load"}"#);
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *results.entry(r.status).or_default() += 1;
                if r.status != 200 && failures.len() < 5 {
                    failures.push(format!("{} {}", r.status, r.body));
                }
            }
            (results, failures)
        })
    };
    // The pod goes once the load is under way (100 requests answered).
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        assert!(!load.is_finished(), "the load ended before 100 requests");
        tick.tick().await;
    }
    let victim = pods.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    let (results, failures) = load.await.unwrap();
    println!("results during the pod deletion: {results:?}");
    assert!(results.get(&200).copied().unwrap_or(0) > 50, "{results:?}");
    assert_eq!(results.len(), 1, "failed requests: {failures:?} of {results:?}");
}
