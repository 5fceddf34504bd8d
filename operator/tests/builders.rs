//! Unit tier: the pure builders and status computation, from YAML fixtures to desired objects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodStatus};
use microplane_crds::{MicroService, Namespace, Phase};
use microplane_operator::controller::microservice::build::{self, ListedConfig};
use microplane_operator::controller::microservice::status::{self, Blocked, Rollout};
use microplane_operator::controller::tenant;
use microplane_operator::labels;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn env_of(d: &Deployment) -> BTreeMap<String, String> {
    let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn helloworld_gets_a_restricted_grpc_deployment_and_service() {
    let ms: MicroService = fixture("helloworld.yaml");
    let d = build::desired(&ms, &[]).unwrap();
    let dep = &d.deployment;
    assert_eq!(dep.metadata.name.as_deref(), Some("helloworld"));
    assert_eq!(dep.metadata.namespace.as_deref(), Some("micro"));
    let owner = &dep.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("MicroService", "helloworld", Some(true))
    );
    let labels = dep.metadata.labels.as_ref().unwrap();
    for (k, v) in [
        ("app.kubernetes.io/name", "helloworld"),
        ("app.kubernetes.io/instance", "helloworld"),
        ("app.kubernetes.io/version", "1.2.0"),
        ("app.kubernetes.io/managed-by", "microplane-operator"),
        ("app.kubernetes.io/part-of", "microplane"),
        ("microplane.dev/service", "helloworld"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    assert_eq!(dep.spec.replicas, Some(1));
    assert_eq!(
        dep.spec.selector.match_labels.as_ref().unwrap(),
        &BTreeMap::from([("microplane.dev/service".to_string(), "helloworld".to_string())])
    );

    let pod = dep.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("localhost/microplane/helloworld:1.2.0"));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    // A read-only root filesystem still needs a writable /tmp.
    assert!(c.volume_mounts.iter().flatten().any(|m| m.mount_path == "/tmp"));

    let env = env_of(dep);
    assert_eq!(env["MICRO_SERVICE_NAME"], "helloworld");
    assert_eq!(env["MICRO_SERVICE_VERSION"], "1.2.0");
    assert_eq!(env["MICRO_NAMESPACE"], "micro");
    assert_eq!(env["MICRO_SERVICE_ADDRESS"], ":8080");
    assert!(!env.contains_key("MICRO_CONFIG_DIR"), "no configs, no config dir");

    // gRPC health probes on the service port.
    assert_eq!(c.readiness_probe.as_ref().unwrap().grpc.as_ref().unwrap().port, 8080);
    assert_eq!(c.liveness_probe.as_ref().unwrap().grpc.as_ref().unwrap().port, 8080);
    // Default requests so quotas and the scheduler can count the pod.
    let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "50m");
    assert_eq!(requests["memory"].0, "64Mi");

    let svc = d.service.spec.as_ref().unwrap();
    let port = &svc.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.app_protocol.as_deref()),
        (Some("grpc"), 8080, Some("kubernetes.io/h2c"))
    );
    assert_eq!(svc.selector.as_ref().unwrap()["microplane.dev/service"], "helloworld");
    assert!(d.pdb.is_none(), "one replica: no disruption budget");
    assert!(d.hpa.is_none());
}

