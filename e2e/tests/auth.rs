//! Auth at the edge, end to end: tenants locked down, platform-issued tokens, named scopes, rules
//! changed live, cross-tenant tokens, and an external issuer whose JWKS the test serves on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use microplane_crds::AuthRule;
use microplane_e2e::gateway::{Gateway, Reply, request};
use microplane_e2e::{Cluster, apply_helloworld, create_tenant, install_crds};
use microplane_gateway::auth::token::{Claims, SigningKey};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

async fn setup(prefix: &str, spec: serde_json::Value) -> (Cluster, Gateway, String) {
    let c = Cluster::connect().await.expect("the e2e tier needs the control plane");
    install_crds(&c, Duration::from_secs(30)).await.unwrap();
    let gw = Gateway::ensure(&c).await.unwrap();
    let ns = create_tenant(&c, prefix, spec, T).await.unwrap();
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    (c, gw, ns)
}

async fn account(c: &Cluster, ns: &str, id: &str, secret: &str, scopes: &str) {
    let api: Api<Secret> = Api::namespaced(c.client.clone(), ns);
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": id}, "type": "microplane.dev/account",
        "stringData": {"secret": secret, "scopes": scopes}
    }))
    .unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
}

fn call(gw: &Gateway, ns: &str, token: Option<&str>) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Micro-Namespace", ns), ("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    request(&gw.addr, "POST", "/helloworld/call", &headers, r#"{"name":"Auth"}"#).unwrap()
}

async fn wait_call(gw: &Gateway, ns: &str, token: Option<&str>, status: u16) -> Reply {
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = call(gw, ns, token);
        if r.status == status {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {status}; last {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the token endpoint until the account is known (the snapshot carrying it has arrived).
async fn token(gw: &Gateway, ns: &str, id: &str, secret: &str) -> serde_json::Value {
    let body = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let path = format!("/{ns}/.well-known/token");
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = request(&gw.addr, "POST", &path, &headers, &body).unwrap();
        if r.status == 200 {
            return r.json();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn authenticated_tenant_needs_a_platform_token() {
    let (c, gw, ns) = setup("auth-locked", json!({"defaultAccess": "Authenticated"})).await;
    // Without a token: 401 in SPEC §7 JSON, before the service is even known.
    let r = wait_call(&gw, &ns, None, 401).await;
    assert_eq!(r.json()["code"], json!(401), "{}", r.body);
    let r = request(
        &gw.addr,
        "POST",
        "/nosuch/call",
        &[("Micro-Namespace", ns.as_str())],
        "{}",
    )
    .unwrap();
    assert_eq!(
        r.status, 401,
        "an anonymous caller cannot probe for services: {}",
        r.body
    );

    account(&c, &ns, "alice", "s3cret-alice-0123456789", "read").await;
    let tok = token(&gw, &ns, "alice", "s3cret-alice-0123456789").await;
    assert_eq!(tok["token_type"], json!("Bearer"));
    assert_eq!(tok["expires_in"], json!(900));
    let access = tok["access_token"].as_str().unwrap().to_string();
    let r = wait_call(&gw, &ns, Some(&access), 200).await;
    assert_eq!(r.json(), json!({"message": "Hello Auth"}));

    // The discovery document and JWKS describe the issuer that signed it.
    let disc = request(
        &gw.addr,
        "GET",
        &format!("/{ns}/.well-known/openid-configuration"),
        &[],
        "",
    )
    .unwrap()
    .json();
    assert!(disc["issuer"].as_str().unwrap().ends_with(&format!("/{ns}")), "{disc}");
    let jwks = request(&gw.addr, "GET", &format!("/{ns}/.well-known/jwks.json"), &[], "")
        .unwrap()
        .json();
    assert_eq!(jwks["keys"][0]["kty"], json!("EC"), "{jwks}");

    // Wrong secret, unknown id: the same 401.
    let path = format!("/{ns}/.well-known/token");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for body in [
        "client_id=alice&client_secret=wrong",
        "client_id=nobody&client_secret=s3cret-alice-0123456789",
    ] {
        let r = request(&gw.addr, "POST", &path, &form, body).unwrap();
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["detail"], json!("invalid client credentials"));
    }
    // The refresh token gives a new access token, and is no access token itself.
    let refresh = tok["refresh_token"].as_str().unwrap();
    let r = request(
        &gw.addr,
        "POST",
        &path,
        &form,
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(call(&gw, &ns, Some(refresh)).status, 401);
    // A tampered token is no token.
    let mut bad = access.clone();
    bad.pop();
    assert_eq!(call(&gw, &ns, Some(&bad)).status, 401);

    // A token of another tenant is no token here.
    let (c2, _, other) = setup("auth-other", json!({"defaultAccess": "Authenticated"})).await;
    account(&c2, &other, "bob", "s3cret-bob-0123456789", "").await;
    let foreign = token(&gw, &other, "bob", "s3cret-bob-0123456789").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_call(&gw, &other, Some(&foreign), 200).await.status, 200);
    assert_eq!(call(&gw, &ns, Some(&foreign)).status, 401);
}

#[tokio::test]
async fn named_scopes_and_live_rule_changes() {
    let (c, gw, ns) = setup("auth-scopes", json!({"defaultAccess": "None"})).await;
    account(&c, &ns, "reader", "s3cret-reader-0123456789", "read").await;
    account(&c, &ns, "admin", "s3cret-admin-0123456789", "admin").await;
    let reader = token(&gw, &ns, "reader", "s3cret-reader-0123456789").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = token(&gw, &ns, "admin", "s3cret-admin-0123456789").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // No rule at all: refused, 401 anonymous and 403 with an account.
    wait_call(&gw, &ns, None, 401).await;
    wait_call(&gw, &ns, Some(&reader), 403).await;

    let rules: Api<AuthRule> = Api::namespaced(c.client.clone(), &ns);
    let rule: AuthRule = serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "AuthRule", "metadata": {"name": "admins"},
        "spec": {"scope": "admin", "access": "Granted", "resource": {"type": "service", "name": "helloworld", "endpoint": "Helloworld.*"}}
    }))
    .unwrap();
    rules.create(&PostParams::default(), &rule).await.unwrap();
    let started = std::time::Instant::now();
    wait_call(&gw, &ns, Some(&admin), 200).await;
    println!("rule created → enforced: {:?}", started.elapsed());
    assert_eq!(call(&gw, &ns, Some(&reader)).status, 403);

    // Changed: the rule now admits the reader's scope.
    rules
        .patch(
            "admins",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"scope": "read"}})),
        )
        .await
        .unwrap();
    wait_call(&gw, &ns, Some(&reader), 200).await;
    assert_eq!(call(&gw, &ns, Some(&admin)).status, 403);

    // Deleted: refused again.
    rules.delete("admins", &DeleteParams::default()).await.unwrap();
    wait_call(&gw, &ns, Some(&reader), 403).await;
}

