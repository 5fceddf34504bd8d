//! The operator against the real control plane, with pods made Ready by kube-controller-manager and
//! kwok nodes. The operator runs as its own ServiceAccount with the shipped RBAC.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace as CoreNamespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use microplane_crds::{AuthRule, CondType, Config, MicroService, Namespace, Reason};
use microplane_e2e::operator::{Operator, metric_sum};
use microplane_e2e::{Cluster, create_tenant, install_crds, node, unique_name, wait_for, wait_gone};
use serde_json::json;
use tokio::sync::OnceCell;

const T: Duration = Duration::from_secs(90);
static SETUP: OnceCell<()> = OnceCell::const_new();

async fn cluster() -> Cluster {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    SETUP
        .get_or_init(|| async {
            install_crds(&c, Duration::from_secs(30)).await.expect("CRDs");
        })
        .await;
    Operator::ensure(&c).await.expect("operator running");
    c
}

/// A condition on a Microplane object's `status.conditions[type]`.
fn condition<K: serde::Serialize>(
    type_: CondType,
    status: &'static str,
    reason: Option<Reason>,
) -> impl Fn(Option<&K>) -> bool {
    move |obj: Option<&K>| {
        let Some(v) = obj.and_then(|o| serde_json::to_value(o).ok()) else {
            return false;
        };
        v["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
            c["type"] == type_.as_str() && c["status"] == status && reason.is_none_or(|r| c["reason"] == r.as_str())
        })
    }
}

/// Ready for the current generation.
fn ready_now<K: serde::Serialize + Resource>() -> impl Fn(Option<&K>) -> bool {
    move |obj: Option<&K>| {
        let Some(o) = obj else { return false };
        let v = serde_json::to_value(o).unwrap_or_default();
        v["status"]["observedGeneration"] == json!(o.meta().generation)
            && condition::<K>(CondType::Ready, "True", None)(Some(o))
    }
}

/// Creates a tenant and waits until it is Ready; returns its name.
async fn tenant(c: &Cluster, spec: serde_json::Value) -> microplane_e2e::TestTenant {
    create_tenant(c, "t", spec, T).await.unwrap()
}

fn ms(name: &str, spec: serde_json::Value) -> MicroService {
    serde_json::from_value(json!({"apiVersion": "microplane.dev/v1alpha1", "kind": "MicroService", "metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn apply_ms(api: &Api<MicroService>, name: &str, spec: serde_json::Value) {
    api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&ms(name, spec)))
        .await
        .unwrap();
}

#[tokio::test]
async fn microservice_runs_scales_changes_image_and_cascades() {
    let c = &cluster().await;
    let ns = tenant(c, json!({})).await;
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    // Two tags of helloworld in the node's registry: two versions to roll between.
    let (v1, v2) = (node::helloworld("1.0.0").unwrap(), node::helloworld("2.0.0").unwrap());
    apply_ms(&api, "helloworld", json!({"image": v1})).await;
    let ready = wait_for(&api, "helloworld", ready_now::<MicroService>(), T)
        .await
        .unwrap();
    let st = ready.status.unwrap();
    assert_eq!((st.replicas, st.ready_replicas), (Some(1), Some(1)));
    assert_eq!(st.image.as_deref(), Some(v1.as_str()));
    assert_eq!(st.phase, Some(microplane_crds::Phase::Running));

    // The children, as the restricted Pod Security Standard of the tenant namespace admits them.
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let d = deps.get("helloworld").await.unwrap();
    let pod = d.spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.containers[0]
            .security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );
    assert_eq!(d.owner_references()[0].kind, "MicroService");
    assert_eq!(d.labels()["microplane.dev/service"], "helloworld");
    let svc: Api<Service> = Api::namespaced(c.client.clone(), &ns);
    assert_eq!(
        svc.get("helloworld").await.unwrap().spec.unwrap().ports.unwrap()[0].port,
        8080
    );

    // Scale out: three ready pods and a disruption budget.
    apply_ms(&api, "helloworld", json!({"image": v1, "replicas": 3})).await;
    let st = wait_for(&api, "helloworld", ready_now::<MicroService>(), T)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.ready_replicas, Some(3));
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), &ns);
    assert!(pdbs.get_opt("helloworld").await.unwrap().is_some());

    // A new image rolls out; Ready only once every pod runs it.
    apply_ms(&api, "helloworld", json!({"image": v2, "replicas": 3})).await;
    let st = wait_for(&api, "helloworld", ready_now::<MicroService>(), T)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.image.as_deref(), Some(v2.as_str()));
    let d = deps.get("helloworld").await.unwrap();
    assert_eq!(
        d.spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(d.status.unwrap().updated_replicas, Some(3));

    // Back to one replica: the budget is an orphan and goes; autoscaling adds an HPA.
    apply_ms(
        &api,
        "helloworld",
        json!({"image": v2, "autoscaling": {"maxReplicas": 4}}),
    )
    .await;
    wait_for(&api, "helloworld", ready_now::<MicroService>(), T)
        .await
        .unwrap();
    wait_gone(&pdbs, "helloworld", T).await.unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.client.clone(), &ns);
    assert_eq!(hpas.get("helloworld").await.unwrap().spec.max_replicas, 4);

    // Deleting the MicroService removes its children through garbage collection.
    api.delete("helloworld", &DeleteParams::foreground()).await.unwrap();
    wait_gone(&deps, "helloworld", T).await.unwrap();
    wait_gone(&svc, "helloworld", T).await.unwrap();
    wait_gone(&api, "helloworld", T).await.unwrap();
}

