//! The chart's lifecycle as a platform team lives it, on the real node: two operators and two
//! gateways Ready; `helm upgrade` to new operator and gateway images while a client calls at a steady
//! rate (no call may fail, leadership moves within 15 s); the CRDs upgraded the documented way;
//! `helm uninstall` removes everything the release created (the CRDs stay); installed again for
//! whatever runs next. `make test-e2e` runs this suite after all others, since it takes the shared
//! release away for a moment.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use microplane_e2e::gateway::{self, Gateway};
use microplane_e2e::operator::{self, NAMESPACE, chart};
use microplane_e2e::{Cluster, apply_helloworld, create_tenant, install_crds, repo_root};
use serde_json::json;

const T: Duration = Duration::from_secs(180);
/// How often the Lease and the pods are sampled during the upgrade.
const SAMPLE: Duration = Duration::from_millis(100);
const INSTANCE: &str = "app.kubernetes.io/instance=microplane";

fn e2e_values() -> String {
    repo_root().join("e2e/values/e2e.yaml").display().to_string()
}

/// The release with two operators and two gateways, images at `tag`.
fn install_two_of_each(tag: &str) {
    let values = e2e_values();
    let operator_tag = format!("operator.image.tag={tag}");
    let gateway_tag = format!("gateway.image.tag={tag}");
    chart::install(&[
        "-f",
        &values,
        "--set",
        "operator.replicas=2",
        "--set",
        "gateway.replicas=2",
        "--set",
        &operator_tag,
        "--set",
        &gateway_tag,
    ])
    .unwrap();
}

/// What one client saw: calls sent, failures (status and body), latencies.
#[derive(Default)]
struct Load {
    sent: u32,
    failures: Vec<String>,
    latencies: Vec<Duration>,
}

