//! Pods are containers on a real node: the upstream kubelet, containerd and runc run helloworld
//! from an image pulled from the in-cluster registry, with the security context the operator sets
//! (read back from the runtime), on the pod network; kube-controller-manager puts the pod's address
//! in the EndpointSlice, kube-proxy serves its ClusterIP and CoreDNS its name. Restarts, readiness,
//! crash loops, image pull failures, scaling and deletion are the kubelet's own.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::time::Duration;

use helloworld::pb::CallRequest;
use helloworld::pb::helloworld_client::HelloworldClient;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use microplane_crds::{CondType, MicroService, Reason};
use microplane_e2e::gateway::Gateway;
use microplane_e2e::node::{self, NODE};
use microplane_e2e::operator::Operator;
use microplane_e2e::{
    Cluster, apply_helloworld, apply_microservice, create_tenant, install_crds, microservice_pods, wait_for,
};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

async fn setup(prefix: &str) -> (Cluster, microplane_e2e::TestTenant) {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    Operator::ensure(&c).await.unwrap();
    let ns = create_tenant(&c, prefix, json!({}), T).await.unwrap();
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
    microservice_pods(c, ns, service).await.unwrap()
}

/// The pod's first container's id (`containerd://…`) from its status.
fn container_id(pod: &Pod) -> String {
    pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0]
        .container_id
        .clone()
        .unwrap()
}

fn kill(signal: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// A pod of the tenant's restricted pod security: helloworld's client, once, with `args`.
fn client_pod(name: &str, image: &str, args: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": image, "command": ["/usr/local/bin/helloworld-call"], "args": args,
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": true},
            }],
        }
    }))
    .unwrap()
}

/// Waits until a pod has run to completion (Succeeded or Failed); the pod.
async fn finished(pods: &Api<Pod>, name: &str) -> Pod {
    wait_for(
        pods,
        name,
        |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.phase.clone())
                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
        },
        T,
    )
    .await
    .unwrap()
}

/// Applies MicroService `name` running `image` and waits until its Ready condition is False for
/// one of `reasons`; that condition's message.
async fn not_ready_because(c: &Cluster, ns: &str, name: &str, image: &str, reasons: &[Reason]) -> String {
    apply_microservice(c, ns, name, json!({"image": image})).await.unwrap();
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), ns);
    let ready = |m: &MicroService| {
        m.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == CondType::Ready && c.status == "False" && reasons.iter().any(|r| c.reason == *r))
            .cloned()
    };
    let m = wait_for(&api, name, |m: Option<&MicroService>| m.and_then(ready).is_some(), T)
        .await
        .unwrap();
    ready(&m).unwrap().message
}

/// Runs client pods (`<name>-0`, `<name>-1`, …) until one succeeds; its log. kube-proxy programs a
/// Service's endpoints a moment after the EndpointSlice says they are ready (until then it
/// rejects), as on any cluster, so a first client may lose that race.
async fn run_client(c: &Cluster, ns: &str, name: &str, args: &[&str]) -> String {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let image = node::helloworld("e2e").unwrap();
    let mut failures = Vec::new();
    for attempt in 0..10 {
        let pod = format!("{name}-{attempt}");
        pods.create(&PostParams::default(), &client_pod(&pod, &image, args))
            .await
            .unwrap();
        let done = finished(&pods, &pod).await;
        let log = pods.logs(&pod, &LogParams::default()).await.unwrap();
        if done.status.unwrap().phase.as_deref() == Some("Succeeded") {
            return log;
        }
        failures.push(log);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("client {name} {args:?} never succeeded: {failures:?}");
}

#[tokio::test]
async fn the_node_is_a_kubelet_on_containerd_with_its_add_ons() {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    let nodes: Api<Node> = Api::all(c.client.clone());
    let n = nodes.get(NODE).await.unwrap();
    let status = n.status.unwrap();
    let info = status.node_info.unwrap();
    assert!(
        info.container_runtime_version.starts_with("containerd://2."),
        "{}",
        info.container_runtime_version
    );
    let server = c.client.apiserver_version().await.unwrap().git_version;
    assert_eq!(info.kubelet_version, server);
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == CondType::Ready && c.status == "True")
    );
    let ip = &status.addresses.unwrap()[0];
    assert_eq!(ip.type_, "InternalIP");
    assert!(!ip.address.starts_with("127."), "{}", ip.address);
    // Cluster DNS and the registry run as pods on it.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "kube-system");
    for app in ["k8s-app=kube-dns", "app.kubernetes.io/name=registry"] {
        let p = pods.list(&ListParams::default().labels(app)).await.unwrap();
        assert!(
            p.items.iter().any(|p| {
                p.spec.as_ref().unwrap().node_name.as_deref() == Some(NODE)
                    && p.status.as_ref().unwrap().phase.as_deref() == Some("Running")
            }),
            "{app} runs on {NODE}"
        );
    }
}