#[test]
fn http_service_with_replicas_resources_env_and_configs() {
    let ms: MicroService = fixture("scaled.yaml");
    let configs = [
        ListedConfig {
            name: "greeter".into(),
            restart: true,
            hash: Some("aaaa".into()),
        },
        ListedConfig {
            name: "flags".into(),
            restart: false,
            hash: Some("bbbb".into()),
        },
    ];
    let d = build::desired(&ms, &configs).unwrap();
    let dep = &d.deployment;
    assert_eq!(dep.spec.replicas, Some(3));
    assert_eq!(
        dep.metadata.labels.as_ref().unwrap()["app.kubernetes.io/version"],
        "0123456789ab",
        "digest prefix"
    );
    let c = &dep.spec.template.spec.as_ref().unwrap().containers[0];
    assert!(
        c.readiness_probe.as_ref().unwrap().tcp_socket.is_some(),
        "Http services get TCP probes"
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9090);
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["cpu"].0,
        "1",
        "user resources win"
    );
    let env = env_of(dep);
    assert_eq!(
        env["MICRO_SERVICE_NAME"], "greeter",
        "platform variables cannot be overridden"
    );
    assert_eq!(env["LOG_LEVEL"], "debug");
    assert_eq!(env["MICRO_SERVICE_ADDRESS"], ":9090");
    assert_eq!(env["MICRO_CONFIG_DIR"], "/etc/microplane/config");
    // Only Restart-mode configs roll the pods.
    let ann = dep
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(ann[build::CONFIG_HASH_ANNOTATION], "greeter=aaaa");
    let vol = dep
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "config")
        .unwrap();
    let sources = vol.projected.as_ref().unwrap().sources.as_ref().unwrap();
    assert_eq!(sources.len(), 4, "a ConfigMap and a Secret per Config");
    assert_eq!(
        sources[0].config_map.as_ref().unwrap().name,
        "microplane-config-greeter"
    );
    assert_eq!(
        sources[1].secret.as_ref().unwrap().items.as_ref().unwrap()[0].path,
        "greeter/secrets.json"
    );
    let pdb = d.pdb.unwrap();
    assert_eq!(
        pdb.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(
        d.service.spec.unwrap().ports.unwrap()[0].app_protocol.as_deref(),
        Some("http")
    );
}

#[test]
fn autoscaling_hands_replicas_to_the_hpa() {
    let ms: MicroService = fixture("autoscaled.yaml");
    let d = build::desired(&ms, &[]).unwrap();
    assert_eq!(d.deployment.spec.replicas, None, "the HPA owns the replica count");
    let hpa = d.hpa.unwrap().spec;
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 10));
    assert_eq!(hpa.scale_target_ref.name, "api");
    let target = &hpa.metrics.unwrap()[0].resource.clone().unwrap().target;
    assert_eq!(target.average_utilization, Some(65));
    assert!(d.pdb.is_some(), "min 2 replicas: a budget");
    assert_eq!(build::image_version("ghcr.io/acme/api"), "latest");
}

#[test]
fn image_versions_and_label_values() {
    assert_eq!(build::image_version("nginx:1.27"), "1.27");
    assert_eq!(build::image_version("localhost:5000/a/b"), "latest");
    assert_eq!(build::image_version("localhost:5000/a/b:v2"), "v2");
    assert_eq!(labels::label_value("v1+build/7"), "v1-build-7");
    assert_eq!(labels::label_value(&"x".repeat(80)).len(), 63);
    assert_eq!(labels::label_value("-a-"), "a");
}

fn deployment(desired: i32, updated: i32, available: i32, replicas: i32) -> Deployment {
    let mut d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "x", "generation": 2},
        "spec": {"replicas": desired, "selector": {}, "template": {}},
    }))
    .unwrap();
    d.status = Some(DeploymentStatus {
        observed_generation: Some(2),
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        available_replicas: Some(available),
        ready_replicas: Some(available),
        ..DeploymentStatus::default()
    });
    d
}

#[test]
fn status_ready_only_when_fully_rolled_out() {
    let r = Rollout::of(&deployment(2, 2, 2, 3));
    let (s, conds) = status::compute(None, Some(5), Some("img:1"), None, Some(&r), None);
    assert_eq!(s.phase, Some(Phase::Deploying), "an old pod is still there");
    assert!(!conds[0].status);
    let r = Rollout::of(&deployment(2, 2, 2, 2));
    let (s, conds) = status::compute(None, Some(5), Some("img:1"), None, Some(&r), None);
    assert_eq!(
        (s.phase, s.replicas, s.ready_replicas, s.observed_generation),
        (Some(Phase::Running), Some(2), Some(2), Some(5))
    );
    assert_eq!(
        (conds[0].type_.as_str(), conds[0].status, conds[0].reason.as_str()),
        ("Ready", true, "Running")
    );
    assert_eq!((conds[1].type_.as_str(), conds[1].status), ("Available", true));
    assert_eq!(s.image.as_deref(), Some("img:1"));
    let mut stale = deployment(2, 2, 2, 2);
    stale.status.as_mut().unwrap().observed_generation = Some(1);
    let (_, conds) = status::compute(None, Some(5), None, None, Some(&Rollout::of(&stale)), None);
    assert!(!conds[0].status, "the Deployment controller has not seen the new spec");
    let (_, conds) = status::compute(
        None,
        Some(5),
        None,
        None,
        Some(&Rollout::of(&deployment(0, 0, 0, 0))),
        None,
    );
    assert_eq!(conds[0].reason, "ScaledToZero");
}

