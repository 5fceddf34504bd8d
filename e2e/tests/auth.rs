//! Auth at the edge, end to end: tenants locked down, platform-issued tokens, named scopes, rules
//! changed live, cross-tenant tokens, an external issuer whose JWKS the test serves on loopback (and
//! rotates, then takes away), and the login redirect of browsers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use microplane_crds::AuthRule;
use microplane_e2e::gateway::{Gateway, Reply, poll, request, with_tenant};
use microplane_e2e::{Cluster, apply_helloworld};
use microplane_gateway::auth::token::{Audience, Claims, SigningKey};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

async fn setup(prefix: &str, spec: serde_json::Value) -> (Cluster, Gateway, microplane_e2e::TestTenant) {
    let (c, gw, ns) = with_tenant(prefix, spec, T)
        .await
        .expect("the e2e tier needs the control plane");
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
    poll(T, || call(gw, ns, token), |r| r.status == status)
        .await
        .unwrap_or_else(|r| panic!("never {status}; last {} {}", r.status, r.body))
}

/// Polls the token endpoint until the account is known (the snapshot carrying it has arrived).
async fn token(gw: &Gateway, ns: &str, id: &str, secret: &str) -> serde_json::Value {
    let body = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let path = format!("/{ns}/.well-known/token");
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    poll(
        T,
        || request(&gw.addr, "POST", &path, &headers, &body).unwrap(),
        |r| r.status == 200,
    )
    .await
    .unwrap_or_else(|r| panic!("no token: {} {}", r.status, r.body))
    .json()
}

#[tokio::test]
async fn authenticated_tenant_needs_a_platform_token() {
    let (c, gw, ns) = setup("auth-locked", json!({"defaultAccess": "Authenticated"})).await;
    // Without a token: 401 in docs/gateway.md#errors JSON, before the service is even known.
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

    // A token of another tenant is a foreign account here (docs/auth.md#foreign-accounts): the Authenticated default
    // (a `*` rule) refuses it at once with 403 — neither served nor taken for anonymous — and a
    // `+` rule ("any valid account of any tenant") admits it.
    let (c2, _, other) = setup("auth-other", json!({"defaultAccess": "Authenticated"})).await;
    account(&c2, &other, "bob", "s3cret-bob-0123456789", "").await;
    let foreign = token(&gw, &other, "bob", "s3cret-bob-0123456789").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_call(&gw, &other, Some(&foreign), 200).await.status, 200);
    let r = call(&gw, &ns, Some(&foreign));
    assert_eq!(r.status, 403, "{}", r.body);
    let rules: Api<AuthRule> = Api::namespaced(c.client.clone(), &ns);
    let any_tenant: AuthRule = serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "AuthRule", "metadata": {"name": "any-tenant"},
        "spec": {"scope": "+", "access": "Granted", "priority": 10, "resource": {"type": "service", "name": "helloworld", "endpoint": "*"}}
    }))
    .unwrap();
    rules.create(&PostParams::default(), &any_tenant).await.unwrap();
    let r = wait_call(&gw, &ns, Some(&foreign), 200).await;
    assert_eq!(r.json(), json!({"message": "Hello Auth"}));
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

/// A JWKS server on the host address pods reach, which the test controls: serves the key set last `set` until stopped.
struct JwksServer {
    uri: String,
    keys: std::sync::Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: serde_json::Value) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((microplane_e2e::host_ip(), 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::sync::Arc::new(std::sync::Mutex::new(keys.to_string()));
        let current = served.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let body = current.lock().unwrap().clone();
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
        Self {
            uri: format!("http://{addr}/jwks"),
            keys: served,
            task,
        }
    }

    /// Serves `keys` from now on.
    fn set(&self, keys: serde_json::Value) {
        *self.keys.lock().unwrap() = keys.to_string();
    }

    /// Stops listening: connections are refused from now on.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn jwks(keys: &[&SigningKey]) -> serde_json::Value {
    json!({"keys": keys.iter().map(|k| k.public().to_jwk()).collect::<Vec<_>>()})
}

/// An access token of `iss` signed by `k`.
fn external_token(k: &SigningKey, iss: &str) -> String {
    let now = microplane_gateway::auth::now_unix();
    let claims = Claims {
        sub: "ext-user".into(),
        iss: iss.into(),
        exp: now + 600,
        iat: now,
        account_type: "user".into(),
        token_use: "access".into(),
        aud: Some(Audience::One("microplane-e2e".into())),
        ..Default::default()
    };
    k.sign(&claims).unwrap()
}

