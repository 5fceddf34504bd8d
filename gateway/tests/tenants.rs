//! Issue 20, as an attacker tries it: two tenants (`micro` on `api.micro.localhost`, `beta` on
//! `api.beta.localhost`), each with an `Http` service `web` on its own backend; micro guards
//! `/admin/*` with a Denied rule above a public grant. Encoded paths, a switched tenant header,
//! another tenant's token, forged identity headers and a hostile page's CORS request each either
//! fail or reach only what the rules allow, and the backends record what reached them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use microplane_gateway::auth::token::{Claims, SigningKey};
use microplane_gateway::metrics::Metrics;
use microplane_gateway::server::serve;
use microplane_gateway::state::{Gateway, Settings};
use microplane_gateway::sync;
use microplane_wire::sync::v1;
use tokio::net::{TcpListener, TcpStream};

/// What reached a backend.
#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    headers: HeaderMap,
}

/// A backend answering 200 to everything and recording it.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        async move {
                            record.lock().unwrap().push(Seen {
                                uri: req.uri().to_string(),
                                headers: req.headers().clone(),
                            });
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"backend"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn rule(id: &str, scope: &str, endpoint: &str, denied: bool, priority: i32) -> v1::Rule {
    v1::Rule {
        id: id.into(),
        scope: scope.into(),
        r#type: "service".into(),
        name: "*".into(),
        endpoint: endpoint.into(),
        denied,
        priority,
    }
}

struct World {
    addr: SocketAddr,
    micro: Backend,
    beta: Backend,
    micro_key: SigningKey,
    beta_key: SigningKey,
}

impl World {
    /// The two tenants; `micro_rules` replace micro's default (admin denied above a public grant).
    async fn start(micro_rules: Option<Vec<v1::Rule>>) -> Self {
        Self::start_with(micro_rules, |_| {}).await
    }

    /// [`World::start`], with the snapshot changed by `edit` before the gateway gets it.
    async fn start_with(micro_rules: Option<Vec<v1::Rule>>, edit: impl FnOnce(&mut v1::Snapshot)) -> Self {
        let (micro, beta) = (Backend::start().await, Backend::start().await);
        let (micro_key, beta_key) = (SigningKey::generate("m1").unwrap(), SigningKey::generate("b1").unwrap());
        let tenant = |name: &str, key: &SigningKey, rules: Vec<v1::Rule>| v1::Tenant {
            name: name.into(),
            hosts: vec![format!("api.{name}.localhost")],
            issuer: format!("https://{name}.issuer.test"),
            signing_keys: vec![v1::SigningKey {
                kid: key.kid.clone(),
                pkcs8: key.pkcs8_der(),
            }],
            rules,
            ..Default::default()
        };
        let web = |t: &str, b: &Backend| v1::Service {
            tenant: t.into(),
            name: "web".into(),
            protocol: v1::Protocol::Http as i32,
            endpoints: common::endpoints(&[b.addr]),
            ..Default::default()
        };
        let micro_rules = micro_rules.unwrap_or_else(|| {
            vec![
                rule("admin", "", "/admin/*", true, 10),
                rule("public", "", "*", false, 0),
            ]
        });
        let mut wire = v1::Snapshot {
            version: 1,
            source: "test".into(),
            tenants: vec![
                tenant("micro", &micro_key, micro_rules),
                tenant("beta", &beta_key, vec![rule("public", "", "*", false, 0)]),
            ],
            services: vec![web("micro", &micro), web("beta", &beta)],
            ..Default::default()
        };
        edit(&mut wire);
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
        tokio::spawn(serve(gw, listener, std::future::pending()));
        Self {
            addr,
            micro,
            beta,
            micro_key,
            beta_key,
        }
    }

