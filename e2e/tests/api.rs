//! The microplane.dev API on the real API server: CRDs install and become Established, `kubectl
//! explain` prints the field docs, every validation rule rejects bad objects with its message, and the
//! samples apply cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use kube::api::{Api, DynamicObject};
use microplane_e2e::{Cluster, TestNamespace, install_crds, repo_root, unique_name};
use tokio::sync::OnceCell;

static CRDS: OnceCell<()> = OnceCell::const_new();

/// A connection for this test (each test has its own runtime, so clients are not shared), with the
/// CRDs installed once per run.
async fn cluster() -> Cluster {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    CRDS.get_or_init(|| async {
        install_crds(&c, Duration::from_secs(30))
            .await
            .expect("CRDs become Established");
    })
    .await;
    c
}

#[tokio::test]
async fn crds_are_established_with_names_and_categories() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let c = &cluster().await;
    let api: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    for name in [
        "microservices.microplane.dev",
        "tenants.microplane.dev",
        "configs.microplane.dev",
        "authrules.microplane.dev",
    ] {
        let crd = api.get(name).await.unwrap();
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
    }
    // Short names and the category resolve through discovery, as kubectl users type them.
    let (ok, out, err) = c
        .kubectl(&["api-resources", "--api-group=microplane.dev", "-o", "wide"], None)
        .unwrap();
    assert!(ok, "{err}");
    for needle in ["ms", "mns", "tenant", "mcfg", "rule", "microplane"] {
        assert!(
            out.split_whitespace().any(|w| w.split(',').any(|x| x == needle)),
            "api-resources lacks {needle}:\n{out}"
        );
    }
}

#[tokio::test]
async fn kubectl_explain_prints_field_docs() {
    let c = &cluster().await;
    // Discovery caches may lag the CRD by a moment; explain reads the published OpenAPI.
    let mut last = String::new();
    for _ in 0..50 {
        let (ok, out, err) = c.kubectl(&["explain", "microservice.spec.source.git"], None).unwrap();
        if ok && out.contains("pollInterval") {
            assert!(out.contains("Repository URL"), "url doc missing:\n{out}");
            assert!(
                out.contains("at most one of `branch`, `tag`, `commit`"),
                "ref doc missing:\n{out}"
            );
            assert!(
                out.contains("ssh without pinned host keys is refused"),
                "secretRef doc missing:\n{out}"
            );
            return;
        }
        last = format!("{out}{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("kubectl explain never printed the docs:\n{last}");
}

/// (what, manifest, message the user must see)
const REJECTIONS: &[(&str, &str, &str)] = &[
    (
        "a poll interval that hammers the git host",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: pollfast}
spec: {source: {git: {url: "https://example.com/a/b", pollInterval: 1ms}}}"#,
        "pollInterval must be at least 5s",
    ),
    (
        "image and source",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: both}
spec: {image: "nginx:1", source: {git: {url: "https://example.com/a/b"}}}"#,
        "exactly one of spec.image or spec.source must be set",
    ),
    (
        "neither image nor source",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: neither}
spec: {port: 8080}"#,
        "exactly one of spec.image or spec.source must be set",
    ),
    (
        "ftp git url",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: badurl}
spec: {source: {git: {url: "ftp://example.com/repo"}}}"#,
        "url must be https://host/path, ssh://host/path or git@host:path",
    ),
    (
        "credentials in the git url",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: badurl3}
spec: {source: {git: {url: "https://x-access-token:ghp_secret@github.com/acme/repo"}}}"#,
        "credentials in the url are refused",
    ),
    (
        "plain host as git url",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: badurl2}
spec: {source: {git: {url: "github.com/acme/repo"}}}"#,
        "url must be https://host/path",
    ),
    (
        "branch and tag",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: tworefs}
spec: {source: {git: {url: "https://example.com/a/b", ref: {branch: main, tag: v1}}}}"#,
        "at most one of ref.branch, ref.tag and ref.commit may be set",
    ),
    (
        "non-hex commit",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: badcommit}
spec: {source: {git: {url: "https://example.com/a/b", ref: {commit: "zzzzzzz"}}}}"#,
        "commit must be 7 to 40 hexadecimal characters",
    ),
    (
        "short commit",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: shortcommit}
spec: {source: {git: {url: "https://example.com/a/b", ref: {commit: "abc12"}}}}"#,
        "commit must be 7 to 40 hexadecimal characters",
    ),
    (
        "absolute path",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: abspath}
spec: {source: {git: {url: "https://example.com/a/b", path: "/etc"}}}"#,
        "path must be relative to the repository root and must not contain '..'",
    ),
    (
        "path with ..",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: dotdot}
