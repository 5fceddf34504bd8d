//! The agent's build path without a cluster: sources served over loopback by the e2e git server,
//! cloned and built by [`Builder::run_build`] exactly as for a build pod.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use microplane_e2e::git::{self, GitServer};
use microplane_nodeagent::build::{
    BuildFailure, BuildSpec, Builder, Credentials, Limits, Secret, Stage, Strategy, TAIL_BYTES, TAIL_LINES, Workdirs,
};
use microplane_nodeagent::images;
use microplane_nodeagent::store::{Digest, ImageStore};

/// A node's build directories under one temporary root.
struct Node {
    root: tempfile::TempDir,
    builder: Builder,
}

impl Node {
    fn new(limits: Limits) -> Self {
        let root = tempfile::tempdir().unwrap();
        let builder = Builder::new(
            root.path().join("build-cache"),
            ImageStore::new(root.path().join("images")),
            1,
            limits,
        );
        Self { root, builder }
    }

    /// Directories of a new build pod.
    fn pod(&self, name: &str) -> Workdirs {
        let dir = self.root.path().join("pods").join(name);
        Workdirs {
            workspace: dir.join("volumes/workspace"),
            logs: dir.clone(),
            scratch: dir.join("build"),
        }
    }

    async fn build(&self, name: &str, spec: &BuildSpec) -> (Result<Digest, BuildFailure>, Workdirs) {
        let dirs = self.pod(name);
        (self.builder.run_build(spec, &dirs).await, dirs)
    }
}

/// Writes `files` into a fresh directory and commits it as `main` of a new repository `name`.
async fn repo(server: &GitServer, name: &str, files: &[(&str, &str)]) -> (PathBuf, String) {
    let tree = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = tree.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let bare = server.create_repo(name).await.unwrap();
    let sha = git::commit_tree(&bare, "main", tree.path(), "source").await.unwrap();
    (bare, sha)
}

fn spec(server: &GitServer, name: &str, commit: &str, path: &str, strategy: Strategy) -> BuildSpec {
    let image = format!("registry.local/micro/{name}:{commit}");
    BuildSpec::new(&server.url(name), commit, path, strategy, &image).unwrap()
}

const TINY_MANIFEST: &str = "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";

fn assert_bounded(f: &BuildFailure) {
    assert!(f.exit_code != 0);
    assert!(f.message.len() <= TAIL_BYTES, "{} bytes", f.message.len());
    assert!(f.message.lines().count() <= TAIL_LINES, "{}", f.message);
}