#[tokio::test]
async fn missing_config_is_reported_and_recovers_without_touching_the_service() {
    let c = &cluster().await;
    let ns = tenant(c, json!({})).await;
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    apply_ms(
        &api,
        "greeter",
        json!({"image": node::helloworld("1").unwrap(), "config": ["greeter"]}),
    )
    .await;
    let blocked = wait_for(
        &api,
        "greeter",
        condition::<MicroService>(CondType::Ready, "False", Some(Reason::ConfigNotFound)),
        T,
    )
    .await
    .unwrap();
    assert!(
        blocked.status.unwrap().conditions[0]
            .message
            .contains("Config greeter not found")
    );

    // The Config (with a secret value) appears: delivered, and the MicroService recovers by itself.
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &ns);
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "greeter-secrets"}, "stringData": {"api-key": "s3cr3t-value-e2e"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let configs: Api<Config> = Api::namespaced(c.client.clone(), &ns);
    let cfg: Config = serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "Config", "metadata": {"name": "greeter"},
        "spec": {"data": {"greeter": {"greeting": "Hello"}}, "secrets": [{"path": "greeter.apiKey", "secretKeyRef": {"name": "greeter-secrets", "key": "api-key"}}]}
    }))
    .unwrap();
    configs.create(&PostParams::default(), &cfg).await.unwrap();
    let delivered = wait_for(&configs, "greeter", ready_now::<Config>(), T).await.unwrap();
    let hash = delivered.status.as_ref().unwrap().hash.clone().unwrap();
    wait_for(&api, "greeter", ready_now::<MicroService>(), T).await.unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &ns);
    let doc = cms.get("microplane-config-greeter").await.unwrap().data.unwrap()["config.json"].clone();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&doc).unwrap(),
        json!({"greeter": {"greeting": "Hello"}})
    );
    assert!(!doc.contains("s3cr3t"), "secret values never go into the ConfigMap");
    let delivered_secret = secrets.get("microplane-config-greeter").await.unwrap();
    let secrets_doc: serde_json::Value =
        serde_json::from_slice(&delivered_secret.data.unwrap()["secrets.json"].0).unwrap();
    assert_eq!(secrets_doc, json!({"greeter": {"apiKey": "s3cr3t-value-e2e"}}));
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let pod = deps.get("greeter").await.unwrap().spec.template.spec.unwrap();
    assert!(
        pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/etc/microplane/config")
    );

    // Secret values appear nowhere else: not in the Config's status, not in events.
    let status = serde_json::to_string(&configs.get("greeter").await.unwrap().status).unwrap();
    assert!(!status.contains("s3cr3t"));
    let (_, events, _) = c.kubectl(&["get", "events", "-n", &ns, "-o", "yaml"], None).unwrap();
    assert!(!events.contains("s3cr3t"));

    // Live rollout: the document changes in place, the pods are not rolled, and the running pod
    // reads the new document (helloworld takes its greeting from `helloworld.greeting`).
    let generation_before = deps.get("greeter").await.unwrap().metadata.generation;
    let running = microplane_e2e::microservice_pods(c, &ns, "greeter").await.unwrap();
    assert_eq!(running.len(), 1, "one pod of greeter");
    let pod_uid = running[0].metadata.uid.clone().unwrap();
    let pod_ip = running[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert_eq!(greet(&pod_ip).await.as_deref(), Ok("Hello Live"));
    configs
        .patch(
            "greeter",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"data": {"greeter": {"greeting": "Hi"}, "helloworld": {"greeting": "Hi"}}}})),
        )
        .await
        .unwrap();
    let changed = wait_for(
        &configs,
        "greeter",
        move |c: Option<&Config>| {
            c.and_then(|c| c.status.as_ref()?.hash.clone())
                .is_some_and(|h| h != hash)
        },
        T,
    )
    .await
    .unwrap();
    assert!(changed.status.unwrap().hash.is_some());
    let doc = wait_for(
        &cms,
        "microplane-config-greeter",
        |cm: Option<&ConfigMap>| cm.is_some_and(|cm| cm.data.as_ref().is_some_and(|d| d["config.json"].contains("Hi"))),
        T,
    )
    .await;
    assert!(doc.is_ok());
    // The kubelet refreshes ConfigMap volumes on its own sync (up to about a minute here), the
    // service polls its files: the same pod answers with the new greeting.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let said = greet(&pod_ip).await;
        if said.as_deref() == Ok("Hi Live") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the running pod never read the new document: {said:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let pods = microplane_e2e::microservice_pods(c, &ns, "greeter").await.unwrap();
    let same: Vec<_> = pods
        .iter()
        .filter(|p| p.metadata.uid.as_deref() == Some(pod_uid.as_str()))
        .collect();
    assert_eq!((pods.len(), same.len()), (1, 1), "Live keeps the pod");
    let restarts = same[0].status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].restart_count;
    assert_eq!(restarts, 0, "Live does not restart the container");
    assert_eq!(
        deps.get("greeter").await.unwrap().metadata.generation,
        generation_before,
        "Live does not roll the Deployment"
    );
}