#[test]
fn status_reasons_a_user_can_act_on() {
    let (s, c) = status::compute(
        None,
        Some(1),
        None,
        Some(&Blocked::TenantNotFound("micro".into())),
        None,
        None,
    );
    assert_eq!((s.phase, c[0].reason.as_str()), (Some(Phase::Failed), "TenantNotFound"));
    assert!(c[0].message.contains("create a Namespace (microplane.dev) named micro"));
    let (_, c) = status::compute(
        None,
        Some(1),
        None,
        Some(&Blocked::ConfigNotFound(vec!["a".into(), "b".into()])),
        None,
        None,
    );
    assert_eq!(
        (c[0].reason.as_str(), c[0].message.as_str()),
        ("ConfigNotFound", "Config a, b not found in this namespace")
    );

    let mut d = deployment(1, 1, 0, 1);
    d.status.as_mut().unwrap().conditions = Some(vec![
        serde_json::from_value(serde_json::json!({
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"
        }))
        .unwrap(),
    ]);
    let (s, c) = status::compute(None, Some(1), None, None, Some(&Rollout::of(&d)), None);
    assert_eq!(
        (s.phase, c[0].reason.as_str()),
        (Some(Phase::Failed), "ProgressDeadlineExceeded")
    );

    let pod = Pod {
        metadata: serde_json::from_value(serde_json::json!({"name": "helloworld-abc"})).unwrap(),
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "service".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ImagePullBackOff".into()),
                        message: Some("Back-off pulling image \"nope:1\"".into()),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    let problem = status::pod_problem([&pod]).unwrap();
    let (_, c) = status::compute(
        None,
        Some(1),
        None,
        None,
        Some(&Rollout::of(&deployment(1, 1, 0, 1))),
        Some(&problem),
    );
    assert_eq!(c[0].reason, "ImagePullBackOff");
    assert!(
        c[0].message.contains("helloworld-abc") && c[0].message.contains("nope:1"),
        "{}",
        c[0].message
    );
}

#[test]
fn tenant_gets_namespace_quota_isolation_owners_and_public_default_rule() {
    let t: Namespace = fixture("tenant.yaml");
    let d = tenant::desired(&t, "microplane-system").unwrap();
    let labels = d.namespace.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels[labels::TENANT_LABEL], "acme");
    assert_eq!(
        d.namespace.metadata.owner_references.as_ref().unwrap()[0].kind,
        "Namespace"
    );
    let (quota, limits) = d.quota.unwrap();
    let hard = quota.spec.unwrap().hard.unwrap();
    assert_eq!(hard["requests.cpu"].0, "4");
    assert_eq!(hard["requests.memory"].0, "8Gi");
    assert_eq!(hard["pods"].0, "50");
    assert_eq!(hard["count/microservices.microplane.dev"].0, "20");
    assert!(limits.spec.unwrap().limits[0].default_request.is_some());
    let policy = d.policy.unwrap().spec.unwrap();
    let from = policy.ingress.unwrap()[0].from.clone().unwrap();
    assert_eq!(from.len(), 2, "same namespace and the gateway");
    assert_eq!(
        from[1]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["kubernetes.io/metadata.name"],
        "microplane-system"
    );
    let binding = d.binding.unwrap();
    assert_eq!(binding.role_ref.name, tenant::TENANT_ADMIN_ROLE);
    let subjects = binding.subjects.unwrap();
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("Group", "acme-admins")
    );
    assert_eq!(
        (subjects[1].kind.as_str(), subjects[1].namespace.as_deref()),
        ("ServiceAccount", Some("ci"))
    );
    let rule = d.rule.unwrap();
    assert_eq!(rule.spec.scope, "", "Public: Micro's grant-all default rule");
    assert_eq!(rule.spec.priority, tenant::DEFAULT_RULE_PRIORITY);
    assert_eq!(rule.metadata.namespace.as_deref(), Some("acme"));
}

#[test]
fn closed_tenant_has_no_default_rule_policy_quota_or_binding() {
    let t: Namespace = fixture("tenant-closed.yaml");
    let d = tenant::desired(&t, "gw").unwrap();
    assert!(d.rule.is_none() && d.policy.is_none() && d.quota.is_none() && d.binding.is_none());
}

