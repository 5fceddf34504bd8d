//! A real GitOps loop: Flux's source-controller and kustomize-controller (host processes, built from
//! their Go modules; `e2e/scripts/flux-up.sh`) follow a git repository served over HTTP by the
//! suite, which holds a tenant and a MicroService. The Kustomizations wait (`wait: true`, kstatus)
//! for what they apply, so they turn Ready only once the MicroService is Ready; a pushed change is
//! applied, rolled out and still served through the gateway; a pushed MicroService that cannot
//! progress (it lists a Config that does not exist, so it is Stalled) fails the Kustomization's
//! health check, with the object named in its message.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use microplane_crds::{CondType, Reason};
use microplane_e2e::gateway::Gateway;
use microplane_e2e::git::{self, GitServer};
use microplane_e2e::gitops::{self, FLUX_NAMESPACE, Flux, condition, get_json, git_repository, kustomization};
use microplane_e2e::{Cluster, install_crds, unique_name};
use serde_json::Value;

const T: Duration = Duration::from_secs(180);
const V1: &str = "microplane.dev/v1alpha1";
const KS: &str = "kustomize.toolkit.fluxcd.io/v1";
const IMAGE: &str = "ghcr.io/microplane-dev/helloworld:0.1.0";

/// Deletes what the test made when dropped: the Kustomizations first (they prune what they
/// applied), then the GitRepository and the tenant.
struct Cleanup {
    c: Cluster,
    name: String,
    tenant: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let n = &self.name;
        for obj in [
            format!("kustomizations.kustomize.toolkit.fluxcd.io/{n}-apps"),
            format!("kustomizations.kustomize.toolkit.fluxcd.io/{n}-tenant"),
            format!("gitrepositories.source.toolkit.fluxcd.io/{n}"),
        ] {
            let _ = self.c.kubectl(
                &[
                    "delete",
                    "-n",
                    FLUX_NAMESPACE,
                    &obj,
                    "--wait=false",
                    "--ignore-not-found",
                ],
                None,
            );
        }
        let _ = self.c.kubectl(
            &[
                "delete",
                "tenants.microplane.dev",
                &self.tenant,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

fn tenant_yaml(tenant: &str) -> String {
    format!(
        "apiVersion: {V1}\nkind: Namespace\nmetadata:\n  name: {tenant}\nspec:\n  displayName: GitOps e2e\n  defaultAccess: Public\n"
    )
}

fn microservice_yaml(tenant: &str, name: &str, replicas: i32, config: &[&str]) -> String {
    let mut y = format!(
        "apiVersion: {V1}\nkind: MicroService\nmetadata:\n  name: {name}\n  namespace: {tenant}\nspec:\n  image: {IMAGE}\n  protocol: Grpc\n  port: 8080\n  replicas: {replicas}\n"
    );
    if !config.is_empty() {
        y.push_str("  config:\n");
        for c in config {
            y.push_str(&format!("    - {c}\n"));
        }
    }
    y
}

async fn kustomization_of(c: &Cluster, name: &str) -> Value {
    get_json(c, KS, "Kustomization", Some(FLUX_NAMESPACE), name)
        .await
        .unwrap()
        .unwrap_or_default()
}

/// The Kustomization has applied `sha` and its Ready condition for its generation says `status`.
fn at(ks: &Value, sha: &str, status: &str) -> bool {
    gitops::observed(ks)
        && ks["status"]["lastAttemptedRevision"]
            .as_str()
            .is_some_and(|r| r.ends_with(sha))
        && condition(ks, "Ready").is_some_and(|(s, _, _)| s == status)
}

fn ms_ready(ms: &Value) -> bool {
    gitops::observed(ms) && condition(ms, CondType::Ready).is_some_and(|(s, _, _)| s == "True")
}

/// Polls (every 200 ms) the apps Kustomization and then the MicroService until the Kustomization
/// is at `sha` with Ready `status`; once it says Ready=True for `sha`, the MicroService read after
/// it must be Ready for its current generation. Returns the last Kustomization.
async fn follow(c: &Cluster, name: &str, tenant: &str, sha: &str, status: &str) -> Value {
    let start = Instant::now();
    loop {
        let ks = kustomization_of(c, &format!("{name}-apps")).await;
        let ms = get_json(c, V1, "MicroService", Some(tenant), "helloworld")
            .await
            .unwrap()
            .unwrap_or_default();
        // Flux marks a Kustomization Ready for a revision only after its health checks passed.
        if at(&ks, sha, "True") {
            assert!(
                ms_ready(&ms),
                "the Kustomization is Ready but the MicroService is not: {ks:#}\n{ms:#}"
            );
        }
        if at(&ks, sha, status) {
            return ks;
        }
        assert!(
            start.elapsed() < T,
            "Kustomization {name}-apps not at {sha} with Ready={status} after {T:?}: {ks:#}\nsource-controller: {}\nkustomize-controller: {}",
            tail(&Flux::logs("source-controller")),
            tail(&Flux::logs("kustomize-controller")),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn commit(repo: &Path, file: &str, contents: &str, message: &str) -> String {
    git::commit_file(repo, "main", file, contents.as_bytes(), message)
        .await
        .unwrap()
}

#[tokio::test]
async fn flux_applies_waits_for_health_and_reports_failures() {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    let gw = Gateway::ensure(&c).await.unwrap();
    Flux::ensure(&c).await.unwrap();

    let name = unique_name("gitops");
    let tenant = unique_name("gitops-t");
    let _cleanup = Cleanup {
        c: c.clone(),
        name: name.clone(),
        tenant: tenant.clone(),
    };
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo(&name).await.unwrap();
    commit(&repo, "tenant/tenant.yaml", &tenant_yaml(&tenant), "tenant").await;
    let first = commit(
        &repo,
        "apps/helloworld.yaml",
        &microservice_yaml(&tenant, "helloworld", 1, &[]),
        "helloworld, one replica",
    )
    .await;

    // The tenant first (its core Namespace must exist before anything is applied into it), then
    // the services, each waiting for the health of what it applied.
    let objects = [
        git_repository(&name, &server.url(&name), "main", "5s"),
        kustomization(&format!("{name}-tenant"), &name, "./tenant", &[], "60s"),
        kustomization(
            &format!("{name}-apps"),
            &name,
            "./apps",
            &[&format!("{name}-tenant")],
            "60s",
        ),
    ];
    for o in &objects {
        c.apply_yaml(&o.to_string(), None).await.unwrap();
    }

    // Ready only once the MicroService is Ready; then the gateway serves it.
    follow(&c, &name, &tenant, &first, "True").await;
    let reply = gw
        .wait_status(&tenant, "POST", "/helloworld/call", r#"{"name":"GitOps"}"#, 200, T)
        .await
        .unwrap();
    assert_eq!(reply.json()["message"], "Hello GitOps", "{}", reply.body);

    // A change pushed to git: two replicas, applied, rolled out, still served.
    let second = commit(
        &repo,
        "apps/helloworld.yaml",
        &microservice_yaml(&tenant, "helloworld", 2, &[]),
        "helloworld, two replicas",
    )
    .await;
    follow(&c, &name, &tenant, &second, "True").await;
    let ms = get_json(&c, V1, "MicroService", Some(&tenant), "helloworld")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ms["spec"]["replicas"], 2);
    assert_eq!(ms["status"]["readyReplicas"], 2, "{ms:#}");
    let reply = gw.call(&tenant, "POST", "/helloworld/call", r#"{"name":"again"}"#);
    assert_eq!(reply.status, 200, "{}", reply.body);

    // A MicroService that cannot progress: the Kustomization's health check fails and names it,
    // while the healthy one keeps serving.
    let third = commit(
        &repo,
        "apps/broken.yaml",
        &microservice_yaml(&tenant, "broken", 1, &["nosuch"]),
        "broken: lists a Config that does not exist",
    )
    .await;
    let ks = follow(&c, &name, &tenant, &third, "False").await;
    let (_, reason, message) = condition(&ks, "Ready").unwrap();
    assert_eq!(reason, "HealthCheckFailed", "{ks:#}");
    assert!(message.contains(&format!("MicroService/{tenant}/broken")), "{message}");
    let broken = get_json(&c, V1, "MicroService", Some(&tenant), "broken")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        condition(&broken, CondType::Stalled).map(|c| c.1),
        Some(Reason::ConfigNotFound.to_string()),
        "{broken:#}"
    );
    let reply = gw.call(&tenant, "POST", "/helloworld/call", r#"{"name":"still"}"#);
    assert_eq!(reply.status, 200, "{}", reply.body);

    // A MicroService built from this same repository, whose build fails (a Cargo.toml cargo
    // cannot read): the Kustomization names it too, and its build says why.
    commit(
        &repo,
        "src/broken/Cargo.toml",
        "[package]\nname = \n",
        "a crate that does not build",
    )
    .await;
    // It takes the place of `broken` in the same file, so Flux prunes that one: its early failure
    // would otherwise be all the health check reports.
    let fourth = commit(
        &repo,
        "apps/broken.yaml",
        &format!(
            "apiVersion: {V1}\nkind: MicroService\nmetadata:\n  name: build-fails\n  namespace: {tenant}\nspec:\n  source:\n    git: {{url: \"{}\", ref: {{branch: main}}, path: src/broken}}\n    build: {{strategy: Rust}}\n",
            server.url(&name)
        ),
        "build-fails: built from src/broken",
    )
    .await;
    // The build runs and fails (Stalled, BuildFailed) ...
    let start = Instant::now();
    let failed = loop {
        let ms = get_json(&c, V1, "MicroService", Some(&tenant), "build-fails")
            .await
            .unwrap()
            .unwrap_or_default();
        if gitops::observed(&ms) && condition(&ms, CondType::Stalled).is_some_and(|(s, _, _)| s == "True") {
            break ms;
        }
        assert!(start.elapsed() < T, "build-fails never stalled: {ms:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        condition(&failed, CondType::Stalled).map(|c| c.1),
        Some(Reason::BuildFailed.to_string()),
        "{failed:#}"
    );
    // ... and the Kustomization's failure names it (Flux retries every 5 s).
    let start = Instant::now();
    loop {
        let ks = follow(&c, &name, &tenant, &fourth, "False").await;
        let (_, reason, message) = condition(&ks, "Ready").unwrap();
        assert_eq!(reason, "HealthCheckFailed", "{ks:#}");
        if message.contains(&format!("MicroService/{tenant}/build-fails")) {
            break;
        }
        assert!(
            start.elapsed() < T,
            "the Kustomization never named build-fails: {message}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let reply = gw.call(&tenant, "POST", "/helloworld/call", r#"{"name":"still"}"#);
    assert_eq!(reply.status, 200, "{}", reply.body);
}