/// `Helloworld.Call` with the name `Live`, straight to a pod (the host routes pod addresses).
async fn greet(pod_ip: &str) -> Result<String, String> {
    let mut client = helloworld::pb::helloworld_client::HelloworldClient::connect(format!("http://{pod_ip}:8080"))
        .await
        .map_err(|e| e.to_string())?;
    client
        .call(helloworld::pb::CallRequest { name: "Live".into() })
        .await
        .map(|r| r.into_inner().message)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn restart_config_rolls_the_pods() {
    let c = &cluster().await;
    let ns = tenant(c, json!({})).await;
    let configs: Api<Config> = Api::namespaced(c.client.clone(), &ns);
    let cfg: Config = serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "Config", "metadata": {"name": "flags"},
        "spec": {"rollout": "Restart", "data": {"flags": {"beta": false}}}
    }))
    .unwrap();
    configs.create(&PostParams::default(), &cfg).await.unwrap();
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    apply_ms(
        &api,
        "flagged",
        json!({"image": node::helloworld("1").unwrap(), "config": ["flags"]}),
    )
    .await;
    wait_for(&api, "flagged", ready_now::<MicroService>(), T).await.unwrap();
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let before = deps.get("flagged").await.unwrap();
    let annotation = |d: &Deployment| {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("microplane.dev/config-hash").cloned())
    };
    let old = annotation(&before).expect("Restart configs put their hash in the pod template");

    configs
        .patch(
            "flags",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"data": {"flags": {"beta": true}}}})),
        )
        .await
        .unwrap();
    let rolled = wait_for(
        &deps,
        "flagged",
        move |d: Option<&Deployment>| d.and_then(annotation).is_some_and(|a| a != old),
        T,
    )
    .await
    .unwrap();
    assert!(
        rolled.metadata.generation > before.metadata.generation,
        "the Deployment rolled"
    );
    wait_for(&api, "flagged", ready_now::<MicroService>(), T).await.unwrap();
}