#[test]
fn a_new_microservice_that_only_progresses_waits_for_one_status_write() {
    use microplane_crds::{CondType, Reason};
    use microplane_operator::conditions::Cond;
    use std::time::Duration;
    let settle = Duration::from_secs(3);
    let mut ms: MicroService = fixture("helloworld.yaml");
    let created = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
    ms.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created));
    let at = |secs: i64| created + k8s_openapi::jiff::SignedDuration::from_secs(secs);
    let deploying = [Cond::fail(CondType::Ready, Reason::Deploying, "0/1 available")];
    let ready_unrouted = [
        Cond::ok(CondType::Ready, Reason::Running, ""),
        Cond::fail(CondType::Routed, Reason::DiscoveryPending, ""),
    ];
    let ready_routed = [
        Cond::ok(CondType::Ready, Reason::Running, ""),
        Cond::ok(CondType::Routed, Reason::Routed, ""),
    ];
    let pulling = [Cond::fail(CondType::Ready, Reason::ImagePullBackOff, "no such image")];

    // Progress within the settle: wait for the rest of it.
    assert_eq!(
        status::settling(&ms, None, &deploying, settle, at(1)),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        status::settling(&ms, None, &ready_unrouted, settle, at(1)),
        Some(Duration::from_secs(2))
    );
    // Done, something to fix, or the settle over: now.
    assert_eq!(status::settling(&ms, None, &ready_routed, settle, at(1)), None);
    assert_eq!(status::settling(&ms, None, &pulling, settle, at(1)), None);
    assert_eq!(status::settling(&ms, None, &deploying, settle, at(3)), None);
    assert_eq!(status::settling(&ms, None, &deploying, Duration::ZERO, at(1)), None);
    // An object that has a status (a changed spec): observedGeneration moves at once.
    let written = microplane_crds::MicroServiceStatus {
        observed_generation: Some(1),
        ..Default::default()
    };
    assert_eq!(status::settling(&ms, Some(&written), &deploying, settle, at(1)), None);
    // A source build's phases are the news.
    let mut built = ms.clone();
    built.spec.image = None;
    built.spec.source =
        Some(serde_json::from_value(serde_json::json!({"git": {"url": "https://git.example/r"}})).unwrap());
    assert_eq!(status::settling(&built, None, &deploying, settle, at(1)), None);
}

#[test]
fn only_a_rollouts_counts_moving_is_progress_that_may_wait() {
    use microplane_operator::conditions;
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    );
    // The status as the reconcile writes it: computed, conditions merged over the previous ones.
    let written = |previous: Option<&microplane_crds::MicroServiceStatus>, generation: i64, d: &Deployment| {
        let (mut s, wanted) = status::compute(
            previous,
            Some(generation),
            Some("img:1"),
            None,
            Some(&Rollout::of(d)),
            None,
        );
        s.conditions = conditions::merge(
            previous.map_or(&[][..], |p| &p.conditions),
            &conditions::kstatus(wanted),
            Some(generation),
            &now,
        );
        s
    };
    let first = written(None, 5, &deployment(3, 1, 1, 3));
    assert_eq!(first.phase, Some(Phase::Deploying));
    // One more pod available: messages and counts only.
    let more = written(Some(&first), 5, &deployment(3, 2, 2, 3));
    assert_ne!(first, more, "the counts did move");
    assert!(status::progress_only(&first, &more));
    // Rolled out: the phase and Ready's status change — never held.
    let done = written(Some(&more), 5, &deployment(3, 3, 3, 3));
    assert!(!status::progress_only(&more, &done));
    // A new generation must be observed at once, even with the same counts.
    let next = written(Some(&more), 6, &deployment(3, 2, 2, 3));
    assert!(!status::progress_only(&more, &next));
    // A new image, or a reason that asks for action, is news too.
    let mut other_image = more.clone();
    other_image.image = Some("img:2".into());
    assert!(!status::progress_only(&more, &other_image));
    let (mut failing, wanted) = status::compute(
        Some(&more),
        Some(5),
        Some("img:1"),
        None,
        Some(&Rollout::of(&deployment(3, 2, 2, 3))),
        Some(&status::PodProblem {
            reason: microplane_crds::Reason::CrashLoopBackOff,
            message: "pod x container y: CrashLoopBackOff".into(),
        }),
    );
    failing.conditions = conditions::merge(&more.conditions, &conditions::kstatus(wanted), Some(5), &now);
    assert!(!status::progress_only(&more, &failing));
}