spec: {source: {git: {url: "https://example.com/a/b", path: "services/../../etc"}}}"#,
        "path must be relative to the repository root and must not contain '..'",
    ),
    (
        "replicas over 1000",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: toomany}
spec: {image: "nginx:1", replicas: 1001}"#,
        "spec.replicas: Invalid value: 1001: spec.replicas in body should be less than or equal to 1000",
    ),
    (
        "negative replicas",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: negative}
spec: {image: "nginx:1", replicas: -1}"#,
        "spec.replicas in body should be greater than or equal to 0",
    ),
    (
        "port 0",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: port0}
spec: {image: "nginx:1", port: 0}"#,
        "spec.port in body should be greater than or equal to 1",
    ),
    (
        "port 70000",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: port70000}
spec: {image: "nginx:1", port: 70000}"#,
        "spec.port in body should be less than or equal to 65535",
    ),
    (
        "autoscaling min > max",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: minmax}
spec: {image: "nginx:1", autoscaling: {minReplicas: 5, maxReplicas: 2}}"#,
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ),
    (
        "protocol not an enum value",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: MicroService
metadata: {name: proto}
spec: {image: "nginx:1", protocol: Tcp}"#,
        "Unsupported value: \"Tcp\": supported values: \"Grpc\", \"Http\"",
    ),
    (
        "config data a string",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Config
metadata: {name: strdata}
spec: {data: "greeting=hello"}"#,
        "spec.data: Invalid value: \"string\": spec.data in body must be of type object",
    ),
    (
        "config data a list",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Config
metadata: {name: listdata}
spec: {data: [1, 2]}"#,
        "spec.data in body must be of type object",
    ),
    (
        "config secrets with one path twice",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Config
metadata: {name: duppath}
spec: {secrets: [{path: a.b, secretKeyRef: {name: s, key: k}}, {path: a.b, secretKeyRef: {name: s, key: j}}]}"#,
        "secrets[].path must be unique",
    ),
    (
        "authrule access Maybe",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: AuthRule
metadata: {name: maybe}
spec: {resource: {name: helloworld}, scope: "", access: Maybe}"#,
        "Unsupported value: \"Maybe\": supported values: \"Granted\", \"Denied\"",
    ),
    (
        "authrule bad endpoint",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: AuthRule
metadata: {name: badendpoint}
spec: {resource: {name: helloworld, endpoint: "Hello world"}, scope: "", access: Granted}"#,
        "resource.endpoint must be *, an endpoint such as Helloworld.Call",
    ),
    (
        "authrule without scope",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: AuthRule
metadata: {name: noscope}
spec: {resource: {name: helloworld}, access: Granted}"#,
        "spec.scope: Required value",
    ),
    (
        "tenant host not a DNS name",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {hosts: ["Not_A_Host!"]}"#,
        "hosts must be DNS names",
    ),
    (
        "tenant host with empty label",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {hosts: ["api..example.com"]}"#,
        "hosts must be DNS names",
    ),
    (
        "tenant name not a DNS label",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT.with.dots}
spec: {}"#,
        "a tenant name must be a DNS label",
    ),
    (
        "issuer with jwksUri and jwks",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {auth: {issuers: [{issuer: "https://id.example.com", jwksUri: "https://id.example.com/jwks", jwks: "{}"}]}}"#,
        "exactly one of issuers[].jwksUri and issuers[].jwks must be set",
    ),
    (
        "issuer without audiences",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {auth: {issuers: [{issuer: "https://id.example.com", jwksUri: "https://id.example.com/jwks"}]}}"#,
        "issuers[].audiences must name the audiences (aud) of the tokens to accept",
    ),
    (
        "a reserved namespace as a tenant",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: kube-system}
spec: {adopt: true}"#,
        "this namespace belongs to the cluster or to Microplane and cannot be a tenant",
    ),
    (
        "credentials for any origin",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {cors: {allowedOrigins: ["*"], allowCredentials: true}}"#,
        "allowCredentials needs origins listed by name",
    ),
    (
        "tenant loginUrl not a URL",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {auth: {loginUrl: "javascript:alert(1)"}}"#,
        "loginUrl must be an absolute https:// or http:// URL",
    ),
    (
        "tenant loginUrl relative",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {auth: {loginUrl: "/login"}}"#,
        "loginUrl must be an absolute https:// or http:// URL",
    ),
    (
        "tenant loginUrl with a fragment",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {auth: {loginUrl: "https://login.example.com/#/in"}}"#,
        "loginUrl must be an absolute https:// or http:// URL",
    ),
    (
        "owner service account without namespace",
        r#"
apiVersion: microplane.dev/v1alpha1
kind: Namespace
metadata: {name: TENANT}
spec: {owners: [{kind: ServiceAccount, name: deployer}]}"#,
        "owners[].namespace is required for a ServiceAccount",
    ),
];