impl Load {
    fn p99(&self) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get((l.len() * 99 / 100).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Calls `/helloworld/call` every `period` (a new connection each, as many clients do) until `stop`.
fn steady_load(gw: Gateway, tenant: String, period: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Load> {
    std::thread::spawn(move || {
        let mut load = Load::default();
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let r = gw.call(
                &tenant,
                "POST",
                "/helloworld/call",
                &format!(r#"{{"name":"n{}"}}"#, load.sent),
            );
            load.latencies.push(started.elapsed());
            load.sent += 1;
            if r.status != 200 {
                load.failures.push(format!("{}: {}", r.status, r.body));
            }
            next += period;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        load
    })
}

/// Samples the Lease holder and the operator pods being deleted until `stop`; returns the longest
/// time from a holder's pod starting to terminate to another pod holding the Lease.
async fn watch_handover(c: Cluster, stop: Arc<AtomicBool>) -> (Vec<String>, Duration) {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NAMESPACE);
    let mut holders: Vec<String> = Vec::new();
    let mut terminating_since: Option<(String, Instant)> = None;
    let mut longest = Duration::ZERO;
    let mut tick = tokio::time::interval(SAMPLE);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let Ok(Some(holder)) = chart::leader(&c).await else {
            continue;
        };
        if holders.last() != Some(&holder) {
            if let Some((old, since)) = terminating_since.take()
                && old != holder
            {
                longest = longest.max(since.elapsed());
            } else if let Some(old) = holders.last() {
                // The old holder began terminating and handed over within one sample: count the
                // sample period, an upper bound.
                let gone = pods
                    .get_opt(old)
                    .await
                    .ok()
                    .map(|p| p.is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
                if gone == Some(true) {
                    longest = longest.max(SAMPLE);
                }
            }
            holders.push(holder.clone());
        }
        if terminating_since.is_none()
            && let Ok(Some(p)) = pods.get_opt(&holder).await
            && p.metadata.deletion_timestamp.is_some()
        {
            terminating_since = Some((holder.clone(), Instant::now()));
        }
    }
    if let Some((old, since)) = terminating_since {
        panic!("the Lease stayed with terminating pod {old} for {:?}", since.elapsed());
    }
    (holders, longest)
}

#[tokio::test]
async fn install_upgrade_under_load_crds_and_uninstall() {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();

    // Install → everything Ready: two operators (one leads), two gateways.
    let started = Instant::now();
    install_two_of_each("0.1.0");
    let gw = Gateway::ensure(&c).await.unwrap();
    operator::Operator::ensure(&c).await.unwrap();
    eprintln!("install → all Ready: {:?}", started.elapsed());
    assert_eq!(gw.admins.len(), 2, "two gateways: {:?}", gw.admins);
    let tenant = create_tenant(&c, "life", json!({}), T).await.unwrap();
    apply_helloworld(&c, &tenant, "helloworld", 2).await.unwrap();
    gw.wait_status(&tenant, "POST", "/helloworld/call", r#"{"name":"before"}"#, 200, T)
        .await
        .unwrap();

    // New images: the same content under a new tag on the node (no registry holds a second build),
    // so the pod templates change and both Deployments roll.
    for image in ["microplane-operator", "microplane-gateway"] {
        let from = format!("ghcr.io/microplane-dev/{image}:0.1.0");
        let to = format!("ghcr.io/microplane-dev/{image}:0.1.0-next");
        let _ = microplane_e2e::node::exec(&["ctr", "-n", "k8s.io", "images", "rm", &to]);
        microplane_e2e::node::exec(&["ctr", "-n", "k8s.io", "images", "tag", &from, &to]).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(gw.clone(), tenant.to_string(), Duration::from_millis(50), stop.clone());
    let watcher = tokio::spawn(watch_handover(c.clone(), stop.clone()));
    // Some calls before the upgrade starts, and some after it has finished.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let upgrade_started = Instant::now();
    tokio::task::spawn_blocking(|| install_two_of_each("0.1.0-next"))
        .await
        .unwrap();
    let upgrade_took = upgrade_started.elapsed();
    let op = operator::Operator::ensure(&c).await.unwrap();
    // The load runs until every old pod has drained and gone, and a second beyond.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NAMESPACE);
    let deadline = Instant::now() + T;
    loop {
        let all = pods.list(&ListParams::default().labels(INSTANCE)).await.unwrap().items;
        if all.len() == 4 && all.iter().all(|p| p.metadata.deletion_timestamp.is_none()) {
            break;
        }
        assert!(Instant::now() < deadline, "old pods still there: {}", all.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = upgrade_started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let load = load.join().unwrap();
    let (holders, handover) = watcher.await.unwrap();
    eprintln!(
        "upgrade under load (20 calls/s): helm upgrade --wait {upgrade_took:?}, old pods gone after {drained:?}; {} calls sent, {} failed, p99 {:?}; Lease holders {holders:?}, longest hand-over {handover:?}",
        load.sent,
        load.failures.len(),
        load.p99()
    );
    assert!(load.sent > 50, "the load ran: {} calls", load.sent);
    assert!(
        load.failures.is_empty(),
        "{} of {} calls failed during the upgrade: {:?}",
        load.failures.len(),
        load.sent,
        &load.failures[..load.failures.len().min(5)]
    );
    assert!(holders.len() >= 2, "leadership moved to a new pod: {holders:?}");
    assert!(handover < Duration::from_secs(15), "hand-over took {handover:?}");
    assert_ne!(
        op.pod.as_deref(),
        holders.first().map(String::as_str),
        "a new pod leads"
    );
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), NAMESPACE);
    for name in [operator::DEPLOYMENT, gateway::DEPLOYMENT] {
        let d = deps.get(name).await.unwrap();
        let image = d
            .spec
            .template
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image);
        assert!(
            image.is_some_and(|i| i.ends_with(":0.1.0-next")),
            "{name} runs the new image"
        );
    }

    // CRDs: Helm never upgrades crds/, so the documented command applies them; applying the
    // chart's CRDs over the installed ones succeeds and the API keeps serving the objects.
    let crds_dir = repo_root().join("charts/microplane/crds");
    let (ok, out, err) = c
        .kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=microplane.dev/install",
                "-f",
                &crds_dir.display().to_string(),
            ],
            None,
        )
        .unwrap();
    assert!(ok, "CRD upgrade: {out}{err}");
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    for crd in [
        "microservices.microplane.dev",
        "tenants.microplane.dev",
        "configs.microplane.dev",
        "authrules.microplane.dev",
    ] {
        microplane_e2e::wait_for(&crds, crd, kube::runtime::conditions::is_crd_established(), T)
            .await
            .unwrap();
    }
    gw.wait_status(&tenant, "POST", "/helloworld/call", r#"{"name":"crds"}"#, 200, T)
        .await
        .unwrap();

    // Uninstall: nothing the release made is left (namespaced or cluster-wide); the CRDs and the
    // objects of the API stay.
    let (ok, out, err) = c
        .kubectl(&["api-resources", "--verbs=list,delete", "-o", "name"], None)
        .unwrap();
    assert!(ok, "{err}");
    let kinds: Vec<String> = out
        .lines()
        .filter(|k| !k.starts_with("events") && !k.contains("microplane.dev") && !k.starts_with("componentstatuses"))
        .map(str::to_string)
        .collect();
    let made = |c: &Cluster| -> Vec<String> {
        let (_, out, _) = c
            .kubectl(&["get", &kinds.join(","), "-A", "-l", INSTANCE, "-o", "name"], None)
            .unwrap();
        out.lines().map(str::to_string).collect()
    };
    let before = made(&c);
    assert!(
        before.iter().any(|o| o.starts_with("deployment.apps/"))
            && before.iter().any(|o| o.starts_with("clusterrole.")),
        "the release's objects carry {INSTANCE}: {before:?}"
    );
    let state = std::env::var("MICROPLANE_STATE").unwrap();
    let helm = std::process::Command::new(repo_root().join("e2e/scripts/helm.sh"))
        .args([
            "uninstall",
            "microplane",
            "--namespace",
            NAMESPACE,
            "--wait",
            "--timeout",
            "3m",
        ])
        .env("MICROPLANE_STATE", &state)
        .output()
        .unwrap();
    assert!(
        helm.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&helm.stderr)
    );
    let deadline = Instant::now() + T;
    loop {
        let left = made(&c);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left after helm uninstall: {left:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for crd in ["microservices.microplane.dev", "tenants.microplane.dev"] {
        assert!(
            crds.get_opt(crd).await.unwrap().is_some(),
            "{crd} stays after uninstall"
        );
    }
    assert!(
        pods.list(&ListParams::default().labels(INSTANCE))
            .await
            .unwrap()
            .items
            .is_empty(),
        "no pod of the release is left"
    );

    // Installed again, as the e2e tier had it, and serving the tenant it never lost.
    chart::install(&["-f", &e2e_values()]).unwrap();
    let gw = Gateway::ensure(&c).await.unwrap();
    gw.wait_status(&tenant, "POST", "/helloworld/call", r#"{"name":"again"}"#, 200, T)
        .await
        .unwrap();
}
