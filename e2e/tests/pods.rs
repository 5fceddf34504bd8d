//! Pods that really run: the node agent runs helloworld as a process with its own address in the
//! environment's network namespace, kube-controller-manager puts that address in the EndpointSlice,
//! and a gRPC call to it answers. Restarts, readiness, scaling and deletion behave as on a kubelet.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::time::Duration;

use helloworld::pb::CallRequest;
use helloworld::pb::helloworld_client::HelloworldClient;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use microplane_crds::MicroService;
use microplane_e2e::operator::Operator;
use microplane_e2e::{Cluster, apply_helloworld, create_tenant, install_crds, wait_for};
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const NODE: &str = "microplane-node";

async fn setup() -> (Cluster, String) {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    Operator::ensure(&c).await.unwrap();
    let ns = create_tenant(&c, "pods", json!({}), T).await.unwrap();
    (c, ns)
}

/// Ready addresses of a service, from its EndpointSlices (what a gateway would read).
async fn ready_addresses(c: &Cluster, ns: &str, service: &str) -> BTreeSet<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    slices
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|s| s.endpoints.unwrap_or_default())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .flat_map(|e| e.addresses)
        .collect()
}

async fn wait_addresses(c: &Cluster, ns: &str, service: &str, n: usize) -> BTreeSet<String> {
    tokio::time::timeout(T, async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let a = ready_addresses(c, ns, service).await;
            if a.len() == n {
                return a;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{service} never had {n} ready endpoint addresses"))
}

async fn call(addr: &str, name: &str) -> String {
    let mut client = HelloworldClient::connect(format!("http://{addr}:8080")).await.unwrap();
    client
        .call(CallRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .message
}

async fn pods_of(c: &Cluster, ns: &str, service: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    pods.list(&ListParams::default().labels(&format!("microplane.dev/service={service}")))
        .await
        .unwrap()
        .items
}

/// The pid of a pod's container, from its status (`microplane://<pid>`).
fn pid_of(pod: &Pod) -> u32 {
    let id = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    id.trim_start_matches("microplane://").parse().unwrap()
}

#[tokio::test]
async fn helloworld_runs_for_real_and_answers_through_its_endpointslice() {
    let (c, ns) = setup().await;
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    let addrs = wait_addresses(&c, &ns, "helloworld", 1).await;
    let addr = addrs.iter().next().unwrap();
    assert!(
        !addr.starts_with("127."),
        "EndpointSlices carry the pod's own address, not loopback"
    );
    assert_eq!(call(addr, "John").await, "Hello John");
    let pod = &pods_of(&c, &ns, "helloworld").await[0];
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));

    // Killing the process: the agent restarts it and counts the restart.
    let old = pid_of(pod);
    std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let restarted = wait_for(
        &pods,
        &pod.metadata.name.clone().unwrap(),
        |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first().cloned())
                .is_some_and(|cs| cs.restart_count == 1 && cs.ready)
        },
        T,
    )
    .await
    .unwrap();
    assert_ne!(pid_of(&restarted), old);
    let addr = wait_addresses(&c, &ns, "helloworld", 1)
        .await
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(call(&addr, "again").await, "Hello again");

    // A process that stops answering fails its readiness probe and leaves the EndpointSlice;
    // once it answers again it comes back.
    let pid = pid_of(&restarted).to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    tokio::time::timeout(T, async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !ready_addresses(&c, &ns, "helloworld").await.is_empty() {
            tick.tick().await;
        }
    })
    .await
    .expect("a stopped process leaves the ready endpoints");
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    wait_addresses(&c, &ns, "helloworld", 1).await;
}

#[tokio::test]
async fn scaling_gives_addresses_and_deleting_stops_every_process() {
    let (c, ns) = setup().await;
    apply_helloworld(&c, &ns, "scaled", 3).await.unwrap();
    let addrs = wait_addresses(&c, &ns, "scaled", 3).await;
    for addr in &addrs {
        assert_eq!(call(addr, "Ada").await, "Hello Ada");
    }
    let pids: Vec<u32> = pods_of(&c, &ns, "scaled").await.iter().map(pid_of).collect();
    assert_eq!(pids.len(), 3);

    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    api.delete("scaled", &Default::default()).await.unwrap();
    tokio::time::timeout(T, async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while pids
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            || !pods_of(&c, &ns, "scaled").await.is_empty()
        {
            tick.tick().await;
        }
    })
    .await
    .expect("every process stops and every pod goes when the MicroService is deleted");
}

#[tokio::test]
async fn an_image_the_node_cannot_run_is_reported() {
    let (c, ns) = setup().await;
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    let ms: MicroService = serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "MicroService", "metadata": {"name": "foreign"},
        "spec": {"image": "docker.io/library/nginx:1"}
    }))
    .unwrap();
    api.patch("foreign", &PatchParams::apply("e2e").force(), &Patch::Apply(&ms))
        .await
        .unwrap();
    let m = wait_for(
        &api,
        "foreign",
        |m: Option<&MicroService>| {
            m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "ErrImagePull")
            })
        },
        T,
    )
    .await
    .unwrap();
    let msg = &m.status.unwrap().conditions[0].message;
    assert!(msg.contains("cannot run on this node"), "{msg}");
}
