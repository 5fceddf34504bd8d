//! The operator killed mid-reconcile (SIGKILL: its pod deleted with no grace period, so no graceful
//! shutdown and its Lease not released) converges after a restart: the new pod takes the Lease when
//! it expires and finishes the work. The test records what was unfinished when the operator died
//! and fails if nothing was: a kill after everything converged proves nothing about recovery.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use microplane_crds::{CondType, MicroService};
use microplane_e2e::operator::Operator;
use microplane_e2e::{Cluster, create_tenant, install_crds, wait_for};
use serde_json::json;

/// How many MicroServices the operator is working through when it dies. Twenty pods of 50m CPU
/// requested each fit the real node's two CPUs beside the other suites.
const COUNT: usize = 20;

fn ready_now(m: &MicroService) -> bool {
    m.status.as_ref().is_some_and(|s| {
        s.observed_generation == m.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == CondType::Ready && c.status == "True")
    })
}

/// Whether the operator has reconciled `m` at least once (its status observed this generation).
fn seen(m: &MicroService) -> bool {
    m.status
        .as_ref()
        .is_some_and(|s| s.observed_generation.is_some() && s.observed_generation == m.metadata.generation)
}

/// (reconciled at least once, Ready) of the tenant's MicroServices, by name.
async fn progress(api: &Api<MicroService>) -> (Vec<String>, Vec<String>) {
    let all = api.list(&ListParams::default()).await.unwrap().items;
    let name = |m: &MicroService| m.metadata.name.clone().unwrap_or_default();
    (
        all.iter().filter(|m| seen(m)).map(name).collect(),
        all.iter().filter(|m| ready_now(m)).map(name).collect(),
    )
}

#[tokio::test]
async fn operator_killed_mid_reconcile_converges_after_restart() {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    Operator::ensure(&c).await.unwrap();

    let ns = create_tenant(&c, "crash", json!({}), Duration::from_secs(60))
        .await
        .unwrap();

    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    let names: Vec<String> = (0..COUNT).map(|i| format!("svc-{i}")).collect();
    for name in &names {
        let ms: MicroService = serde_json::from_value(json!({
            "apiVersion": "microplane.dev/v1alpha1", "kind": "MicroService", "metadata": {"name": name},
            "spec": {"image": microplane_e2e::node::helloworld("1").unwrap(), "replicas": 1}
        }))
        .unwrap();
        api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&ms))
            .await
            .unwrap();
    }
    // Kill it while it is working through them: once it has reconciled one of them, and before
    // they are all Ready (their pods take a second or more each to start).
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress(&api).await.0.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the operator never started on the MicroServices"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Operator::crash(&c).await.unwrap();
    // What the dead operator left: it can do nothing more, and its successor cannot lead before
    // the Lease it held expires, so this is (a superset of) what was unfinished at the kill.
    let (reconciled, ready) = progress(&api).await;
    // The Deployments of what was done, as the dead operator left them.
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let mut done = Vec::new();
    for name in &ready {
        let d = deployments.get(name).await.unwrap();
        done.push((name.clone(), d.metadata.generation));
    }
    let unfinished: Vec<&String> = names.iter().filter(|n| !ready.contains(n)).collect();
    println!(
        "killed {:?}: {} of {COUNT} reconciled at least once, {} Ready, unfinished: {unfinished:?}",
        killed.pod.as_ref().map_or(killed.pid.to_string(), Clone::clone),
        reconciled.len(),
        ready.len()
    );
    assert!(
        !unfinished.is_empty(),
        "every MicroService was already Ready when the operator died: the restart proves nothing"
    );

    let restarted = Operator::after_crash(&c, &killed).await.unwrap();
    println!(
        "restarted: {}",
        restarted.pod.as_ref().map_or(restarted.pid.to_string(), Clone::clone)
    );

    for name in unfinished {
        let ready = wait_for(
            &api,
            name,
            |m: Option<&MicroService>| m.is_some_and(ready_now),
            Duration::from_secs(90),
        )
        .await;
        assert!(ready.is_ok(), "{name} never became Ready after the restart: {ready:?}");
    }
    // And nothing that was done is undone: the successor leaves their Deployments as they were (no
    // new rollout), and they are Ready. Ready as of now, not as of the kill: a readiness probe of
    // one second may miss under the start of twenty pods on two CPUs, and the status says so
    // until the pod answers again.
    for (name, generation) in &done {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(
            &d.metadata.generation, generation,
            "the restarted operator changed {name}'s Deployment: {:?}",
            d.spec
        );
        let now = api.get(name).await.unwrap();
        if !ready_now(&now) {
            println!(
                "{name} is not Ready after the restart; waiting: {:?}",
                now.status.map(|s| s.conditions)
            );
        }
        let ready = wait_for(
            &api,
            name,
            |m: Option<&MicroService>| m.is_some_and(ready_now),
            Duration::from_secs(60),
        )
        .await;
        assert!(
            ready.is_ok(),
            "{name} is no longer Ready: {:?}",
            api.get(name).await.ok().and_then(|m| m.status)
        );
    }
}
