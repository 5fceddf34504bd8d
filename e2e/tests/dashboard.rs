//! The web dashboard (docs/dashboard.md) in headless Chromium against the live environment: the
//! gateway installed by the chart serves the app at `/.dashboard/`; Playwright (dashboard/e2e)
//! lists the tenant's services, calls helloworld from the generated form, signs in, streams, and
//! shows a 401's JSON for a forged token. Screenshots stay in `.state/e2e/artifacts/dashboard`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use microplane_crds::AuthRule;
use microplane_e2e::gateway::{request, with_tenant};
use microplane_e2e::{apply_helloworld, repo_root};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

#[tokio::test]
async fn the_dashboard_lists_calls_signs_in_and_streams_in_chromium() {
    let (c, gw, ns) = with_tenant("dash", json!({"defaultAccess": "Authenticated"}), T)
        .await
        .expect("the e2e tier needs the control plane");
    let ns = ns.as_str().to_string();

    // helloworld: Call open to everyone, the rest for the tenant's accounts.
    let rules: Api<AuthRule> = Api::namespaced(c.client.clone(), &ns);
    let public: AuthRule = serde_json::from_value(json!({
        "apiVersion": "microplane.dev/v1alpha1", "kind": "AuthRule", "metadata": {"name": "public-call"},
        "spec": {"scope": "", "access": "Granted", "priority": 10,
                 "resource": {"type": "service", "name": "helloworld", "endpoint": "Helloworld.Call"}}
    }))
    .unwrap();
    rules.create(&PostParams::default(), &public).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &ns);
    let account: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dash-user"}, "type": "microplane.dev/account",
        "stringData": {"secret": "dash-user-secret-0123456789"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &account).await.unwrap();
    apply_helloworld(&c, &ns, "helloworld", 1).await.unwrap();
    gw.wait_status(&ns, "POST", "/helloworld/call", r#"{"name":"x"}"#, 200, T)
        .await
        .unwrap();
    // The account reaches the gateway with the next snapshot. The token endpoint is rate limited
    // (10 a minute per client), so ask every 2 s, leaving the browser suite its sign-ins.
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = request(
            &gw.addr,
            "POST",
            &format!("/{ns}/.well-known/token"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "grant_type=client_credentials&client_id=dash-user&client_secret=dash-user-secret-0123456789",
        )
        .unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the account never got a token: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The gateway serves the app's files under its policy.
    let index = request(&gw.addr, "GET", "/.dashboard/", &[], "").unwrap();
    assert_eq!(index.status, 200, "{}", index.body);
    assert!(index.body.contains("<div id=\"app\""), "{}", index.body);
    let csp = index.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let missing = request(&gw.addr, "GET", "/.dashboard/nosuch.js", &[], "").unwrap();
    assert_eq!(missing.status, 404, "{}", missing.body);

    // The browser suite.
    let root = repo_root();
    let artifacts = root.join(".state/e2e/artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let dashboard = root.join("dashboard");
    assert!(
        dashboard.join("node_modules/.bin/playwright").exists(),
        "dashboard/node_modules is missing: `make dashboard` installs it"
    );
    let out = Command::new(dashboard.join("node_modules/.bin/playwright"))
        .arg("test")
        .current_dir(&dashboard)
        .env("DASHBOARD_URL", format!("http://{}/.dashboard/", gw.addr))
        .env("DASHBOARD_NAMESPACE", &ns)
        .env("DASHBOARD_CLIENT_ID", "dash-user")
        .env("DASHBOARD_CLIENT_SECRET", "dash-user-secret-0123456789")
        .env("DASHBOARD_ARTIFACTS", &artifacts)
        .env("CI", "1")
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "the Chromium suite failed:\n{report}");
    let shots = std::fs::read_dir(&artifacts).unwrap().count();
    assert!(
        shots >= 4,
        "expected the suite's screenshots in {}",
        artifacts.display()
    );
}
