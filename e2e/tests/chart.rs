//! The Helm chart against the real API server: every documented values combination
//! (`charts/microplane/ci/*-values.yaml`) renders and passes a server-side dry run (schemas, CEL
//! rules, admission), with the real Gateway API and Prometheus Operator CRDs installed for the
//! HTTPRoute and ServiceMonitor; the rendered output holds no Secret and is the same on every render
//! (GitOps tools render with `helm template`).
//!
//! helm is `$HELM`, else the one `make controlplane` built (`$MICROPLANE_CACHE/helm-v$HELM_VERSION/helm`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use microplane_e2e::{Cluster, FIELD_MANAGER, TestNamespace, install_crds, repo_root, wait_for};
use tokio::sync::OnceCell;

static CRDS: OnceCell<()> = OnceCell::const_new();

fn chart() -> PathBuf {
    repo_root().join("charts/microplane")
}

/// A pinned version from e2e/versions.env.
fn version(key: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("e2e/versions.env")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} is not in e2e/versions.env"))
        .trim()
        .to_string()
}

fn helm() -> PathBuf {
    if let Some(bin) = std::env::var_os("HELM") {
        return bin.into();
    }
    let cache = std::env::var_os("MICROPLANE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache"));
            base.join("microplane")
        });
    let bin = cache.join(format!("helm-v{}", version("HELM_VERSION"))).join("helm");
    assert!(bin.is_file(), "missing {}: run make controlplane", bin.display());
    bin
}

/// The documented values combinations, sorted.
fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 9,
        "expected the documented ci values files, found {files:?}"
    );
    files
}

/// `helm template` of the chart with one values file; extra `--set`s after it.
fn render(values: &Path, namespace: &str, sets: &[String]) -> String {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "microplane"])
        .arg(chart())
        .args(["--namespace", namespace, "-f"])
        .arg(values);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "helm template -f {}: {}",
        values.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered documents, parsed.
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Directory of a module pinned by e2e/controlplane/chart-crds/go.mod, from the module cache
/// (`go mod download`, checked against that module's go.sum).
fn module_dir(module: &str) -> PathBuf {
    let out = Command::new("go")
        .args(["mod", "download", "-json", module])
        .current_dir(repo_root().join("e2e/controlplane/chart-crds"))
        .env("GOFLAGS", "-mod=readonly")
        .output()
        .expect("go is on PATH");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "go mod download {module}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(info["Error"].is_null(), "go mod download {module}: {}", info["Error"]);
    PathBuf::from(info["Dir"].as_str().expect("Dir"))
}

/// The Gateway API (standard channel) and ServiceMonitor CRDs, from their upstream modules.
fn third_party_crds() -> Vec<PathBuf> {
    let gateway_api = module_dir("sigs.k8s.io/gateway-api").join("config/crd/standard");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&gateway_api)
        .unwrap()
        .map(|e| e.unwrap().path())
        // The directory also holds a ValidatingAdmissionPolicy; only the CRDs are needed.
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("kind: CustomResourceDefinition")))
        .collect();
    files.sort();
    files.push(
        module_dir("github.com/prometheus-operator/prometheus-operator")
            .join("example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"),
    );
    files
}

/// A connection with the microplane.dev CRDs and the third-party CRDs installed once per run (they are
/// cluster-scoped and stay, like kwok nodes).
async fn cluster() -> Cluster {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    CRDS.get_or_init(|| async {
        install_crds(&c, Duration::from_secs(30))
            .await
            .expect("CRDs become Established");
        let api: Api<CustomResourceDefinition> = Api::all(c.client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for file in third_party_crds() {
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in documents(&text) {
                let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
                let name = crd.metadata.name.clone().unwrap();
                api.patch(&name, &params, &Patch::Apply(&crd))
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                wait_for(
                    &api,
                    &name,
                    kube::runtime::conditions::is_crd_established(),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
            }
        }
    })
    .await;
    c
}

#[tokio::test]
async fn every_ci_values_file_passes_a_server_side_dry_run() {
    let c = cluster().await;
    // The release and build namespaces exist for real (a dry run creates nothing, so objects inside a
    // namespace the same render creates would be refused); everything else is only dry-run.
    let release = TestNamespace::new(&c, "chart").await.unwrap();
    let builds = TestNamespace::new(&c, "chart-builds").await.unwrap();
    let mut failures = Vec::new();
    for values in ci_values() {
        let mut sets = vec![format!("build.namespace.name={}", builds.name)];
        // A fixed node port is cluster-wide, and the e2e tier's own release holds the dev values'
        // 30080: the dry run asks for a port nothing uses (the value's validation is the same).
        if std::fs::read_to_string(&values).is_ok_and(|v| v.contains("nodePort:")) {
            sets.push("gateway.service.nodePort=32767".into());
        }
        let yaml = render(&values, &release.name, &sets);
        let (ok, out, err) = c
            .kubectl(
                &[
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "--force-conflicts",
                    "--field-manager=microplane.dev/e2e-chart",
                    "-f",
                    "-",
                ],
                Some(&yaml),
            )
            .unwrap();
        if !ok {
            failures.push(format!("{}:\n{err}{out}", values.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "refused by the API server:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn renders_hold_no_secret_and_are_deterministic() {
    for values in ci_values() {
        let first = render(&values, "microplane-system", &[]);
        let second = render(&values, "microplane-system", &[]);
        assert_eq!(first, second, "{}: two renders differ", values.display());
        for doc in documents(&first) {
            assert_ne!(doc["kind"], "Secret", "{}: renders a Secret", values.display());
        }
    }
    // The dev values: the gateway authenticates with its projected ServiceAccount token, the operator
    // checks it with a TokenReview; no token is rendered anywhere.
    let dev = render(&chart().join("ci/dev-values.yaml"), "microplane-system", &[]);
    let docs = documents(&dev);
    let gateway = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "microplane-gateway")
        .expect("the gateway Deployment");
    let volumes = gateway["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let token = volumes
        .iter()
        .find_map(|v| v["projected"]["sources"][0]["serviceAccountToken"].as_object())
        .expect("a projected ServiceAccount token volume");
    assert_eq!(token["audience"], "microplane-sync");
    // The one Secret it mounts is the sync CA's, and of it only `ca.crt`: never the CA's or the
    // serving certificate's key, never a shared token.
    let secrets: Vec<&serde_json::Value> = volumes.iter().filter_map(|v| v.get("secret")).collect();
    assert_eq!(secrets.len(), 1, "the gateway mounts other Secrets: {secrets:?}");
    assert_eq!(secrets[0]["secretName"], "microplane-sync-tls");
    assert_eq!(
        secrets[0]["items"],
        serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]),
        "only the CA certificate"
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "microplane-operator")
        .expect("the operator's ClusterRole");
    assert!(
        role["rules"].as_array().unwrap().iter().any(
            |r| r["resources"][0] == "tokenreviews" && r["verbs"].as_array().unwrap().iter().any(|v| v == "create")
        ),
        "the operator cannot create TokenReviews"
    );
}
