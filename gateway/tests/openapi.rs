//! The explorer document (`/.well-known/openapi.json`, docs/explorer.md) for tenant `micro`
//! with the real helloworld proto and the kitchen-sink fixture: what the caller may call and no
//! more, every path routing back to its endpoint, and a document a real validator
//! (openapi-spec-validator, installed by e2e/scripts/deps.sh) accepts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use microplane_gateway::auth::token::{Claims, SigningKey};
use microplane_gateway::metrics::Metrics;
use microplane_gateway::state::{Gateway, Settings};
use microplane_gateway::{resolve, server, sync};
use microplane_wire::sync::v1;
use prost::Message as _;
use serde_json::Value;
use tokio::net::TcpListener;

const HELLOWORLD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/helloworld/proto");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn descriptors(key: &str, files: &[&str], service: &str) -> v1::Descriptors {
    v1::Descriptors {
        key: key.into(),
        file_descriptor_set: protox::compile(files, [HELLOWORLD, FIXTURES]).unwrap().encode_to_vec(),
        services: vec![service.into()],
    }
}

fn rule(id: &str, scope: &str, name: &str, endpoint: &str, priority: i32) -> v1::Rule {
    v1::Rule {
        id: id.into(),
        scope: scope.into(),
        r#type: "service".into(),
        name: name.into(),
        endpoint: endpoint.into(),
        priority,
        denied: false,
    }
}

async fn start(key: &SigningKey) -> std::net::SocketAddr {
    let grpc = |name: &str, descriptors: &str| v1::Service {
        tenant: "micro".into(),
        name: name.into(),
        protocol: v1::Protocol::Grpc as i32,
        endpoints: common::endpoints(&[common::any_port()]),
        descriptors: descriptors.into(),
        status: (name == "helloworld").then(|| v1::ServiceStatus {
            phase: "Running".into(),
            ready: true,
            reason: "Ready".into(),
            image: "registry.local/micro/helloworld@sha256:abc".into(),
            commit: "0123456789abcdef".into(),
            replicas: 2,
            ready_replicas: 2,
            build: Some(v1::Build {
                job: "helloworld-build-1".into(),
                commit: "0123456789abcdef".into(),
                state: "Succeeded".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let wire = v1::Snapshot {
        version: 3,
        source: "test".into(),
        tenants: vec![v1::Tenant {
            name: "micro".into(),
            issuer: "https://micro.issuer.test".into(),
            signing_keys: vec![v1::SigningKey {
                kid: key.kid.clone(),
                pkcs8: key.pkcs8_der(),
            }],
            rules: vec![
                rule("public-call", "", "helloworld", "Helloworld.Call", 10),
                rule("accounts", "*", "*", "*", 0),
            ],
            ..Default::default()
        }],
        services: vec![grpc("helloworld", "hw"), grpc("kitchen", "kitchen")],
        descriptors: vec![
            descriptors("hw", &["helloworld.proto"], "helloworld.Helloworld"),
            descriptors("kitchen", &["kitchen.proto"], "kitchen.Kitchens"),
        ],
        ..Default::default()
    };
    let gw = Arc::new(Gateway::new(
        Settings {
            access_log: false,
            ..Settings::default()
        },
        Metrics::new(),
    ));
    assert_eq!(sync::apply(&gw, &wire), Ok(true));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(gw, listener, std::future::pending()));
    addr
}

async fn get(addr: std::net::SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let (status, body) = common::Client::connect(addr).await.fetch(req, Bytes::new()).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn paths(doc: &Value) -> Vec<String> {
    doc["paths"].as_object().unwrap().keys().cloned().collect()
}

/// Validates `doc` with openapi-spec-validator; panics with its report when it refuses.
fn validate(doc: &Value, name: &str) {
    let validator = std::env::var("OPENAPI_SPEC_VALIDATOR").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../.state/tools/openapi/bin/openapi-spec-validator"
        )
        .into()
    });
    let dir = std::env::temp_dir().join(format!("openapi-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{validator}: {e} (e2e/scripts/deps.sh installs it)"));
    assert!(
        out.status.success(),
        "{name} refused by openapi-spec-validator:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_explorer_describes_what_the_caller_may_call_and_validates() {
    let key = SigningKey::generate("m1").unwrap();
    let addr = start(&key).await;

    // Anonymous: only the public endpoint, without a security requirement.
    let (status, anonymous) = get(addr, "GET", "/.well-known/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK, "{anonymous}");
    assert_eq!(paths(&anonymous), ["/helloworld/call"]);
    assert!(anonymous["paths"]["/helloworld/call"]["post"].get("security").is_none());
    // One tag per described service; its status only for the tenant's own accounts.
    assert_eq!(anonymous["tags"], serde_json::json!([{"name": "helloworld"}]));
    validate(&anonymous, "anonymous");

    // An account of the tenant: everything, the rest behind the bearer scheme.
    let now = microplane_gateway::auth::now_unix();
    let token = key
        .sign(&Claims {
            sub: "alice".into(),
            iss: "https://micro.issuer.test".into(),
            exp: now + 600,
            iat: now,
            account_type: "user".into(),
            token_use: "access".into(),
            ..Default::default()
        })
        .unwrap();
    let (status, full) = get(addr, "GET", "/micro/.well-known/openapi.json", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(
        paths(&full),
        [
            "/helloworld/call",
            "/helloworld/stream",
            "/kitchen/kitchens/cook",
            "/kitchen/kitchens/ping"
        ]
    );
    assert_eq!(
        full["paths"]["/kitchen/kitchens/cook"]["post"]["security"],
        serde_json::json!([{"bearer": []}])
    );
    validate(&full, "full");
    let tags = full["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 2, "{tags:?}");
    let status = &tags[0]["x-microplane-status"];
    assert_eq!(tags[0]["name"], "helloworld");
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["readyReplicas"], 2);
    assert_eq!(status["image"], "registry.local/micro/helloworld@sha256:abc");
    assert_eq!(status["build"]["state"], "Succeeded");
    assert!(
        status["build"].get("message").is_none(),
        "empty fields are left out: {status}"
    );
    // A service whose status the snapshot lacks has a bare tag.
    assert_eq!(tags[1], serde_json::json!({"name": "kitchen"}));

    // Every path routes back to the endpoint it describes.
    for path in paths(&full) {
        let op = &full["paths"][&path]["post"];
        let id = op["operationId"].as_str().unwrap();
        let resolved = resolve::resolve_path(&path).unwrap();
        assert_eq!(format!("{}.{}", resolved.service, resolved.endpoint), id);
    }
    // Messages in their JSON form: lowerCamel names, 64-bit integers as strings, enums by name,
    // maps, repeated and well-known types.
    let schemas = &full["components"]["schemas"];
    assert_eq!(
        full["paths"]["/helloworld/call"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/helloworld.CallRequest"
    );
    assert_eq!(
        schemas["helloworld.CallRequest"]["properties"]["name"]["type"],
        "string"
    );
    let kitchen = &schemas["kitchen.Kitchen"]["properties"];
    assert!(kitchen.as_object().unwrap().len() > 10, "{kitchen}");
    let stream = &full["paths"]["/helloworld/stream"]["post"]["responses"]["200"]["content"];
    assert!(stream.get("application/x-ndjson").is_some(), "{stream}");

    // A method other than GET is refused with the gateway's JSON error.
    let (status, err) = get(addr, "POST", "/.well-known/openapi.json", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(err["detail"].as_str().unwrap().contains("GET"), "{err}");
}
