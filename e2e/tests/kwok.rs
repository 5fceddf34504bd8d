//! kwok on the real control plane: a plain Deployment scheduled to kwok's fake Nodes becomes
//! Available. The ReplicaSet controller (kube-controller-manager) makes the pods, kube-scheduler binds
//! them, and kwok plays the kubelet (Running, Ready, a pod IP), so the Deployment controller counts
//! them available — no container runs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use microplane_e2e::{Cluster, KWOK_NODE_ANNOTATION, KWOK_NODE_PREFIX, TestNamespace, ensure_kwok_nodes, wait_for};

const REPLICAS: i32 = 3;

/// A Deployment that satisfies the `restricted` Pod Security Standard.
fn deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [{"key": microplane_e2e::KWOK_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": "helloworld",
                        "image": "localhost/microplane/helloworld:latest",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "resources": {
                            "requests": {"cpu": "10m", "memory": "16Mi"},
                            "limits": {"memory": "32Mi"}
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }]
                }
            }
        }
    }))
    .expect("a valid Deployment")
}

#[tokio::test]
async fn deployment_on_kwok_nodes_becomes_available() {
    let c = &Cluster::connect().await.expect("the e2e tier needs the control plane");
    let ns = TestNamespace::new(c, "kwok").await.unwrap();
    ensure_kwok_nodes(c, 2)
        .await
        .expect("kwok nodes become Ready (is kwok running?)");

    // Pods are admitted only once the namespace's default ServiceAccount exists (made by
    // kube-controller-manager); creating the Deployment earlier would only add ReplicaSet retries.
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), &ns.name);
    wait_for(
        &sas,
        "default",
        |sa: Option<&ServiceAccount>| sa.is_some(),
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    let name = "hello";
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns.name);
    let t0 = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment(name))
        .await
        .unwrap();
    let available = |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.available_replicas == Some(REPLICAS))
    };
    let d = wait_for(&deployments, name, available, Duration::from_secs(60))
        .await
        .unwrap();
    println!(
        "Deployment {}/{name} had {REPLICAS} available replicas after {:?}",
        ns.name,
        t0.elapsed()
    );
    let status = d.status.unwrap();
    assert_eq!(status.ready_replicas, Some(REPLICAS));
    assert!(
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")),
        "the Deployment has no Available=True condition"
    );

    // Each pod runs on a kwok node, is Running and Ready, and has its own pod IP.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns.name);
    let nodes: Api<Node> = Api::all(c.client.clone());
    let list = pods
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .unwrap();
    let live: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), REPLICAS as usize, "pods: {:?}", list.items);
    let mut ips = HashSet::new();
    for pod in live {
        let pod_name = pod.metadata.name.as_deref().unwrap();
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        assert!(
            node_name.starts_with(KWOK_NODE_PREFIX),
            "{pod_name} is bound to {node_name:?}, not a kwok node"
        );
        let node = nodes.get(&node_name).await.unwrap();
        let annotation = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(KWOK_NODE_ANNOTATION.0));
        assert_eq!(
            annotation.map(String::as_str),
            Some(KWOK_NODE_ANNOTATION.1),
            "{node_name} is not managed by kwok"
        );
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"), "{pod_name}");
        let ip = status
            .pod_ip
            .as_deref()
            .unwrap_or_else(|| panic!("{pod_name} has no pod IP"));
        let ip: IpAddr = ip
            .parse()
            .unwrap_or_else(|e| panic!("{pod_name} has pod IP {ip:?}: {e}"));
        assert!(ips.insert(ip), "pod IP {ip} is used twice");
    }
}
