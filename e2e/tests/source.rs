//! Source to running, end to end: a git repository served over loopback by `git http-backend`, the
//! operator resolving it with git2 and creating build Jobs, the dev build node (`microplane-builder`,
//! e2e/nodeagent) building them with cargo and pushing the image to the in-cluster registry, the
//! real node pulling it and running the Deployment's pods, called through the gateway. Bad sources
//! each end in `Ready=False` with their reason, with backoff, and leave other MicroServices alone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use microplane_crds::MicroService;
use microplane_e2e::gateway::{Gateway, poll, with_tenant};
use microplane_e2e::git::{self, GitServer};
use microplane_e2e::{Cluster, TestTenant, apply_helloworld, apply_microservice, microservice_pods, wait_for};
use serde_json::json;

/// A cold cargo build of helloworld on 2 shared cores takes minutes.
const BUILD: Duration = Duration::from_secs(900);
const T: Duration = Duration::from_secs(120);
/// The real node, where every pod but the builds runs.
const NODE: &str = "microplane-node";
/// The dev build node (e2e/scripts/nodeagent-up.sh).
const BUILDER: &str = "microplane-builder";

async fn setup(prefix: &str) -> (Cluster, Gateway, TestTenant) {
    with_tenant(prefix, json!({}), T)
        .await
        .expect("the e2e tier needs the control plane")
}

fn condition(ms: &MicroService, type_: &str) -> Option<(String, String, String)> {
    let st = ms.status.as_ref()?;
    st.conditions
        .iter()
        .find(|c| c.type_ == type_ && st.observed_generation == ms.metadata.generation)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn apply_source(c: &Cluster, ns: &str, name: &str, git: serde_json::Value) {
    apply_spec_source(c, ns, name, json!({ "git": git })).await;
}

/// Applies a MicroService whose `spec.source` is `source`.
async fn apply_spec_source(c: &Cluster, ns: &str, name: &str, source: serde_json::Value) {
    apply_microservice(c, ns, name, json!({ "source": source }))
        .await
        .unwrap();
}

/// Waits until `type_` has `status` and `reason` for the current generation; returns the object.
async fn wait_condition(
    c: &Cluster,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
    t: Duration,
) -> MicroService {
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), ns);
    let found = wait_for(
        &api,
        name,
        |m: Option<&MicroService>| {
            // A build that failed when it should not have ends the wait at once.
            let failed = m
                .and_then(|m| condition(m, "Ready"))
                .is_some_and(|(_, r, _)| r == "BuildFailed");
            failed && reason != "BuildFailed"
                || m.and_then(|m| condition(m, type_))
                    .is_some_and(|(s, r, _)| s == status && r == reason)
        },
        t,
    )
    .await;
    match found {
        Ok(ms) if condition(&ms, type_).is_some_and(|(s, r, _)| s == status && r == reason) => ms,
        Ok(ms) => panic!("{name}: the build failed: {:#?}", condition(&ms, "Ready")),
        Err(e) => {
            let now = api.get(name).await.ok().and_then(|m| m.status);
            panic!("{name}: {type_}={status}/{reason} not reached: {e}; status now: {now:#?}")
        }
    }
}

/// A repository on the server holding the helloworld source on `main`; its path and first commit.
async fn helloworld_repo(server: &GitServer, name: &str) -> (std::path::PathBuf, String) {
    let repo = server.create_repo(name).await.unwrap();
    let tree = tempfile::tempdir().unwrap();
    git::helloworld_source(tree.path()).unwrap();
    let first = git::commit_tree(&repo, "main", tree.path(), "helloworld")
        .await
        .unwrap();
    (repo, first)
}

fn lib_rs() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/helloworld/src/lib.rs")).unwrap()
}

/// The pods of a MicroService's Deployment that are not going away.
async fn service_pods(c: &Cluster, ns: &str, name: &str) -> Vec<Pod> {
    let mut pods = microservice_pods(c, ns, name).await.unwrap();
    pods.retain(|p| p.metadata.deletion_timestamp.is_none());
    pods
}

/// Asserts that the service's pods run `image` (`<registry>/<path>@sha256:…`) on the real node:
/// the container runtime pulled that very digest.
async fn assert_runs_on_the_node(c: &Cluster, ns: &str, name: &str, image: &str) {
    let (_, digest) = image.split_once('@').unwrap();
    let pods = service_pods(c, ns, name).await;
    assert!(!pods.is_empty(), "{name}: no pods");
    for p in &pods {
        let pod = p.metadata.name.clone().unwrap_or_default();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE), "{pod}");
        assert_eq!(spec.containers[0].image.as_deref(), Some(image), "{pod}");
        let st = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
        assert!(
            st.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
            "{pod}: {st:?}"
        );
        assert!(
            st.image_id.ends_with(digest),
            "{pod}: the runtime runs {}, not {digest}",
            st.image_id
        );
    }
}