#[tokio::test]
async fn helloworld_runs_as_a_container_with_the_operators_security_context() {
    let (c, ns) = setup("pods").await;
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    let addrs = wait_addresses(&c, &ns, "helloworld", 1).await;
    let addr = addrs.iter().next().unwrap();
    assert!(!addr.starts_with("127."), "the pod's own address, not loopback");
    assert_eq!(call(addr, "John").await, "Hello John");
    let pod = &pods_of(&c, &ns, "helloworld").await[0];
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));
    let id = container_id(pod);
    assert!(id.starts_with("containerd://"), "{id}");
    // Pulled from the in-cluster registry, by the node's containerd.
    let cs = &pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(
        cs.image_id.starts_with("localhost:5000/e2e/helloworld@sha256:"),
        "{}",
        cs.image_id
    );

    // What the runtime applied, not what the spec asked for.
    let info = node::container_info(&id).unwrap();
    let spec = &info["Spec"];
    assert_eq!(spec["process"]["user"]["uid"], 65532, "{spec}");
    assert_eq!(spec["process"]["user"]["gid"], 65532, "{spec}");
    assert_eq!(spec["process"]["noNewPrivileges"], true, "{spec}");
    assert_eq!(spec["root"]["readonly"], true, "{spec}");
    let bounding = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(bounding.is_empty(), "every capability dropped: {bounding:?}");
    assert_eq!(
        spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO",
        "RuntimeDefault seccomp"
    );

    // Killing the container's process: the kubelet restarts it and counts the restart.
    let old = node::container_pid(&id).unwrap();
    kill("-KILL", old);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let name = pod.metadata.name.clone().unwrap();
    let restarted = wait_for(
        &pods,
        &name,
        |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first().cloned())
                .is_some_and(|cs| cs.restart_count == 1 && cs.ready)
        },
        T,
    )
    .await
    .unwrap();
    let new_id = container_id(&restarted);
    assert_ne!(new_id, id);
    let addr = wait_addresses(&c, &ns, "helloworld", 1)
        .await
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(call(&addr, "again").await, "Hello again");

    // A process that stops answering fails its readiness probe and leaves the EndpointSlice; once
    // it answers again it comes back.
    let pid = node::container_pid(&new_id).unwrap();
    kill("-STOP", pid);
    let left = tokio::time::timeout(T, async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while !ready_addresses(&c, &ns, "helloworld").await.is_empty() {
            tick.tick().await;
        }
    })
    .await;
    kill("-CONT", pid);
    left.expect("a stopped process leaves the ready endpoints");
    wait_addresses(&c, &ns, "helloworld", 1).await;
}

#[tokio::test]
async fn logs_exec_and_port_forward_reach_the_container_through_the_kubelet() {
    let (c, ns) = setup("pods-exec").await;
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    wait_addresses(&c, &ns, "helloworld", 1).await;
    let pod = pods_of(&c, &ns, "helloworld").await[0].metadata.name.clone().unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let log = pods.logs(&pod, &LogParams::default()).await.unwrap();
    assert!(log.contains("serving"), "{log}");
    let (ok, out, err) = c
        .kubectl(
            &[
                "exec",
                "-n",
                &ns,
                &pod,
                "--",
                "helloworld-call",
                "127.0.0.1:8080",
                "Exec",
            ],
            None,
        )
        .unwrap();
    assert!(ok, "kubectl exec: {err}");
    assert_eq!(out.trim(), r#"{"message": "Hello Exec"}"#);

    // port-forward: a local port on this host reaches the container's port through the kubelet.
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut pf = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["port-forward", "-n", &ns, &format!("pod/{pod}"), ":8080"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first line says where it listens; the rest is drained (kubectl writes a line per
    // connection, and dies of a closed pipe if nobody reads).
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = pf.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(T))
        .await
        .unwrap()
        .expect("kubectl port-forward printed where it listens");
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"))
        .to_string();
    let mut client = HelloworldClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let reply = client.call(CallRequest { name: "Forward".into() }).await;
    let _ = pf.kill();
    let _ = pf.wait();
    assert_eq!(reply.unwrap().into_inner().message, "Hello Forward");
}

#[tokio::test]
async fn pods_resolve_services_by_name_and_reach_them_by_cluster_ip() {
    let (c, ns) = setup("pods-dns").await;
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    wait_addresses(&c, &ns, "helloworld", 1).await;
    // The Service was made just now: CoreDNS (a pod, reaching the API server through the
    // `kubernetes` Service with its service-account token) can only answer for it by watching.
    let name = format!("helloworld.{ns}.svc.cluster.local:8080");
    let log = run_client(&c, &ns, "by-name", &[&name, "DNS"]).await;
    assert_eq!(log.trim(), r#"{"message": "Hello DNS"}"#);
    let svc: Api<Service> = Api::namespaced(c.client.clone(), &ns);
    let ip = svc.get("helloworld").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    let log = run_client(&c, &ns, "by-ip", &[&format!("{ip}:8080"), "ClusterIP"]).await;
    assert_eq!(log.trim(), r#"{"message": "Hello ClusterIP"}"#);
    // A name that does not exist does not resolve (and nothing is asked outside the cluster).
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let image = node::helloworld("e2e").unwrap();
    pods.create(
        &PostParams::default(),
        &client_pod("nosuch", &image, &[&format!("nosuch.{ns}.svc.cluster.local:8080")]),
    )
    .await
    .unwrap();
    let failed = wait_for(
        &pods,
        "nosuch",
        |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.phase.clone())
                .is_some_and(|ph| ph == "Failed")
        },
        T,
    )
    .await;
    assert!(failed.is_ok(), "a client of an unknown name fails");
}

#[tokio::test]
async fn a_pod_reaches_the_api_server_with_its_service_account_token() {
    let (c, ns) = setup("pods-token").await;
    let version = c.client.apiserver_version().await.unwrap().git_version;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    // kubectl without a kubeconfig uses the in-cluster configuration: the `kubernetes` Service's
    // address (10.96.0.1, through kube-proxy to the API server), the projected token and CA.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "whoami"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": true,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "kubectl", "image": format!("localhost/microplane/kubectl:{version}"),
                "args": ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": true},
            }],
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let done = finished(&pods, "whoami").await;
    let log = pods.logs("whoami", &LogParams::default()).await.unwrap();
    assert_eq!(done.status.unwrap().phase.as_deref(), Some("Succeeded"), "{log}");
    assert_eq!(log.trim(), format!("system:serviceaccount:{ns}:default"));
}