async fn external_tenant(prefix: &str, issuer: &str, uri: &str) -> (Cluster, Gateway, microplane_e2e::TestTenant) {
    setup(
        prefix,
        json!({"defaultAccess": "Authenticated", "auth": {"issuers": [
            {"issuer": issuer, "jwksUri": uri, "algorithms": ["ES256"], "audiences": ["microplane-e2e"], "scopesClaim": "scope"}
        ]}}),
    )
    .await
}

#[tokio::test]
async fn external_issuer_tokens_verify_with_fetched_keys() {
    let key = SigningKey::generate("ext-1").unwrap();
    let server = JwksServer::start(jwks(&[&key])).await;
    let issuer = format!("https://idp-{}.example", std::process::id());
    let (_c, gw, ns) = external_tenant("auth-ext", &issuer, &server.uri).await;
    let good = external_token(&key, &issuer);
    let r = wait_call(&gw, &ns, Some(&good), 200).await;
    assert_eq!(r.json(), json!({"message": "Hello Auth"}));
    // A key the issuer does not publish, and an issuer the tenant does not trust.
    let stranger = SigningKey::generate("ext-1").unwrap();
    assert_eq!(call(&gw, &ns, Some(&external_token(&stranger, &issuer))).status, 401);
    assert_eq!(
        call(&gw, &ns, Some(&external_token(&key, "https://other.example"))).status,
        401
    );
    // The JWKS server goes away: the fetched keys keep verifying, also after the gateway tried to
    // fetch them again and failed. No refresh is due for 5 minutes, so a token with a kid never
    // published makes it try (at most once per 10 s); the failure shows in its log.
    server.stop().await;
    let unknown_kid = external_token(&SigningKey::generate("ext-unpublished").unwrap(), &issuer);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !logged_fetch_failure(&gw, &issuer) {
        assert_eq!(call(&gw, &ns, Some(&unknown_kid)).status, 401);
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never tried to fetch the keys of {issuer} after the server went away"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..10 {
        let r = call(&gw, &ns, Some(&good));
        assert_eq!(
            r.status, 200,
            "the last good keys verify after a failed fetch: {}",
            r.body
        );
    }
}

/// Whether the gateway's log says a fetch of `issuer`'s keys failed.
fn logged_fetch_failure(gw: &Gateway, issuer: &str) -> bool {
    gw.logs()
        .lines()
        .any(|l| l.contains("fetching the issuer's keys failed") && l.contains(issuer))
}

#[tokio::test]
async fn external_issuer_key_rotation_is_followed_at_once() {
    let old = SigningKey::generate("rot-1").unwrap();
    let new = SigningKey::generate("rot-2").unwrap();
    let never = SigningKey::generate("rot-never-published").unwrap();
    let server = JwksServer::start(jwks(&[&old])).await;
    let issuer = format!("https://idp-rotation-{}.example", std::process::id());
    let (_c, gw, ns) = external_tenant("auth-rot", &issuer, &server.uri).await;
    let old_token = external_token(&old, &issuer);
    wait_call(&gw, &ns, Some(&old_token), 200).await;

    // The issuer rotates: the new key replaces the old one in its JWKS. A token of the new key is
    // accepted long before the 5-minute refresh: its unknown kid makes the gateway fetch the keys
    // (at most once per 10 s per issuer, so allow for one such interval).
    server.set(jwks(&[&new]));
    let new_token = external_token(&new, &issuer);
    let rotated = std::time::Instant::now();
    poll(
        Duration::from_secs(30),
        || call(&gw, &ns, Some(&new_token)),
        |r| {
            assert!(matches!(r.status, 200 | 401), "{} {}", r.status, r.body);
            r.status == 200
        },
    )
    .await
    .unwrap_or_else(|_| panic!("the new key was not accepted within 30 s"));
    println!("key rotated → new key accepted: {:?}", rotated.elapsed());
    // The removed key's token no longer verifies, though the gateway had verified it before.
    let r = call(&gw, &ns, Some(&old_token));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["code"], json!(401), "{}", r.body);

    // The JWKS server goes away. A kid never seen is refused (and makes the gateway try a fetch,
    // which fails); the current key keeps verifying throughout, before and after that failure.
    server.stop().await;
    let never_token = external_token(&never, &issuer);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = call(&gw, &ns, Some(&never_token));
        assert_eq!(r.status, 401, "a kid never published: {}", r.body);
        assert_eq!(
            call(&gw, &ns, Some(&new_token)).status,
            200,
            "the last good keys verify"
        );
        if logged_fetch_failure(&gw, &issuer) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never tried to fetch the keys of {issuer} after the server went away"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(call(&gw, &ns, Some(&new_token)).status, 200);
    assert_eq!(call(&gw, &ns, Some(&never_token)).status, 401);
    assert_eq!(call(&gw, &ns, Some(&old_token)).status, 401);
}

fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(&gw.addr, "GET", path, headers, "").unwrap()
}

/// Polls `GET path` until it answers `status` (snapshots, accounts and endpoints arrive).
async fn wait_get(gw: &Gateway, path: &str, headers: &[(&str, &str)], status: u16) -> Reply {
    poll(T, || get(gw, path, headers), |r| r.status == status)
        .await
        .unwrap_or_else(|r| panic!("never {status}; last {} {}", r.status, r.body))
}

#[tokio::test]
async fn browsers_refused_without_an_account_go_to_the_login_page() {
    let login = "https://login.example.com/sign-in?app=e2e";
    let (c, gw, ns) = setup(
        "auth-login",
        json!({"defaultAccess": "Authenticated", "auth": {"loginUrl": login}}),
    )
    .await;
    const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let path = "/helloworld/call?name=Auth";
    let browser = [("Micro-Namespace", ns.as_str()), ("Accept", HTML)];
    // The snapshot with the login URL arrives: an anonymous browser navigation is redirected.
    let r = wait_get(&gw, path, &browser, 307).await;
    let location = r.header("location").unwrap().to_string();
    let (base, query) = location.split_once('?').unwrap();
    assert_eq!(base, "https://login.example.com/sign-in", "{location}");
    assert!(query.starts_with("app=e2e&redirect_to=http%3A%2F%2F"), "{location}");
    let redirect_to: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    assert_eq!(
        redirect_to,
        [
            ("app".to_string(), "e2e".to_string()),
            ("redirect_to".to_string(), format!("http://{}{path}", gw.addr))
        ]
    );
    let r = request(&gw.addr, "HEAD", path, &browser, "").unwrap();
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some(location.as_str()));

    // API clients keep the 401 JSON: another Accept, no Accept, another method.
    for (method, accept) in [("GET", "application/json"), ("GET", ""), ("POST", HTML)] {
        let mut headers = vec![("Micro-Namespace", ns.as_str()), ("Content-Type", "application/json")];
        if !accept.is_empty() {
            headers.push(("Accept", accept));
        }
        let body = if method == "POST" { r#"{"name":"Auth"}"# } else { "" };
        let r = request(&gw.addr, method, path, &headers, body).unwrap();
        assert_eq!(r.status, 401, "{method} {accept:?}: {}", r.body);
        assert_eq!(r.json()["code"], json!(401), "{}", r.body);
        assert_eq!(r.header("location"), None);
    }

    // A refused account gets its 403, never a redirect; an admitted one gets the answer.
    account(&c, &ns, "blocked", "s3cret-blocked-0123456789", "blocked").await;
    account(&c, &ns, "alice", "s3cret-alice-0123456789", "").await;
    let rules: Api<AuthRule> = Api::namespaced(c.client.clone(), &ns);
    let rule: AuthRule = serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "AuthRule", "metadata": {"name": "no-blocked"},
        "spec": {"scope": "blocked", "access": "Denied", "priority": 10, "resource": {"type": "service", "name": "*", "endpoint": "*"}}
    }))
    .unwrap();
    rules.create(&PostParams::default(), &rule).await.unwrap();
    let blocked = token(&gw, &ns, "blocked", "s3cret-blocked-0123456789").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let alice = token(&gw, &ns, "alice", "s3cret-alice-0123456789").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let with_token = |t: &str| format!("Bearer {t}");
    let (b, a) = (with_token(&blocked), with_token(&alice));
    let r = wait_get(&gw, path, &[browser[0], browser[1], ("Authorization", b.as_str())], 403).await;
    assert_eq!(r.header("location"), None);
    assert_eq!(r.json()["code"], json!(403), "{}", r.body);
    // Polled: helloworld may still be coming up.
    let r = wait_get(&gw, path, &[browser[0], browser[1], ("Authorization", a.as_str())], 200).await;
    assert_eq!(r.json(), json!({"message": "Hello Auth"}));
}

/// Decodes `%XX` escapes (the redirect's query value).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