#[tokio::test]
async fn invalid_objects_are_rejected_with_their_message() {
    let c = &cluster().await;
    let ns = TestNamespace::new(c, "reject").await.unwrap();
    let mut failures = Vec::new();
    for (what, manifest, message) in REJECTIONS {
        let manifest = manifest.replace("TENANT", &unique_name("t"));
        match c.create_yaml(&manifest, &ns.name).await {
            Ok(obj) => failures.push(format!("{what}: accepted as {:?}", obj.metadata.name)),
            Err(microplane_e2e::Error::Kube(kube::Error::Api(status))) => {
                if status.code != 422 || !status.message.contains(message) {
                    failures.push(format!(
                        "{what}: got {} {:?}, want 422 containing {message:?}",
                        status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: unexpected error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rejections wrong:\n{}",
        failures.len(),
        REJECTIONS.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn kubectl_apply_shows_the_rule_message() {
    let c = &cluster().await;
    let ns = TestNamespace::new(c, "kubectl").await.unwrap();
    let manifest = "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {name: both}\nspec: {image: \"nginx:1\", source: {git: {url: \"https://example.com/a/b\"}}}\n";
    let (ok, _, err) = c
        .kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(manifest))
        .unwrap();
    assert!(!ok, "kubectl accepted an object with both image and source");
    assert!(
        err.contains("exactly one of spec.image or spec.source must be set"),
        "kubectl printed:\n{err}"
    );
}

/// The rules are not over-eager: every accepted form of each field applies.
#[tokio::test]
async fn valid_edge_cases_are_accepted() {
    let c = &cluster().await;
    let ns = TestNamespace::new(c, "accept").await.unwrap();
    let cases = [
        r#"{source: {git: {url: "git@github.com:acme/helloworld.git", ref: {commit: "0123abc"}}}}"#,
        r#"{source: {git: {url: "ssh://git.example.com/acme/helloworld.git", ref: {tag: v1.0.0}, path: services/helloworld}}}"#,
        r#"{source: {git: {url: "file:///srv/git/helloworld", ref: {commit: "0123456789abcdef0123456789abcdef01234567"}, path: "a/..b/c.."}}}"#,
        r#"{image: "localhost/microplane/helloworld:latest", replicas: 0, port: 65535}"#,
        r#"{image: "nginx:1", replicas: 1000, port: 1, autoscaling: {minReplicas: 3, maxReplicas: 3}}"#,
    ];
    for (i, spec) in cases.iter().enumerate() {
        let manifest = format!(
            "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {{name: ok-{i}}}\nspec: {spec}\n"
        );
        if let Err(e) = c.create_yaml(&manifest, &ns.name).await {
            panic!("valid spec {spec} rejected: {e}");
        }
    }
    let api: Api<microplane_crds::MicroService> = Api::namespaced(c.client.clone(), &ns.name);
    let ms = api.get("ok-3").await.unwrap();
    assert_eq!(
        ms.spec.protocol,
        microplane_crds::Protocol::Grpc,
        "protocol defaults to Grpc"
    );
    assert!(ms.spec.expose, "expose defaults to true");
}

#[tokio::test]
async fn samples_apply_cleanly() {
    let c = &cluster().await;
    let ns = TestNamespace::new(c, "samples").await.unwrap();
    let dir = repo_root().join("config/samples");
    let mut applied = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".yaml") || name == "kustomization.yaml" {
            continue;
        }
        // Cluster-scoped tenants get a unique name so parallel runs do not collide.
        let yaml = std::fs::read_to_string(&path)
            .unwrap()
            .replace("name: micro\n", &format!("name: {}\n", unique_name("sample")));
        let objs = c
            .apply_yaml(&yaml, Some(&ns.name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        applied += objs.len();
        for obj in objs
            .iter()
            .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Namespace"))
        {
            let api: Api<DynamicObject> =
                Api::all_with(c.client.clone(), &Cluster::api_resource::<microplane_crds::Namespace>());
            // Addressable by name (a plural of `namespaces` would 404 here), then removed.
            let name = obj.metadata.name.as_deref().unwrap();
            assert_eq!(api.get(name).await.unwrap().metadata.name.as_deref(), Some(name));
            api.delete(name, &Default::default()).await.unwrap();
        }
    }
    assert!(applied >= 6, "only {applied} sample objects applied");
}