fn run(exe: &Path) -> String {
    let out = std::process::Command::new(exe).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn builds_a_rust_package_into_the_image_store() {
    let server = GitServer::start().await.unwrap();
    let main = "fn main() { println!(\"tiny {}\", env!(\"CARGO_PKG_VERSION\")); }\n";
    let (_, sha) = repo(
        &server,
        "tiny",
        &[
            ("svc/Cargo.toml", TINY_MANIFEST),
            ("svc/src/main.rs", main),
            ("README.md", "x"),
        ],
    )
    .await;
    let node = Node::new(Limits::default());
    let spec = spec(&server, "tiny", &sha, "svc", Strategy::Rust);
    let (built, dirs) = node.build("tiny", &spec).await;
    let digest = built.unwrap();
    let blob = node.builder.store().blob(&digest).unwrap();
    assert_eq!(run(&blob), "tiny 0.1.0\n");
    // The Deployment's images: the digest-pinned one and the tag the build registered.
    let bin_dir = node.root.path().join("no-workspace-binaries");
    let pinned = format!("registry.local/micro/tiny@{digest}");
    assert_eq!(images::resolve(&pinned, &bin_dir, node.builder.store()).unwrap(), blob);
    let tagged = format!("registry.local/micro/tiny:{sha}");
    assert_eq!(images::resolve(&tagged, &bin_dir, node.builder.store()).unwrap(), blob);
    // The logs a pod's containers would have.
    let clone_log = std::fs::read_to_string(dirs.clone_log()).unwrap();
    assert!(clone_log.contains(&format!("checked out {sha}")), "{clone_log}");
    let build_log = std::fs::read_to_string(dirs.build_log()).unwrap();
    assert!(build_log.contains("Compiling tiny v0.1.0"), "{build_log}");
    assert!(build_log.contains(&format!("registered {tagged} as registry.local/micro/tiny@{digest}")));
    // The credentials' private directory is gone.
    let leftovers: Vec<_> = std::fs::read_dir(&dirs.scratch).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn builds_a_go_module() {
    let server = GitServer::start().await.unwrap();
    let (_, sha) = repo(
        &server,
        "gosvc",
        &[
            ("go.mod", "module example.com/gosvc\n\ngo 1.22\n"),
            (
                "main.go",
                "package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"go svc\\n\") }\n",
            ),
        ],
    )
    .await;
    let node = Node::new(Limits::default());
    let (built, _) = node
        .build("gosvc", &spec(&server, "gosvc", &sha, ".", Strategy::Go))
        .await;
    let digest = built.unwrap();
    assert_eq!(run(&node.builder.store().blob(&digest).unwrap()), "go svc\n");
}

#[tokio::test]
async fn build_failures_say_why_briefly() {
    let server = GitServer::start().await.unwrap();
    let broken = "fn main() {\n    let n: u32 = \"not a number\";\n    println!(\"{n}\");\n}\n";
    let two_bins = "[package]\nname = \"two\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[[bin]]\nname = \"a\"\npath = \"a.rs\"\n\n[[bin]]\nname = \"b\"\npath = \"b.rs\"\n";
    let (_, sha) = repo(
        &server,
        "mixed",
        &[
            ("docs/README.md", "nothing to build here\n"),
            ("broken/Cargo.toml", TINY_MANIFEST),
            ("broken/src/main.rs", broken),
            ("two/Cargo.toml", &format!("{two_bins}\n[workspace]\n")),
            ("two/a.rs", "fn main() {}\n"),
            ("two/b.rs", "fn main() {}\n"),
            ("virtual/Cargo.toml", "[workspace]\nmembers = []\n"),
            ("web/Dockerfile", "FROM scratch\n"),
        ],
    )
    .await;
    let node = Node::new(Limits::default());
    let cases: [(&str, Strategy, &str); 6] = [
        (
            "docs",
            Strategy::Rust,
            "nothing to build in docs: there is no Cargo.toml",
        ),
        ("docs", Strategy::Go, "nothing to build in docs: there is no go.mod"),
        ("web", Strategy::Dockerfile, "builds only Rust and Go sources"),
        ("broken", Strategy::Rust, "error[E0308]: mismatched types"),
        ("two", Strategy::Rust, "has binaries a, b and no default-run"),
        (
            "virtual",
            Strategy::Rust,
            "is not a package (a virtual workspace manifest?)",
        ),
    ];
    for (i, (path, strategy, expected)) in cases.into_iter().enumerate() {
        let (built, _) = node
            .build(&format!("case{i}"), &spec(&server, "mixed", &sha, path, strategy))
            .await;
        let failure = built.unwrap_err();
        assert_eq!(failure.stage, Stage::Build, "{path}");
        assert!(failure.message.contains(expected), "{path}: {}", failure.message);
        assert_bounded(&failure);
    }
}

#[tokio::test]
async fn clone_failures_say_why() {
    let server = GitServer::start().await.unwrap();
    let (_, sha) = repo(&server, "r", &[("svc/README.md", "x")]).await;
    let node = Node::new(Limits::default());

    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let (built, _) = node
        .build("unknown", &spec(&server, "r", unknown, "svc", Strategy::Rust))
        .await;
    let failure = built.unwrap_err();
    assert_eq!(failure.stage, Stage::Clone);
    assert!(
        failure.message.ends_with(&format!(
            "error: commit {unknown} is not in {}: no branch or tag there reaches it",
            server.url("r")
        )),
        "{}",
        failure.message
    );
    assert_bounded(&failure);

    let (built, _) = node
        .build("nopath", &spec(&server, "r", &sha, "nope", Strategy::Rust))
        .await;
    let failure = built.unwrap_err();
    assert!(
        failure.message.contains("GIT_PATH nope is not a directory"),
        "{}",
        failure.message
    );

    let (built, _) = node
        .build("norepo", &spec(&server, "missing", &sha, ".", Strategy::Rust))
        .await;
    let failure = built.unwrap_err();
    assert_eq!(failure.stage, Stage::Clone);
    assert!(failure.message.contains("cannot fetch from"), "{}", failure.message);
}

#[tokio::test]
async fn clones_with_credentials_without_leaking_them() {
    let token = "tok-5ecret-value";
    let server = GitServer::start_with_basic_auth("x-access-token", token).await.unwrap();
    let (_, sha) = repo(&server, "private", &[("svc/README.md", "x")]).await;
    let node = Node::new(Limits::default());
    let mut s = spec(&server, "private", &sha, "svc", Strategy::Rust);

    let (built, _) = node.build("anonymous", &s).await;
    let failure = built.unwrap_err();
    assert_eq!(failure.stage, Stage::Clone);
    assert!(
        failure.message.contains("could not read Username"),
        "{}",
        failure.message
    );

    s.credentials = Some(Credentials::Token(Secret::new("wrong")));
    let (built, _) = node.build("wrong", &s).await;
    assert!(built.unwrap_err().message.contains("Authentication failed"));

    s.credentials = Some(Credentials::Token(Secret::new(token)));
    let dirs = node.pod("token");
    node.builder.clone_source(&s, &dirs).await.unwrap();
    assert!(dirs.source().join("svc/README.md").is_file());
    s.credentials = Some(Credentials::Basic {
        username: "x-access-token".into(),
        password: Secret::new(token),
    });
    let dirs = node.pod("basic");
    node.builder.clone_source(&s, &dirs).await.unwrap();

    // The secret is in no log, no file left behind and not in the clone's configuration.
    let mut stack = vec![node.root.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(text) = std::fs::read(&path) {
                assert!(
                    !String::from_utf8_lossy(&text).contains(token),
                    "{} holds the token",
                    path.display()
                );
            }
        }
    }
}

/// A package whose build script never returns (it writes its pid first).
fn hanging_package(pid_file: &Path) -> [(String, String); 3] {
    let build_rs = format!(
        "fn main() {{\n    std::fs::write({:?}, std::process::id().to_string()).unwrap();\n    loop {{ std::thread::park(); }}\n}}\n",
        pid_file.display().to_string()
    );
    [
        ("Cargo.toml".into(), TINY_MANIFEST.into()),
        ("build.rs".into(), build_rs),
        ("src/main.rs".into(), "fn main() {}\n".into()),
    ]
}

/// Waits until `cond` holds, checking every few milliseconds, for at most `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while start.elapsed() < limit {
        tick.tick().await;
        if cond() {
            return true;
        }
    }
    false
}