#[tokio::test]
async fn a_crash_loop_shows_in_the_microservice_status() {
    let (c, ns) = setup("pods-crash").await;
    let crasher = node::crasher().unwrap();
    let message = not_ready_because(&c, &ns, "crasher", &crasher, &[Reason::CrashLoopBackOff]).await;
    assert!(message.contains("crasher-"), "names the pod: {message}");
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_reported() {
    let (c, ns) = setup("pods-pull").await;
    let image = "localhost:5000/e2e/never-pushed:1";
    let message = not_ready_because(
        &c,
        &ns,
        "foreign",
        image,
        &[Reason::ErrImagePull, Reason::ImagePullBackOff],
    )
    .await;
    assert!(message.contains("never-pushed"), "{message}");
}

#[tokio::test]
async fn scaling_gives_addresses_and_deleting_stops_every_container() {
    let (c, ns) = setup("pods-scale").await;
    apply_helloworld(&c, &ns, "scaled", 3).await.unwrap();
    let addrs = wait_addresses(&c, &ns, "scaled", 3).await;
    for addr in &addrs {
        assert_eq!(call(addr, "Ada").await, "Hello Ada");
    }
    let ids: Vec<String> = pods_of(&c, &ns, "scaled")
        .await
        .iter()
        .map(|p| container_id(p).trim_start_matches("containerd://").to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    let running = node::running_containers().unwrap();
    assert!(ids.iter().all(|id| running.contains(id)), "{ids:?} in {running:?}");

    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    api.delete("scaled", &Default::default()).await.unwrap();
    tokio::time::timeout(T, async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let running = node::running_containers().unwrap();
            if !ids.iter().any(|id| running.contains(id)) && pods_of(&c, &ns, "scaled").await.is_empty() {
                break;
            }
        }
    })
    .await
    .expect("every container stops and every pod goes when the MicroService is deleted");
}

#[tokio::test]
async fn deleting_a_pod_under_load_loses_no_call() {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    let gw = Gateway::ensure(&c).await.unwrap();
    let ns = create_tenant(&c, "pods-load", json!({}), T).await.unwrap();
    apply_helloworld(&c, &ns, "helloworld", 2).await.unwrap();
    wait_addresses(&c, &ns, "helloworld", 2).await;
    gw.wait_status(&ns, "POST", "/helloworld/call", r#"{"name":"warm"}"#, 200, T)
        .await
        .unwrap();

    let victim = pods_of(&c, &ns, "helloworld").await[0].metadata.name.clone().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let load = {
        let gw = gw.clone();
        let ns = ns.to_string();
        let calls = calls.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(8);
            let mut failures = Vec::new();
            let mut n = 0u32;
            while std::time::Instant::now() < deadline {
                let r = gw.call(&ns, "POST", "/helloworld/call", &format!(r#"{{"name":"n{n}"}}"#));
                if r.status != 200 {
                    failures.push(format!("{}: {}", r.status, r.body));
                }
                n += 1;
                calls.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            (n, failures)
        })
    };
    // The pod goes while the load runs: once it has made 50 calls.
    tokio::time::timeout(T, async {
        while calls.load(std::sync::atomic::Ordering::Relaxed) < 50 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the load makes calls");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    let (n, failures) = load.await.unwrap();
    assert!(n > 100, "the load ran: {n} calls");
    assert!(
        failures.is_empty(),
        "{} of {n} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The Deployment replaced the pod; the old one is gone from the node.
    wait_addresses(&c, &ns, "helloworld", 2).await;
}
