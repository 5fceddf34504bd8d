//! The `microplane` CLI against the live environment (docs/cli.md): run a service from an image and
//! follow it to Ready, call it with a generated endpoint command and with `call`, stream, list and
//! inspect it, lock the tenant down and call as a signed-in account, refuse bad flags with exit 2,
//! and kill it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use microplane_e2e::gateway::with_tenant;
use microplane_e2e::{node, repo_root};
use serde_json::json;

const T: Duration = Duration::from_secs(120);

/// The CLI binary (`make test-e2e` builds every binary of the workspace first).
fn binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
        let bin = target.join("debug/microplane");
        assert!(bin.exists(), "{} is missing: `make binaries` builds it", bin.display());
        bin
    })
}

struct Cli {
    gateway: String,
    tenant: String,
    config: tempfile::TempDir,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(["--gateway", &format!("http://{}", self.gateway), "-n", &self.tenant])
            .args(args)
            .env("MICROPLANE_CONFIG_DIR", self.config.path())
            .output()
            .unwrap()
    }

    /// Runs `args`, expecting exit `code`; stdout and stderr.
    fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "microplane {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    /// Runs `args` until `done` holds of its output (the gateway learns routes, rules and accounts
    /// from the next snapshot), at most [`T`].
    async fn until(&self, args: &[&str], done: impl Fn(&Output) -> bool) -> Output {
        let deadline = std::time::Instant::now() + T;
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            tick.tick().await;
            let out = self.run(args);
            if done(&out) {
                return out;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "microplane {args:?} never got there; last exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Runs `args` until it exits 0; its stdout.
    async fn eventually(&self, args: &[&str]) -> String {
        let out = self.until(args, |o| o.status.success()).await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[tokio::test]
async fn run_call_stream_login_and_kill_with_the_cli() {
    let (c, gw, ns) = with_tenant("cli", json!({}), T)
        .await
        .expect("the e2e tier needs the control plane");
    let cli = Cli {
        gateway: gw.addr.clone(),
        tenant: ns.as_str().to_string(),
        config: tempfile::tempdir().unwrap(),
    };
    let image = node::helloworld("e2e").unwrap();

    // Run from an image: followed to Ready, the phases on stderr.
    let (stdout, stderr) = cli.expect(
        0,
        &[
            "run",
            "--image",
            &image,
            "--name",
            "helloworld",
            "--timeout-seconds",
            "120",
        ],
    );
    assert!(stdout.contains("helloworld is Ready"), "{stdout}");
    assert!(stderr.contains("Running"), "{stderr}");

    // The generated endpoint command, typed from the schema, and `call` with JSON.
    let out = cli.eventually(&["helloworld", "call", "--name", "John"]).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!({"message": "Hello John"})
    );
    let (out, _) = cli.expect(
        0,
        &[
            "-o",
            "json",
            "call",
            "helloworld",
            "Helloworld.Call",
            r#"{"name":"Ann"}"#,
        ],
    );
    assert_eq!(out.trim(), r#"{"message":"Hello Ann"}"#);
    // A stream: one message per line as they arrive; the int64 count from a flag.
    let (out, _) = cli.expect(
        0,
        &["-o", "json", "helloworld", "stream", "--name", "S", "--count", "3"],
    );
    assert_eq!(out.lines().count(), 3, "{out}");
    // --help lists the fields; a wrong flag or value is exit 2 naming what to do.
    let (help, _) = cli.expect(0, &["helloworld", "stream", "--help"]);
    assert!(help.contains("--count") && help.contains("--name"), "{help}");
    let (_, err) = cli.expect(2, &["helloworld", "call", "--nmae", "x"]);
    assert!(err.contains("--name"), "{err}");
    let (_, err) = cli.expect(2, &["helloworld", "stream", "--count", "many"]);
    assert!(err.contains("whole number"), "{err}");
    let (_, err) = cli.expect(3, &["nosuch", "call"]);
    assert!(err.contains("microplane endpoints"), "{err}");

    // What is there.
    let (out, _) = cli.expect(0, &["services"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("helloworld") && l.contains("Running")),
        "{out}"
    );
    let (out, _) = cli.expect(0, &["status", "helloworld"]);
    assert!(out.contains("phase:     Running") && out.contains("Ready"), "{out}");
    let (out, _) = cli.expect(0, &["endpoints"]);
    assert!(
        out.contains("helloworld call") && out.contains("helloworld stream"),
        "{out}"
    );

    // Tenants, rules, Configs.
    let (out, _) = cli.expect(0, &["tenants"]);
    assert!(
        out.lines().any(|l| l.starts_with(ns.as_str()) && l.contains("Public")),
        "{out}"
    );
    let (out, _) = cli.expect(0, &["rules"]);
    assert!(out.contains("(public)") && out.contains("Granted"), "{out}");
    let (out, _) = cli.expect(0, &["config", "set", "cli-cfg", "helloworld.greeting", "Hey"]);
    assert!(out.contains("helloworld.greeting set"), "{out}");
    cli.expect(0, &["config", "set", "cli-cfg", "helloworld.limits", r#"{"n":2}"#]);
    let (out, _) = cli.expect(0, &["config", "get", "cli-cfg", "helloworld.greeting"]);
    assert_eq!(out.trim(), "Hey");
    let (out, _) = cli.expect(0, &["-o", "json", "config", "get", "cli-cfg"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!({"helloworld": {"greeting": "Hey", "limits": {"n": 2}}})
    );
    cli.expect(3, &["config", "get", "cli-cfg", "helloworld.nope"]);
    cli.expect(2, &["config", "set", "cli-cfg", "a..b", "x"]);

    // Locked down: exit 4 with the hint; signed in, the call works again.
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), ns.as_str());
    let account: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cli-user"}, "type": "microplane.dev/account",
        "stringData": {"secret": "cli-user-secret-0123456789"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &account).await.unwrap();
    let tenants: Api<microplane_crds::Namespace> = Api::all(c.client.clone());
    tenants
        .patch(
            ns.as_str(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"defaultAccess": "Authenticated"}})),
        )
        .await
        .unwrap();
    let refused = cli
        .until(&["call", "helloworld", "call", r#"{"name":"x"}"#], |o| {
            o.status.code() == Some(4)
        })
        .await;
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("microplane login"), "{err}");
    // The anonymous caller's document no longer holds the endpoint: not found, with the hint.
    let (_, err) = cli.expect(3, &["helloworld", "call", "--name", "x"]);
    assert!(err.contains("microplane login"), "{err}");
    cli.eventually(&["login", "--id", "cli-user", "--secret", "cli-user-secret-0123456789"])
        .await;
    let (out, _) = cli.expect(0, &["-o", "json", "helloworld", "call", "--name", "Signed"]);
    assert_eq!(out.trim(), r#"{"message":"Hello Signed"}"#);

    // Gone.
    cli.expect(0, &["kill", "helloworld"]);
    cli.expect(3, &["kill", "helloworld"]);
}

/// `microplane run <git-url>@<ref>`: the MicroService is created from the source, followed through
/// Resolving and Building to Ready, and called; `status` names the commit it runs. Multi-threaded:
/// the git server's tasks answer the operator while the test's thread waits on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_from_git_follows_the_build_to_ready() {
    let (_c, gw, ns) = with_tenant("cli-git", json!({}), T)
        .await
        .expect("the e2e tier needs the control plane");
    let server = microplane_e2e::git::GitServer::start().await.unwrap();
    let repo = server.create_repo("hw").await.unwrap();
    let tree = tempfile::tempdir().unwrap();
    microplane_e2e::git::helloworld_source(tree.path()).unwrap();
    let commit = microplane_e2e::git::commit_tree(&repo, "main", tree.path(), "helloworld")
        .await
        .unwrap();
    let cli = Cli {
        gateway: gw.addr.clone(),
        tenant: ns.as_str().to_string(),
        config: tempfile::tempdir().unwrap(),
    };
    let source = format!("{}@main", server.url("hw"));
    // A cold cargo build on 2 shared cores takes minutes; the dev build node builds Rust.
    let (stdout, stderr) = cli.expect(
        0,
        &[
            "run",
            &source,
            "--path",
            "services/helloworld",
            "--strategy",
            "Rust",
            "--name",
            "hw-git",
            "--timeout-seconds",
            "900",
        ],
    );
    assert!(stdout.contains("hw-git is Ready"), "{stdout}");
    assert!(stderr.contains("Building"), "the phases as they pass: {stderr}");
    let (out, _) = cli.expect(0, &["status", "hw-git"]);
    assert!(out.contains(&commit[..12]), "status names the commit: {out}");
    let out = cli
        .eventually(&["-o", "json", "call", "hw-git", "Helloworld.Call", r#"{"name":"Git"}"#])
        .await;
    assert_eq!(out.trim(), r#"{"message":"Hello Git"}"#);
    cli.expect(0, &["kill", "hw-git"]);
}
