//! The build node's Node object and its heartbeats: a Lease renewed every 10 s in
//! `kube-node-lease` and the `Ready` condition refreshed every 30 s, as a kubelet does.
//!
//! The Node is labelled [`BUILDER_LABEL`]`=`[`BUILDER_VALUE`] and tainted with the same key and
//! value (`NoSchedule`): the operator's build pods select that label and tolerate that taint
//! (operator flags `--build-node-selector` and `--build-toleration`), every other pod stays off.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Field manager of the agent.
pub const MANAGER: &str = "microplane.dev/nodeagent";
/// The label (and taint key) that marks the dev build node.
pub const BUILDER_LABEL: &str = "microplane.dev/builder";
/// Its value.
pub const BUILDER_VALUE: &str = "dev";
/// What the node's Ready condition says it is.
pub const READY_MESSAGE: &str = "microplane dev build node: runs only the operator's build pods \
    (clone, cargo or go build, image pushed to the in-cluster registry); other pods fail with NotABuildPod";

/// The Node's spec and metadata.
pub fn node(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            BUILDER_LABEL: BUILDER_VALUE,
        }},
        "spec": {"taints": [{"key": BUILDER_LABEL, "value": BUILDER_VALUE, "effect": "NoSchedule"}]},
    })
}

/// The Node's status at `now`.
pub fn node_status(name: &str, now: &str, version: &str) -> serde_json::Value {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "conditions": [
                cond("Ready", "True", "BuilderReady", READY_MESSAGE),
                cond("MemoryPressure", "False", "BuilderHasSufficientMemory", ""),
                cond("DiskPressure", "False", "BuilderHasNoDiskPressure", ""),
                cond("PIDPressure", "False", "BuilderHasSufficientPID", ""),
            ],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "microplane-nodeagent",
                "containerRuntimeVersion": "microplane-builder://0.1.0", "kubeletVersion": version, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    })
}

/// Registers the Node, then keeps its Lease and Ready condition fresh until the task is dropped.
pub async fn run(client: Client, name: String) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    nodes.patch(&name, &pp, &Patch::Apply(node(&name))).await?;
    let version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|_| "v1.37.1".into());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": MicroTime(now)},
        });
        if let Err(e) = leases.patch(&name, &pp, &Patch::Apply(&lease)).await {
            tracing::warn!(error = %e, "cannot renew the node lease");
        }
        if n.is_multiple_of(3) {
            let now = serde_json::to_value(Time(now)).unwrap_or_default();
            let status = node_status(&name, now.as_str().unwrap_or_default(), &version);
            if let Err(e) = nodes.patch_status(&name, &pp, &Patch::Apply(&status)).await {
                tracing::warn!(error = %e, "cannot update the node status");
            }
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_build_pods_are_meant_for_it() {
        let n: Node = serde_json::from_value(node("microplane-builder")).unwrap();
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["microplane.dev/builder"], "dev");
        assert_eq!(labels["kubernetes.io/hostname"], "microplane-builder");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        let taints = n.spec.unwrap().taints.unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!(
            (
                taints[0].key.as_str(),
                taints[0].value.as_deref(),
                taints[0].effect.as_str()
            ),
            ("microplane.dev/builder", Some("dev"), "NoSchedule")
        );
    }

    #[test]
    fn says_what_it_runs() {
        let s: Node = serde_json::from_value(node_status("b", "2026-01-01T00:00:00Z", "v1.37.1")).unwrap();
        let conditions = s.status.unwrap().conditions.unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        let message = ready.message.as_deref().unwrap();
        assert!(message.contains("runs only the operator's build pods"), "{message}");
        assert!(message.contains("NotABuildPod"), "{message}");
    }
}