    /// `GET path` on host `host` with `headers`: the status and the body.
    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::get(path).header(header::HOST, host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tx
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn token(key: &SigningKey, tenant: &str) -> String {
        let now = microplane_gateway::auth::now_unix();
        key.sign(&Claims {
            sub: format!("user-of-{tenant}"),
            iss: format!("https://{tenant}.issuer.test"),
            exp: now + 600,
            iat: now,
            account_type: "user".into(),
            scopes: vec!["admin".into()],
            token_use: "access".into(),
            ..Default::default()
        })
        .unwrap()
    }
}

const MICRO: &str = "api.micro.localhost";

#[tokio::test]
async fn rules_see_the_path_the_backend_receives() {
    let w = World::start(None).await;
    assert_eq!(w.get(MICRO, "/web/admin/secret", &[]).await.0, StatusCode::UNAUTHORIZED);
    // Decoded before the rules: the same refusal.
    assert_eq!(
        w.get(MICRO, "/web/%61dmin/secret", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        w.get(MICRO, "/web/pub/../admin/secret", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Ambiguous once decoded: 400 before any rule, naming the problem.
    for (path, what) in [
        ("/web/pub/%2e%2e/admin/secret", "encoded dot segment"),
        ("/web/admin%2Fsecret", "encoded slash"),
        ("/web/admin;x/secret", "`;` parameters"),
        ("/web/admin%5csecret", "encoded backslash"),
    ] {
        let (status, _, body) = w.get(MICRO, path, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains(what), "{path}: {body}");
    }
    assert!(w.micro.seen().is_empty(), "{:?}", w.micro.seen());

    // What is allowed reaches the backend as the rules saw it, in one canonical encoding.
    let (status, _, _) = w.get(MICRO, "/web/%70ub/a%20b/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w.micro.seen()[0].uri, "/pub/a%20b/");
}

#[tokio::test]
async fn a_host_bound_tenant_cannot_be_switched_and_keeps_its_credentials() {
    let w = World::start(None).await;
    let micro_token = World::token(&w.micro_key, "micro");
    let bearer = format!("Bearer {micro_token}");
    let cookie = format!("micro-token={micro_token}; theme=dark");
    let (status, _, body) = w
        .get(
            MICRO,
            "/web/pub",
            &[
                ("micro-namespace", "beta"),
                ("authorization", &bearer),
                ("cookie", &cookie),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("cannot switch"), "{body}");
    assert!(w.beta.seen().is_empty());

    // A host no tenant lists may name its tenant, but micro's credentials stay at the gateway.
    let (status, _, _) = w
        .get(
            "gw.test",
            "/web/pub",
            &[
                ("micro-namespace", "beta"),
                ("authorization", &bearer),
                ("cookie", &cookie),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = &w.beta.seen()[0];
    assert!(!seen.headers.contains_key("authorization"), "{:?}", seen.headers);
    assert_eq!(seen.headers["cookie"], "theme=dark");
    assert_eq!(seen.headers["micro-namespace"], "beta");
    assert_eq!(
        seen.headers["micro-account-namespace"], "micro",
        "a foreign account, named as such"
    );

    // On its own tenant the token reaches the backend as sent.
    let (status, _, _) = w.get(MICRO, "/web/pub", &[("authorization", &bearer)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(w.micro.seen()[0].headers["authorization"], bearer.as_str());
    assert_eq!(w.micro.seen()[0].headers["micro-account-id"], "user-of-micro");
}

#[tokio::test]
async fn foreign_accounts_are_decided_by_the_rules() {
    // `+` admits any tenant's account; `*` and named scopes only micro's own.
    let w = World::start(Some(vec![
        rule("any-tenant", "+", "/shared/*", false, 0),
        rule("own", "*", "/own/*", false, 0),
        rule("named", "admin", "/admin/*", false, 0),
        rule("star-above-public", "*", "/mixed/*", false, 10),
        rule("public-below", "", "/mixed/*", false, 0),
    ]))
    .await;
    let beta = format!("Bearer {}", World::token(&w.beta_key, "beta"));
    let micro = format!("Bearer {}", World::token(&w.micro_key, "micro"));
    let status = |path: &'static str, auth: String| {
        let w = &w;
        async move { w.get(MICRO, path, &[("authorization", &auth)]).await.0 }
    };
    assert_eq!(status("/web/shared/x", beta.clone()).await, StatusCode::OK);
    assert_eq!(status("/web/own/x", beta.clone()).await, StatusCode::FORBIDDEN);
    assert_eq!(status("/web/admin/x", beta.clone()).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status("/web/mixed/x", beta.clone()).await,
        StatusCode::FORBIDDEN,
        "a `*` rule above a public grant refuses a foreign account (Micro does), not anonymous"
    );
    for path in ["/web/shared/x", "/web/own/x", "/web/admin/x", "/web/mixed/x"] {
        assert_eq!(status(path, micro.clone()).await, StatusCode::OK, "{path}");
    }
    // The foreign account reached the backend once (`+`), without its token.
    let foreign: Vec<Seen> = w
        .micro
        .seen()
        .into_iter()
        .filter(|s| s.headers.get("micro-account-namespace").is_some_and(|v| v == "beta"))
        .collect();
    assert_eq!(foreign.len(), 1, "{foreign:?}");
    assert!(!foreign[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn forged_identity_and_hop_by_hop_tricks_do_not_reach_the_backend() {
    let w = World::start(None).await;
    let micro = format!("Bearer {}", World::token(&w.micro_key, "micro"));
    let (status, _, _) = w
        .get(
            MICRO,
            "/web/pub",
            &[
                ("authorization", &micro),
                (
                    "connection",
                    "micro-account-id, micro-namespace, micro-account-namespace",
                ),
                ("micro-account-id", "root"),
                ("micro-account-scopes", "admin"),
                ("micro-debug", "1"),
                ("forwarded", "for=10.0.0.1"),
                ("x-real-ip", "10.0.0.1"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let h = &w.micro.seen()[0].headers;
    assert_eq!(h["micro-account-id"], "user-of-micro");
    assert_eq!(h["micro-namespace"], "micro");
    assert_eq!(h["micro-account-namespace"], "micro");
    assert!(!h.contains_key("micro-debug"));
    assert!(!h.contains_key("forwarded"));
    assert_eq!(h["x-real-ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_hostile_page_gets_no_credentialed_cors_by_default() {
    let w = World::start(None).await;
    let (status, headers, _) = w
        .get(
            MICRO,
            "/web/pub",
            &[("origin", "https://evil.example"), ("cookie", "micro-token=x")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://evil.example");
    assert!(
        !headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        "the browser would send the signed-in user's cookie: {headers:?}"
    );
}

/// Item 2: two tenants trusting one external issuer each keep their own policy and their own keys.
/// Beta names micro's identity provider with an inline key set of its own making: before, the
/// first tenant's audiences and the last tenant's keys verified everybody's tokens, so beta could
/// mint micro admin tokens and micro's real ones stopped verifying.
#[tokio::test]
async fn tenants_sharing_an_external_issuer_keep_their_own_policy_and_keys() {
    const IDP: &str = "https://idp.shared.test";
    let (idp, forger) = (
        SigningKey::generate("idp-1").unwrap(),
        SigningKey::generate("idp-1").unwrap(),
    );
    let trust = |key: &SigningKey, audience: &str| v1::ExternalIssuer {
        issuer: IDP.into(),
        jwks: serde_json::json!({ "keys": [key.public().to_jwk()] }).to_string(),
        audiences: vec![audience.into()],
        algorithms: vec!["ES256".into()],
        ..Default::default()
    };
    let (idp_trust, forged_trust) = (trust(&idp, "micro-app"), trust(&forger, "beta-app"));
    let w = World::start_with(
        Some(vec![
            rule("named", "admin", "/admin/*", false, 0),
            rule("any-tenant", "+", "/shared/*", false, 0),
        ]),
        move |wire| {
            wire.tenants[0].external_issuers = vec![idp_trust];
            wire.tenants[1].external_issuers = vec![forged_trust];
        },
    )
    .await;
    let bearer = |key: &SigningKey, audience: &str| {
        let now = microplane_gateway::auth::now_unix();
        let token = key
            .sign(&Claims {
                sub: format!("someone-for-{audience}"),
                iss: IDP.into(),
                exp: now + 600,
                iat: now,
                scopes: vec!["admin".into()],
                account_type: "user".into(),
                token_use: "access".into(),
                aud: Some(microplane_gateway::auth::token::Audience::One(audience.into())),
                ..Default::default()
            })
            .unwrap();
        format!("Bearer {token}")
    };
    let status = |path: &'static str, auth: String| {
        let w = &w;
        async move { w.get(MICRO, path, &[("authorization", &auth)]).await.0 }
    };
    // The identity provider's own token for micro's application: micro's admin.
    assert_eq!(status("/web/admin/x", bearer(&idp, "micro-app")).await, StatusCode::OK);
    // Beta's key, same issuer and kid, micro's audience: no tenant's policy accepts it.
    assert_eq!(
        status("/web/admin/x", bearer(&forger, "micro-app")).await,
        StatusCode::UNAUTHORIZED,
        "a key one tenant names never verifies for another"
    );
    // Beta's key for beta's audience: a valid beta account, foreign in micro.
    assert_eq!(
        status("/web/admin/x", bearer(&forger, "beta-app")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status("/web/shared/x", bearer(&forger, "beta-app")).await,
        StatusCode::OK
    );
    // The identity provider's token for beta's audience is not beta's (beta trusts other keys).
    assert_eq!(
        status("/web/admin/x", bearer(&idp, "beta-app")).await,
        StatusCode::UNAUTHORIZED
    );

    let seen = w.micro.seen();
    let namespaces: Vec<Option<&str>> = seen
        .iter()
        .map(|s| s.headers.get("micro-account-namespace").map(|v| v.to_str().unwrap()))
        .collect();
    assert_eq!(namespaces, [Some("micro"), Some("beta")], "{seen:?}");
    assert!(
        !seen[1].headers.contains_key("authorization"),
        "beta's token stays with beta"
    );
}