fn alive(pid: &str) -> bool {
    // A killed process is gone from /proc once reaped, or a zombie (`Z`) until then.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test]
async fn stops_builds_that_take_too_long_or_are_dropped() {
    let server = GitServer::start().await.unwrap();
    let pids = tempfile::tempdir().unwrap();
    let files = hanging_package(&pids.path().join("timeout.pid"));
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (_, sha) = repo(&server, "hang", &files).await;

    // Past its time limit the build fails, and the build script dies with cargo.
    let node = Node::new(Limits {
        clone: Duration::from_secs(60),
        build: Duration::from_secs(30),
    });
    let (built, _) = node
        .build("timeout", &spec(&server, "hang", &sha, ".", Strategy::Rust))
        .await;
    let failure = built.unwrap_err();
    assert_eq!(failure.exit_code, 124);
    assert!(
        failure
            .message
            .ends_with("error: cargo build took too long and was stopped"),
        "{}",
        failure.message
    );
    let pid = std::fs::read_to_string(pids.path().join("timeout.pid")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !alive(&pid)).await,
        "build script {pid} survived"
    );

    // A dropped build (its pod deleted) is killed too.
    let other = tempfile::tempdir().unwrap();
    let pid_file = other.path().join("dropped.pid");
    let files = hanging_package(&pid_file);
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (_, sha) = repo(&server, "hang2", &files).await;
    let node = Node::new(Limits::default());
    let spec = spec(&server, "hang2", &sha, ".", Strategy::Rust);
    let dirs = node.pod("dropped");
    let mut build = Box::pin(node.builder.run_build(&spec, &dirs));
    let started = tokio::select! {
        r = &mut build => panic!("the hanging build ended: {r:?}"),
        ok = eventually(Duration::from_secs(120), || pid_file.is_file()) => ok,
    };
    assert!(started, "the build script never ran");
    drop(build);
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !alive(&pid)).await,
        "build script {pid} survived"
    );
}

/// The helloworld service from this workspace's sources, cloned from the loopback server and built
/// cold (no compiled dependency yet), then again after a commit (warm). Slow the first time: a cold
/// build compiles the whole dependency graph (minutes on two cores), so it does not run in the unit
/// tier: `cargo test -p microplane-nodeagent --test build -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "slow: a cold cargo build of helloworld and its dependencies"]
async fn builds_helloworld_from_git_cold_then_warm() {
    let server = GitServer::start().await.unwrap();
    let tree = tempfile::tempdir().unwrap();
    git::helloworld_source(tree.path()).unwrap();
    let bare = server.create_repo("helloworld").await.unwrap();
    let first = git::commit_tree(&bare, "main", tree.path(), "helloworld")
        .await
        .unwrap();
    let node = Node::new(Limits::default());

    let cold = Instant::now();
    let (built, _) = node
        .build(
            "cold",
            &spec(&server, "helloworld", &first, "services/helloworld", Strategy::Rust),
        )
        .await;
    let cold = cold.elapsed();
    let digest = built.unwrap();
    let blob = node.builder.store().blob(&digest).unwrap();

    let lib = std::fs::read_to_string(tree.path().join("services/helloworld/src/lib.rs")).unwrap();
    let second = git::commit_file(
        &bare,
        "main",
        "services/helloworld/src/lib.rs",
        format!("{lib}\n// a second commit\n").as_bytes(),
        "touch",
    )
    .await
    .unwrap();
    let warm = Instant::now();
    let (built, _) = node
        .build(
            "warm",
            &spec(&server, "helloworld", &second, "services/helloworld", Strategy::Rust),
        )
        .await;
    let warm = warm.elapsed();
    let digest2 = built.unwrap();
    eprintln!("helloworld through run_build: cold {cold:?}, warm {warm:?}");

    // The built service serves: start it on a free loopback port and wait for it to accept.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(&blob)
        .env("MICRO_SERVICE_ADDRESS", format!("127.0.0.1:{port}"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let serving = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tick.tick().await;
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
        }
    })
    .await;
    child.kill().await.unwrap();
    assert!(serving.is_ok(), "the built helloworld never listened");
    assert!(node.builder.store().blob(&digest2).is_some());
}
