//! The operator killed mid-reconcile (SIGKILL: its pod deleted with no grace period, so no graceful
//! shutdown and its Lease not released) converges after a restart: the new pod takes the Lease when
//! it expires and finishes the work.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use microplane_crds::MicroService;
use microplane_e2e::operator::Operator;
use microplane_e2e::{Cluster, create_tenant, install_crds, wait_for};
use serde_json::json;

#[tokio::test]
async fn operator_killed_mid_reconcile_converges_after_restart() {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    let before = Operator::ensure(&c).await.unwrap();

    let ns = create_tenant(&c, "crash", json!({}), Duration::from_secs(60))
        .await
        .unwrap();

    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    // Twenty pods of 50m CPU requested each fit the real node's two CPUs beside the other suites.
    let names: Vec<String> = (0..20).map(|i| format!("svc-{i}")).collect();
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
    // Kill it while it is working through them.
    let restarted = Operator::crash_and_restart(&c).await.unwrap();
    assert!(
        (restarted.pid, &restarted.pod) != (before.pid, &before.pod),
        "a new operator runs: {restarted:?}"
    );

    for name in &names {
        let ready = wait_for(
            &api,
            name,
            |m: Option<&MicroService>| {
                m.is_some_and(|m| {
                    m.status.as_ref().is_some_and(|s| {
                        s.observed_generation == m.metadata.generation
                            && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
            },
            Duration::from_secs(90),
        )
        .await;
        assert!(ready.is_ok(), "{name} never became Ready after the restart: {ready:?}");
    }
}
