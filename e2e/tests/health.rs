//! Health for GitOps: Microplane's status read by the GitOps tools' own code. kstatus
//! (cli-utils' `status.Compute`, what Flux waits on) and the Argo CD Lua checks in
//! `config/argocd/` must say the same thing of every object: Current/Healthy when Ready,
//! InProgress/Progressing while the operator works (a rollout, a Config waiting for its Secret, a
//! generation not observed yet), Failed/Degraded when it cannot progress without a change (a
//! MicroService listing a Config that does not exist, a Config whose Secret is missing).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use microplane_crds::{CondType, Reason};
use microplane_e2e::gateway::with_tenant;
use microplane_e2e::gitops::{self, Verdict, argocd_health, condition, get_json, kstatus_one, observed};
use microplane_e2e::{Cluster, apply_helloworld, apply_microservice, node};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(120);
const V1: &str = "microplane.dev/v1alpha1";

/// Argo CD's word for each kstatus status.
fn argo_word(kstatus: &str) -> &'static str {
    match kstatus {
        "Current" => "Healthy",
        "InProgress" => "Progressing",
        "Failed" => "Degraded",
        _ => "?",
    }
}

/// Both verdicts on one snapshot, checked to agree.
fn verdicts(obj: &Value) -> (Verdict, Verdict) {
    let k = kstatus_one(obj).unwrap();
    let a = argocd_health(obj).unwrap();
    assert_eq!(
        argo_word(&k.status),
        a.status,
        "kstatus says {k}, Argo CD {a} of {obj:#}"
    );
    (k, a)
}

fn assert_verdicts(obj: &Value, kstatus: &str, argo: &str) -> (Verdict, Verdict) {
    let (k, a) = (kstatus_one(obj).unwrap(), argocd_health(obj).unwrap());
    assert_eq!(
        (k.status.as_str(), a.status.as_str()),
        (kstatus, argo),
        "kstatus {k}, Argo CD {a} of {obj:#}"
    );
    (k, a)
}