/// A JWKS server on loopback the test controls: serves `keys` until stopped.
async fn jwks_server(keys: serde_json::Value) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = keys.to_string();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/jwks"), h)
}

#[tokio::test]
async fn external_issuer_tokens_verify_with_fetched_keys() {
    let key = SigningKey::generate("ext-1").unwrap();
    let (uri, server) = jwks_server(json!({"keys": [key.public().to_jwk()]})).await;
    let issuer = format!("https://idp-{}.example", std::process::id());
    let (_c, gw, ns) = setup(
        "auth-ext",
        json!({"defaultAccess": "Authenticated", "auth": {"issuers": [
            {"issuer": issuer, "jwksUri": uri, "algorithms": ["ES256"], "scopesClaim": "scope"}
        ]}}),
    )
    .await;
    let now = microplane_gateway::auth::now_unix();
    let sign = |k: &SigningKey, iss: &str| {
        let claims = Claims {
            sub: "ext-user".into(),
            iss: iss.into(),
            exp: now + 600,
            iat: now,
            account_type: "user".into(),
            token_use: "access".into(),
            ..Default::default()
        };
        k.sign(&claims).unwrap()
    };
    let good = sign(&key, &issuer);
    let r = wait_call(&gw, &ns, Some(&good), 200).await;
    assert_eq!(r.json(), json!({"message": "Hello Auth"}));
    // A key the issuer does not publish, and an issuer the tenant does not trust.
    let stranger = SigningKey::generate("ext-1").unwrap();
    assert_eq!(call(&gw, &ns, Some(&sign(&stranger, &issuer))).status, 401);
    assert_eq!(call(&gw, &ns, Some(&sign(&key, "https://other.example"))).status, 401);
    // The JWKS server goes away: the fetched keys keep verifying.
    server.abort();
    for _ in 0..10 {
        assert_eq!(call(&gw, &ns, Some(&good)).status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