async fn jobs_of(c: &Cluster, ns: &str, name: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(c.client.clone(), "microplane-builds");
    api.list(&ListParams::default().labels(&format!("microplane.dev/tenant={ns},microplane.dev/build-of={name}")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_git_source_builds_runs_follows_its_branch_and_rolls_back() {
    let (c, gw, ns) = setup("src-run").await;
    let server = GitServer::start().await.unwrap();
    let (repo, first) = helloworld_repo(&server, "helloworld").await;

    let started = Instant::now();
    // helloworld has a Dockerfile too, which `Auto` would pick; the dev node builds Rust only.
    apply_spec_source(
        &c,
        &ns,
        "helloworld",
        json!({"git": {"url": server.url("helloworld"), "ref": {"branch": "main"}, "path": "services/helloworld", "pollInterval": "2s"}, "build": {"strategy": "Rust"}}),
    )
    .await;
    let ms = wait_condition(&c, &ns, "helloworld", "Ready", "True", "Running", BUILD).await;
    let st = ms.status.clone().unwrap();
    assert_eq!(st.commit.as_deref(), Some(first.as_str()));
    let image = st.image.clone().unwrap();
    assert!(
        image.starts_with(&format!("localhost:5000/{ns}/helloworld@sha256:")),
        "{image}"
    );
    assert_eq!(st.phase, Some(microplane_crds::Phase::Running));
    assert_eq!(condition(&ms, "SourceReady").unwrap().0, "True");
    assert_eq!(
        condition(&ms, "BuildSucceeded").unwrap(),
        ("True".into(), "Built".into(), image.clone())
    );
    let r = gw
        .wait_status(&ns, "POST", "/helloworld/call", r#"{"name":"John"}"#, 200, T)
        .await
        .unwrap();
    assert_eq!(r.json(), json!({"message": "Hello John"}));
    println!(
        "source: apply → first call served (first build of this repository in this run; the build node's cargo cache may be warm from earlier runs): {:?}",
        started.elapsed()
    );
    assert_eq!(jobs_of(&c, &ns, "helloworld").await.len(), 1);
    // The build ran on the build node; the image it pushed runs on the real node.
    let builds: Api<Pod> = Api::namespaced(c.client.clone(), "microplane-builds");
    let build_pods = builds
        .list(&ListParams::default().labels(&format!(
            "microplane.dev/tenant={ns},microplane.dev/build-of=helloworld"
        )))
        .await
        .unwrap()
        .items;
    assert!(!build_pods.is_empty());
    for p in &build_pods {
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some(BUILDER));
    }
    assert_runs_on_the_node(&c, &ns, "helloworld", &image).await;

    // A pushed commit is followed (pollInterval), built and rolled out with no manual step.
    let howdy = lib_rs().replace(
        "pub const DEFAULT_GREETING: &str = \"Hello\";",
        "pub const DEFAULT_GREETING: &str = \"Howdy\";",
    );
    assert!(howdy.contains("\"Howdy\""), "the greeting constant moved");
    let pushed = Instant::now();
    let second = git::commit_file(
        &repo,
        "main",
        "services/helloworld/src/lib.rs",
        howdy.as_bytes(),
        "howdy",
    )
    .await
    .unwrap();
    let says = |greeting: &'static str| {
        move |r: &microplane_e2e::gateway::Reply| r.status == 200 && r.json() == json!({ "message": greeting })
    };
    let john = || gw.call(&ns, "POST", "/helloworld/call", r#"{"name":"John"}"#);
    poll(BUILD, john, says("Howdy John"))
        .await
        .unwrap_or_else(|r| panic!("the new greeting was never served: {} {}", r.status, r.body));
    println!(
        "source: pushed commit → new version served (warm build cache): {:?}",
        pushed.elapsed()
    );
    let ms = wait_condition(&c, &ns, "helloworld", "Ready", "True", "Running", T).await;
    let st = ms.status.clone().unwrap();
    assert_eq!(st.commit.as_deref(), Some(second.as_str()));
    assert_eq!(st.builds.len(), 2, "{:?}", st.builds);
    assert_eq!(st.builds[0].commit, second);

    // A commit that does not compile: BuildFailed with the compiler's words, the running version kept.
    let broken = git::commit_file(
        &repo,
        "main",
        "services/helloworld/src/lib.rs",
        format!("{howdy}\nfn broken() -> u32 {{ \"not a number\" }}\n").as_bytes(),
        "broken",
    )
    .await
    .unwrap();
    let ms = wait_condition(&c, &ns, "helloworld", "Ready", "False", "BuildFailed", BUILD).await;
    let (_, _, message) = condition(&ms, "Ready").unwrap();
    assert!(message.contains(&broken[..12]), "{message}");
    assert!(
        message.contains("mismatched types") || message.contains("error"),
        "{message}"
    );
    assert!(message.len() < 2500, "bounded: {} bytes", message.len());
    assert_eq!(
        condition(&ms, "Available").unwrap().0,
        "True",
        "the previous version still runs"
    );
    assert_eq!(ms.status.as_ref().unwrap().commit.as_deref(), Some(second.as_str()));
    let r = gw.call(&ns, "POST", "/helloworld/call", r#"{"name":"John"}"#);
    assert_eq!(r.json(), json!({"message": "Howdy John"}));

    // Pinning the first commit rolls back to its image without building again.
    let jobs_before = jobs_of(&c, &ns, "helloworld").await.len();
    let pinned = Instant::now();
    apply_spec_source(
        &c,
        &ns,
        "helloworld",
        json!({"git": {"url": server.url("helloworld"), "ref": {"commit": first.clone()}, "path": "services/helloworld"}, "build": {"strategy": "Rust"}}),
    )
    .await;
    let ms = wait_condition(&c, &ns, "helloworld", "Ready", "True", "Running", T).await;
    assert_eq!(ms.status.as_ref().unwrap().commit.as_deref(), Some(first.as_str()));
    assert_eq!(ms.status.as_ref().unwrap().image.as_deref(), Some(image.as_str()));
    poll(T, john, says("Hello John"))
        .await
        .unwrap_or_else(|r| panic!("rollback not served: {} {}", r.status, r.body));
    println!("source: pinned an older commit → served: {:?}", pinned.elapsed());
    assert_eq!(jobs_of(&c, &ns, "helloworld").await.len(), jobs_before, "no new build");

    // Another service from the same repository, with the git and build caches warm.
    let started = Instant::now();
    apply_spec_source(
        &c,
        &ns,
        "hello-two",
        json!({"git": {"url": server.url("helloworld"), "ref": {"commit": second.clone()}, "path": "services/helloworld"}, "build": {"strategy": "Rust"}}),
    )
    .await;
    let r = gw
        .wait_status(
            &ns,
            "POST",
            "/hello-two/helloworld/call",
            r#"{"name":"Two"}"#,
            200,
            BUILD,
        )
        .await
        .unwrap();
    assert_eq!(r.json(), json!({"message": "Howdy Two"}));
    println!(
        "source: apply → first call served (warm caches): {:?}",
        started.elapsed()
    );
}

/// Every bad source ends in `Ready=False` with its reason; a working MicroService of the same
/// tenant is unaffected.
#[tokio::test]
async fn bad_sources_say_why_and_back_off() {
    let (c, gw, ns) = setup("src-bad").await;
    apply_helloworld(&c, &ns, "neighbour", 1).await.unwrap();
    let server = GitServer::start().await.unwrap();
    let (repo, _) = helloworld_repo(&server, "app").await;
    git::commit_file(&repo, "main", "docs/README.md", b"docs\n", "docs")
        .await
        .unwrap();
    let url = server.url("app");

    let cases = [
        (
            "unreachable",
            json!({"url": "http://127.0.0.1:1/nothing.git"}),
            "SourceUnreachable",
            "cannot fetch",
        ),
        (
            "no-branch",
            json!({"url": url, "ref": {"branch": "nope"}}),
            "RevisionNotFound",
            "branch nope not found",
        ),
        (
            "no-tag",
            json!({"url": url, "ref": {"tag": "v9"}}),
            "RevisionNotFound",
            "tag v9 not found",
        ),
        (
            "no-commit",
            json!({"url": url, "ref": {"commit": "0123456789abcdef"}}),
            "RevisionNotFound",
            "commit 0123456789abcdef not found",
        ),
        (
            "no-path",
            json!({"url": url, "path": "services/missing"}),
            "PathNotFound",
            "services/missing does not exist",
        ),
        (
            "nothing",
            json!({"url": url, "path": "docs"}),
            "NothingToBuild",
            "looked for Dockerfile, Cargo.toml and go.mod in docs",
        ),
        (
            "no-repo",
            json!({"url": server.url("missing")}),
            "SourceUnreachable",
            "missing",
        ),
        (
            "ssh",
            json!({"url": "ssh://git@127.0.0.1:1/app.git"}),
            "HostKeyNotPinned",
            "known_hosts",
        ),
        (
            "no-secret",
            json!({"url": url, "secretRef": {"name": "absent"}}),
            "SecretNotFound",
            "Secret absent",
        ),
    ];
    for (name, git, _, _) in &cases {
        apply_source(&c, &ns, name, git.clone()).await;
    }
    for (name, _, reason, words) in &cases {
        let ms = wait_condition(&c, &ns, name, "Ready", "False", reason, T).await;
        let (_, _, message) = condition(&ms, "SourceReady").unwrap();
        assert!(message.contains(words), "{name}: {message}");
        // An unreachable source may come back: it is retried (Resolving, Reconciling=True); the
        // others wait for a change to the object (Failed, Stalled=True).
        let (phase, kstatus) = if *reason == "SourceUnreachable" {
            (microplane_crds::Phase::Resolving, "Reconciling")
        } else {
            (microplane_crds::Phase::Failed, "Stalled")
        };
        assert_eq!(ms.status.as_ref().unwrap().phase, Some(phase), "{name}");
        let (status, why, _) = condition(&ms, kstatus).unwrap_or_else(|| panic!("{name}: no {kstatus}"));
        assert_eq!((status.as_str(), why.as_str()), ("True", *reason), "{name}: {kstatus}");
    }
    // Paths that leave the repository never get past the API server.
    let api: Api<MicroService> = Api::namespaced(c.client.clone(), &ns);
    let escaping: MicroService = serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "MicroService", "metadata": {"name": "escape"},
        "spec": {"source": {"git": {"url": url, "path": "services/../../etc"}}}
    }))
    .unwrap();
    let e = api.create(&PostParams::default(), &escaping).await.unwrap_err();
    assert!(e.to_string().contains("must not contain '..'"), "{e}");

    // Backoff, not a hot loop: a source that keeps failing is asked again after 5 s, 10 s, 20 s…
    // Six of the failing sources reach this server, each attempt a few HTTP requests: at most two
    // attempts each in 12 s. (A loop at once per second would make hundreds.)
    let before = server.requests();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let asked = server.requests() - before;
    println!("source: {asked} requests in 12 s for 6 failing sources");
    assert!(
        asked <= 60,
        "{asked} requests in 12 s for 6 failing sources: no backoff"
    );

    // The neighbour is unaffected and serves.
    wait_condition(&c, &ns, "neighbour", "Ready", "True", "Running", T).await;
    let r = gw
        .wait_status(&ns, "POST", "/neighbour/helloworld/call", r#"{"name":"Ann"}"#, 200, T)
        .await
        .unwrap();
    assert_eq!(r.json(), json!({"message": "Hello Ann"}));

    // A fixed source recovers without being touched: the missing branch appears.
    let nope = git::commit_file(&repo, "nope", "go.mod", b"module nope\n", "nope")
        .await
        .unwrap();
    let ms = wait_condition(&c, &ns, "no-branch", "SourceReady", "True", "Resolved", T).await;
    let (_, _, message) = condition(&ms, "SourceReady").unwrap();
    assert!(message.contains(&nope), "{message}");
}

#[tokio::test]
async fn credentials_are_used_and_wrong_ones_refused() {
    let (c, _gw, ns) = setup("src-auth").await;
    let server = GitServer::start_with_basic_auth("builder", "right-password")
        .await
        .unwrap();
    let repo = server.create_repo("private").await.unwrap();
    git::commit_file(&repo, "main", "svc/go.mod", b"module svc\n", "go")
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &ns);
    for (name, password) in [("good", "right-password"), ("bad", "wrong-password")] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"username": "builder", "password": password}
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let url = server.url("private");
    apply_source(&c, &ns, "anonymous", json!({"url": url, "path": "svc"})).await;
    apply_source(
        &c,
        &ns,
        "wrong",
        json!({"url": url, "path": "svc", "secretRef": {"name": "bad"}}),
    )
    .await;
    apply_source(
        &c,
        &ns,
        "right",
        json!({"url": url, "path": "svc", "secretRef": {"name": "good"}}),
    )
    .await;
    let ms = wait_condition(&c, &ns, "anonymous", "Ready", "False", "AuthenticationFailed", T).await;
    assert!(condition(&ms, "Ready").unwrap().2.contains("needs credentials"));
    let ms = wait_condition(&c, &ns, "wrong", "Ready", "False", "AuthenticationFailed", T).await;
    let message = condition(&ms, "Ready").unwrap().2;
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!message.contains("wrong-password"));
    // The right credentials resolve; the build step gets a copy owned by the build Job.
    let ms = wait_condition(&c, &ns, "right", "SourceReady", "True", "Resolved", T).await;
    assert!(
        ms.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .all(|c| !c.message.contains("right-password"))
    );
    let jobs = jobs_of(&c, &ns, "right").await;
    assert_eq!(jobs.len(), 1);
    let job_name = jobs[0].metadata.name.clone().unwrap();
    let copies: Api<Secret> = Api::namespaced(c.client.clone(), "microplane-builds");
    let copy = wait_for(&copies, &format!("{job_name}-git"), |s: Option<&Secret>| s.is_some(), T)
        .await
        .unwrap();
    let owner = &copy.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", job_name.as_str()));
    // Go builds on the dev node need the go toolchain; the outcome (built or BuildFailed) is not
    // the point here: the Job ran the clone step with the credentials.
}