/// Polls the object every 50 ms until `done` holds of a snapshot (at most `timeout`); returns every
/// snapshot the operator had written a status for the current generation to, the last included.
async fn snapshots(
    c: &Cluster,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        if let Some(obj) = get_json(c, V1, kind, ns, name).await.unwrap() {
            let finished = done(&obj);
            seen.push(obj);
            if finished {
                return seen;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "{kind} {name} not done after {timeout:?}; last: {:#}",
            seen.last().cloned().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_verdict(c: &Cluster, kind: &str, ns: Option<&str>, name: &str, kstatus: &str) -> Value {
    let seen = snapshots(c, kind, ns, name, T, |o| {
        observed(o) && condition(o, CondType::Ready).is_some() && kstatus_one(o).unwrap().status == kstatus
    })
    .await;
    seen.into_iter().next_back().unwrap()
}

fn is_ready(o: &Value) -> bool {
    observed(o) && condition(o, CondType::Ready).is_some_and(|(s, _, _)| s == "True")
}

/// The checks against fixtures: every case kstatus and the Lua checks agree on, and the one place
/// they differ by design (no conditions at all: kstatus assumes Current, Argo CD waits).
#[test]
fn kstatus_and_argocd_agree_on_fixtures() {
    let cond = |t: CondType, s: &str, r: Reason| json!({"type": t.as_str(), "status": s, "reason": r.as_str(), "message": format!("{r} message")});
    let obj = |kind: &str, gen_: i64, observed: Option<i64>, conds: Vec<Value>, spec: Value| {
        let mut o = json!({
            "apiVersion": V1, "kind": kind,
            "metadata": {"name": "x", "namespace": "t", "generation": gen_},
            "spec": spec,
            "status": {"conditions": conds}
        });
        if let Some(g) = observed {
            o["status"]["observedGeneration"] = json!(g);
        }
        o
    };
    let ready = || vec![cond(CondType::Ready, "True", Reason::Running)];
    for kind in gitops::KINDS {
        let spec = json!({"replicas": 1});
        let cases = [
            (obj(kind, 1, Some(1), ready(), spec.clone()), "Current", "Healthy"),
            (
                obj(kind, 2, Some(1), ready(), spec.clone()),
                "InProgress",
                "Progressing",
            ),
            (
                obj(
                    kind,
                    1,
                    Some(1),
                    vec![
                        cond(CondType::Ready, "False", Reason::Deploying),
                        cond(CondType::Reconciling, "True", Reason::Deploying),
                    ],
                    spec.clone(),
                ),
                "InProgress",
                "Progressing",
            ),
            (
                obj(
                    kind,
                    1,
                    Some(1),
                    vec![
                        cond(CondType::Ready, "False", Reason::ConfigNotFound),
                        cond(CondType::Stalled, "True", Reason::ConfigNotFound),
                    ],
                    spec.clone(),
                ),
                "Failed",
                "Degraded",
            ),
            // Ready=False without either abnormal-true condition: kstatus reads it as in progress.
            (
                obj(
                    kind,
                    1,
                    Some(1),
                    vec![cond(CondType::Ready, "False", Reason::Pending)],
                    spec.clone(),
                ),
                "InProgress",
                "Progressing",
            ),
        ];
        for (o, k, a) in &cases {
            assert_verdicts(o, k, a);
        }
        // The Stalled message reaches both.
        let (k, a) = assert_verdicts(&cases[3].0, "Failed", "Degraded");
        assert!(k.message.contains("ConfigNotFound message"), "{k}");
        assert_eq!(a.message, "ConfigNotFound: ConfigNotFound message");
        // Being deleted: kstatus Terminating, Argo CD Progressing.
        let mut deleting = cases[0].0.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_verdicts(&deleting, "Terminating", "Progressing");
        // Nothing written yet: kstatus cannot tell and says Current; Argo CD waits for the operator.
        let mut fresh = cases[0].0.clone();
        fresh.as_object_mut().unwrap().remove("status");
        assert_verdicts(&fresh, "Current", "Progressing");
    }
    // A MicroService scaled to zero: Argo CD's Suspended.
    let zero = obj(
        "MicroService",
        1,
        Some(1),
        vec![cond(CondType::Ready, "True", Reason::ScaledToZero)],
        json!({"replicas": 0}),
    );
    assert_verdicts(&zero, "Current", "Suspended");
}

/// A MicroService on its way to Ready is InProgress/Progressing, then Current/Healthy; scaled
/// 1 → 2 it is InProgress/Progressing again until the second pod is available.
#[tokio::test]
async fn microservice_rollout_is_progressing_then_healthy() {
    let (c, _gw, tenant) = with_tenant("health-ms", json!({}), T).await.unwrap();
    apply_helloworld(&c, &tenant, "helloworld", 1).await.unwrap();
    let check = |seen: &[Value]| {
        let mut words = Vec::new();
        for o in seen.iter().filter(|o| condition(o, CondType::Ready).is_some()) {
            let (k, _) = verdicts(o);
            words.push(k.status);
        }
        words
    };
    let seen = snapshots(&c, "MicroService", Some(&tenant), "helloworld", T, is_ready).await;
    let words = check(&seen);
    assert!(
        words.iter().any(|w| w == "InProgress"),
        "never seen in progress: {words:?}"
    );
    assert_eq!(words.last().map(String::as_str), Some("Current"));
    let (_, a) = assert_verdicts(seen.last().unwrap(), "Current", "Healthy");
    assert!(a.message.contains("Running"), "{a}");

    apply_helloworld(&c, &tenant, "helloworld", 2).await.unwrap();
    let seen = snapshots(&c, "MicroService", Some(&tenant), "helloworld", T, |o| {
        is_ready(o) && o["status"]["readyReplicas"] == 2
    })
    .await;
    // The first snapshot after the apply is the new generation, not yet (or just) observed.
    assert_verdicts(&seen[0], "InProgress", "Progressing");
    let words = check(&seen);
    assert_eq!(words.last().map(String::as_str), Some("Current"), "{words:?}");
}

/// A MicroService listing a Config that does not exist is Stalled: Failed/Degraded with the reason.
#[tokio::test]
async fn missing_config_is_failed_and_degraded() {
    let (c, _gw, tenant) = with_tenant("health-bad", json!({}), T).await.unwrap();
    let image = node::helloworld("e2e").unwrap();
    apply_microservice(&c, &tenant, "helloworld", json!({"image": image, "config": ["nosuch"]}))
        .await
        .unwrap();
    let obj = wait_verdict(&c, "MicroService", Some(&tenant), "helloworld", "Failed").await;
    let (k, a) = assert_verdicts(&obj, "Failed", "Degraded");
    assert_eq!(
        condition(&obj, CondType::Stalled).map(|c| c.1),
        Some(Reason::ConfigNotFound.to_string()),
        "{obj:#}"
    );
    assert!(k.message.contains("nosuch"), "{k}");
    assert!(
        a.message.starts_with("ConfigNotFound: ") && a.message.contains("nosuch"),
        "{a}"
    );
}

/// A Config whose Secret is missing is Failed/Degraded and the MicroService that lists it waits
/// (InProgress/Progressing); once the Secret exists both are Current/Healthy. The tenant and an
/// AuthRule are Current/Healthy when Ready.
#[tokio::test]
async fn config_secret_tenant_and_authrule() {
    let (c, _gw, tenant) = with_tenant("health-cfg", json!({}), T).await.unwrap();
    let t = tenant.as_str();
    c.apply_yaml(
        &json!({
            "apiVersion": V1, "kind": "Config", "metadata": {"name": "helloworld"},
            "spec": {"data": {"helloworld": {"greeting": "Hello"}},
                     "secrets": [{"path": "helloworld.apiKey", "secretKeyRef": {"name": "hw-secrets", "key": "api-key"}}]}
        })
        .to_string(),
        Some(t),
    )
    .await
    .unwrap();
    let cfg = wait_verdict(&c, "Config", Some(t), "helloworld", "Failed").await;
    let (_, a) = assert_verdicts(&cfg, "Failed", "Degraded");
    assert!(a.message.contains("hw-secrets"), "{a}");

    let image = node::helloworld("e2e").unwrap();
    apply_microservice(&c, t, "helloworld", json!({"image": image, "config": ["helloworld"]}))
        .await
        .unwrap();
    let ms = snapshots(&c, "MicroService", Some(t), "helloworld", T, |o| {
        observed(o) && condition(o, CondType::Ready).is_some_and(|(_, r, _)| r == Reason::ConfigNotReady)
    })
    .await
    .pop()
    .unwrap();
    let (_, a) = assert_verdicts(&ms, "InProgress", "Progressing");
    assert!(a.message.starts_with("ConfigNotReady: "), "{a}");

    c.apply_yaml(
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hw-secrets"},
                "stringData": {"api-key": "e2e-not-a-secret"}})
        .to_string(),
        Some(t),
    )
    .await
    .unwrap();
    let cfg = wait_verdict(&c, "Config", Some(t), "helloworld", "Current").await;
    assert_verdicts(&cfg, "Current", "Healthy");
    let ms = wait_verdict(&c, "MicroService", Some(t), "helloworld", "Current").await;
    assert_verdicts(&ms, "Current", "Healthy");

    c.apply_yaml(
        &json!({"apiVersion": V1, "kind": "AuthRule", "metadata": {"name": "admin-only"},
                "spec": {"resource": {"type": "service", "name": "helloworld", "endpoint": "Admin.*"},
                         "scope": "admin", "access": "Granted", "priority": 10}})
        .to_string(),
        Some(t),
    )
    .await
    .unwrap();
    let rule = wait_verdict(&c, "AuthRule", Some(t), "admin-only", "Current").await;
    assert_verdicts(&rule, "Current", "Healthy");

    let tn = get_json(&c, V1, "Namespace", None, t).await.unwrap().unwrap();
    assert!(is_ready(&tn), "{tn:#}");
    assert_verdicts(&tn, "Current", "Healthy");
}

/// Git sources: one that cannot be fetched is retried (InProgress/Progressing); a branch that does
/// not exist, a directory with nothing to build and a build that fails are Stalled
/// (Failed/Degraded), each with its reason in both tools' messages.
#[tokio::test]
async fn git_sources_progressing_and_failed() {
    use microplane_e2e::git::{self, GitServer};
    let (c, _gw, tenant) = with_tenant("health-src", json!({}), T).await.unwrap();
    let t = tenant.as_str();
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo("app").await.unwrap();
    git::commit_file(&repo, "main", "docs/README.md", b"docs\n", "docs")
        .await
        .unwrap();
    // A manifest cargo refuses at once: the build runs and fails in seconds.
    git::commit_file(&repo, "main", "broken/Cargo.toml", b"[package]\nname = \n", "broken")
        .await
        .unwrap();
    let url = server.url("app");
    let cases = [
        (
            "unreachable",
            json!({"url": "http://127.0.0.1:1/nothing.git"}),
            "InProgress",
            Reason::SourceUnreachable,
        ),
        (
            "no-branch",
            json!({"url": url, "ref": {"branch": "nope"}}),
            "Failed",
            Reason::RevisionNotFound,
        ),
        (
            "nothing",
            json!({"url": url, "path": "docs"}),
            "Failed",
            Reason::NothingToBuild,
        ),
        (
            "broken",
            json!({"url": url, "path": "broken"}),
            "Failed",
            Reason::BuildFailed,
        ),
    ];
    for (name, git, _, _) in &cases {
        apply_microservice(&c, t, name, json!({"source": {"git": git}}))
            .await
            .unwrap();
    }
    for (name, _, kstatus, reason) in cases {
        let seen = snapshots(&c, "MicroService", Some(t), name, Duration::from_secs(300), |o| {
            observed(o) && condition(o, CondType::Ready).is_some_and(|(_, r, _)| r == reason)
        })
        .await;
        let obj = seen.last().unwrap();
        let (k, a) = assert_verdicts(obj, kstatus, argo_word(kstatus));
        assert!(a.message.starts_with(&format!("{reason}: ")), "{name}: {a}");
        // kstatus carries the condition's message (without the reason, on one line).
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let argo = a.message.strip_prefix(&format!("{reason}: ")).map(words);
        assert_eq!(Some(k.message.clone()), argo, "{name}");
    }
}