#[tokio::test]
async fn tenant_provisions_its_namespace_and_reports_conflicts() {
    let c = &cluster().await;
    let ns = tenant(
        c,
        json!({"owners": [{"kind": "Group", "name": "acme-admins"}], "quota": {"cpu": "4", "memory": "8Gi", "pods": 20, "microServices": 5}, "defaultAccess": "Authenticated"}),
    )
    .await;
    let core: Api<CoreNamespace> = Api::all(c.client.clone());
    let n = core.get(&ns).await.unwrap();
    assert_eq!(n.labels()["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(n.owner_references()[0].kind, "Namespace");
    assert!(
        Api::<ResourceQuota>::namespaced(c.client.clone(), &ns)
            .get("microplane-quota")
            .await
            .is_ok()
    );
    assert!(
        Api::<LimitRange>::namespaced(c.client.clone(), &ns)
            .get("microplane-defaults")
            .await
            .is_ok()
    );
    assert!(
        Api::<NetworkPolicy>::namespaced(c.client.clone(), &ns)
            .get("microplane-isolation")
            .await
            .is_ok()
    );
    let rb = Api::<RoleBinding>::namespaced(c.client.clone(), &ns)
        .get("microplane-tenant-admin")
        .await
        .unwrap();
    assert_eq!(rb.subjects.unwrap()[0].name, "acme-admins");
    let rule = Api::<AuthRule>::namespaced(c.client.clone(), &ns)
        .get("default")
        .await
        .unwrap();
    assert_eq!(rule.spec.scope, "*", "Authenticated: any account of the tenant");
    let rules: Api<AuthRule> = Api::namespaced(c.client.clone(), &ns);
    wait_for(&rules, "default", ready_now::<AuthRule>(), T).await.unwrap();

    // A core Namespace that exists and is not ours is reported, never silently adopted…
    let taken = unique_name("taken");
    core.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": taken}})).unwrap(),
    )
    .await
    .unwrap();
    let tenants: Api<Namespace> = Api::all(c.client.clone());
    let t: Namespace = serde_json::from_value(
        json!({"apiVersion": "microplane.dev/v1alpha1", "kind": "Namespace", "metadata": {"name": taken}, "spec": {}}),
    )
    .unwrap();
    tenants.create(&PostParams::default(), &t).await.unwrap();
    wait_for(
        &tenants,
        &taken,
        condition::<Namespace>(CondType::Ready, "False", Some(Reason::NamespaceConflict)),
        T,
    )
    .await
    .unwrap();
    assert!(core.get(&taken).await.unwrap().owner_references().is_empty());
    // …until adopt is set.
    tenants
        .patch(
            &taken,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"adopt": true}})),
        )
        .await
        .unwrap();
    wait_for(&tenants, &taken, ready_now::<Namespace>(), T).await.unwrap();

    // Deleting a tenant deletes its namespace.
    tenants.delete(&ns, &DeleteParams::default()).await.unwrap();
    wait_for(
        &core,
        &ns,
        |n: Option<&CoreNamespace>| n.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        T,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn microservice_outside_a_tenant_waits_for_one() {
    let c = &cluster().await;
    let plain = microplane_e2e::TestNamespace::new(c, "notenant").await.unwrap();
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &plain.name);
    apply_ms(&api, "lonely", json!({"image": node::helloworld("1").unwrap()})).await;
    wait_for(
        &api,
        "lonely",
        condition::<MicroService>(CondType::Ready, "False", Some(Reason::TenantNotFound)),
        T,
    )
    .await
    .unwrap();
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), &plain.name);
    assert!(
        deps.get_opt("lonely").await.unwrap().is_none(),
        "nothing is deployed outside a tenant"
    );
}

#[tokio::test]
async fn idle_resync_writes_nothing() {
    let c = &cluster().await;
    let ns = tenant(c, json!({})).await;
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    apply_ms(&api, "idle", json!({"image": node::helloworld("1").unwrap()})).await;
    wait_for(&api, "idle", ready_now::<MicroService>(), T).await.unwrap();
    // Idle means settled: the gateway route is decided too (descriptors discovered or failed).
    let settled = |m: Option<&MicroService>| {
        m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == CondType::Routed && c.reason != Reason::DiscoveryPending)
        })
    };
    wait_for(&api, "idle", settled, T).await.unwrap();
    let op = Operator::ensure(c).await.unwrap();
    // The e2e operator resyncs every 3 s; watch two periods of an idle object.
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let before_rv = (
        deps.get("idle").await.unwrap().resource_version(),
        api.get("idle").await.unwrap().resource_version(),
    );
    // An unchanged server-side apply does not change a resourceVersion, so the check below cannot
    // see an operator that re-applies everything on every resync: its write counter can. Other
    // tests write meanwhile, so the counter is read over windows: some window of two resync
    // periods in which every object was reconciled again must pass with no write at all. An
    // operator that writes on each resync never has one.
    let page = || op.metrics().unwrap();
    let quiet = Duration::from_secs(7);
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let (mut since, mut writes, mut reconciles) = (
        std::time::Instant::now(),
        metric_sum(&page(), "microplane_operator_writes_total"),
        metric_sum(&page(), "microplane_operator_reconciles_total"),
    );
    let mut last_writes = String::new();
    loop {
        tick.tick().await;
        let now = page();
        let (w, r) = (
            metric_sum(&now, "microplane_operator_writes_total"),
            metric_sum(&now, "microplane_operator_reconciles_total"),
        );
        if w != writes {
            last_writes = now
                .lines()
                .filter(|l| l.starts_with("microplane_operator_writes_total"))
                .collect::<Vec<_>>()
                .join("\n");
            (since, writes, reconciles) = (std::time::Instant::now(), w, r);
        } else if since.elapsed() >= quiet && r >= reconciles + 2.0 {
            println!(
                "idle: no write in {:?} while the operator reconciled {} times",
                since.elapsed(),
                r - reconciles
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the operator never went {quiet:?} without a write (resyncs write?); last writes:\n{last_writes}"
        );
    }
    let after_rv = (
        deps.get("idle").await.unwrap().resource_version(),
        api.get("idle").await.unwrap().resource_version(),
    );
    assert_eq!(before_rv, after_rv, "nothing this test owns was written");
}
