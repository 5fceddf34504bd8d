//! The agent's build path without a cluster: sources served over loopback by the e2e git server,
//! cloned, built and pushed by [`Builder::run_build`] exactly as for a build pod, to a throwaway
//! registry on loopback (distribution's `registry` and crane, which `make controlplane` builds into
//! `$MICROPLANE_CACHE`; a test that needs them fails, saying so, when they are missing).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use microplane_e2e::git::{self, GitServer};
use microplane_nodeagent::build::package::{Publisher, SERVICE_PATH, USER};
use microplane_nodeagent::build::reference::Digest;
use microplane_nodeagent::build::{
    BuildFailure, BuildSpec, Builder, Credentials, Limits, Secret, Stage, Strategy, TAIL_BYTES, TAIL_LINES, Workdirs,
};

/// A tool `make controlplane` builds: `<cache>/<dir>-v<version of VAR in e2e/versions.env>/<name>`.
fn cached_tool(var: &str, dir: &str, name: &str) -> PathBuf {
    let versions = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../versions.env")).unwrap();
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")))
        .unwrap_or_else(|| panic!("{var} is not in e2e/versions.env"));
    let cache = std::env::var_os("MICROPLANE_CACHE").map_or_else(
        || {
            let base = std::env::var_os("XDG_CACHE_HOME").map_or_else(
                || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"),
                PathBuf::from,
            );
            base.join("microplane")
        },
        PathBuf::from,
    );
    let path = cache.join(format!("{dir}-v{version}")).join(name);
    assert!(path.is_file(), "missing {}: run make controlplane", path.display());
    path
}

fn crane() -> PathBuf {
    cached_tool("CRANE_VERSION", "crane", "crane")
}

/// A registry on a free loopback port, its storage in a temporary directory; stopped on drop.
struct Registry {
    address: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Self {
        let bin = cached_tool("DISTRIBUTION_VERSION", "distribution", "registry");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: \"{address}\"}}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "the registry did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            address,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// crane against the test registry; its standard output.
fn crane_out(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(crane())
        .args(args)
        .arg("--insecure")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "crane {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A base layer like `make images`' own: the nonroot user and an empty /tmp.
fn base_layer(dir: &Path) -> PathBuf {
    let root = dir.join("base");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )
    .unwrap();
    let tarball = dir.join("base.tar");
    let ok = std::process::Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    tarball
}

/// What a pushed image holds: its configuration and the executable at [`SERVICE_PATH`].
struct Pulled {
    config: serde_json::Value,
    service: PathBuf,
    passwd: String,
}

/// Pulls `reference` back from the registry (by digest: what the cluster pulls) into `dir`.
fn pull(reference: &str, dir: &Path) -> Pulled {
    let config: serde_json::Value = serde_json::from_slice(&crane_out(&["config", reference])).unwrap();
    let fs = dir.join("fs.tar");
    crane_out(&["export", reference, fs.to_str().unwrap()]);
    let root = dir.join("fs");
    std::fs::create_dir_all(&root).unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&fs)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(ok.success());
    Pulled {
        config,
        service: root.join(SERVICE_PATH.trim_start_matches('/')),
        passwd: std::fs::read_to_string(root.join("etc/passwd")).unwrap(),
    }
}

/// Whether an ELF executable asks for a dynamic loader (it would not start in an image without
/// libc).
fn dynamically_linked(exe: &Path) -> bool {
    let bytes = std::fs::read(exe).unwrap();
    bytes.windows(b"/lib64/ld-linux".len()).any(|w| w == b"/lib64/ld-linux")
}

/// A node's build directories under one temporary root, pushing to `registry`.
struct Node {
    root: tempfile::TempDir,
    builder: Builder,
}

impl Node {
    fn new(limits: Limits, registry: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let publisher = Publisher {
            crane: crane(),
            base_layer: base_layer(root.path()),
            registry: registry.to_string(),
        };
        let builder = Builder::new(root.path().join("build-cache"), publisher, 1, limits);
        Self { root, builder }
    }

    /// A node whose builds are not expected to reach the push: no registry listens.
    fn without_registry(limits: Limits) -> Self {
        Self::new(limits, "127.0.0.1:9")
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
async fn builds_a_rust_package_into_an_image_in_the_registry() {
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
    let registry = Registry::start();
    let node = Node::new(Limits::default(), &registry.address);
    let spec = spec(&server, "tiny", &sha, "svc", Strategy::Rust);
    let (built, dirs) = node.build("tiny", &spec).await;
    let digest = built.unwrap();
    // BUILD_IMAGE's registry (registry.local) is where the cluster pulls from; the push went to the
    // registry's address from here, and the digest names the image in both.
    let repository = format!("{}/micro/tiny", registry.address);
    let tagged = format!("{repository}:{sha}");
    let pinned = format!("{repository}@{digest}");
    assert_eq!(
        String::from_utf8(crane_out(&["digest", &tagged])).unwrap().trim(),
        digest.to_string()
    );
    let image = pull(&pinned, node.root.path());
    assert_eq!(run(&image.service), "tiny 0.1.0\n");
    assert!(
        !dynamically_linked(&image.service),
        "the image has no libc: the executable must be static"
    );
    assert!(
        image.passwd.contains(":65532:65532:"),
        "the base layer is in the image: {}",
        image.passwd
    );
    let config = &image.config["config"];
    assert_eq!(config["Entrypoint"], serde_json::json!([SERVICE_PATH]));
    assert_eq!(config["User"], USER);
    assert_eq!(config["Labels"]["org.opencontainers.image.revision"], sha.as_str());
    assert_eq!(
        (image.config["os"].as_str(), image.config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    // The logs a pod's containers would have.
    let clone_log = std::fs::read_to_string(dirs.clone_log()).unwrap();
    assert!(clone_log.contains(&format!("checked out {sha}")), "{clone_log}");
    let build_log = std::fs::read_to_string(dirs.build_log()).unwrap();
    assert!(build_log.contains("Compiling tiny v0.1.0"), "{build_log}");
    assert!(
        build_log.contains(&format!("pushed {tagged} as {pinned}")),
        "{build_log}"
    );
    assert!(
        build_log.contains(&format!("the cluster pulls it as registry.local/micro/tiny@{digest}")),
        "{build_log}"
    );
    // The credentials' private directory and the image's layer are gone.
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
    let registry = Registry::start();
    let node = Node::new(Limits::default(), &registry.address);
    let (built, _) = node
        .build("gosvc", &spec(&server, "gosvc", &sha, ".", Strategy::Go))
        .await;
    let digest = built.unwrap();
    let image = pull(&format!("{}/micro/gosvc@{digest}", registry.address), node.root.path());
    assert_eq!(run(&image.service), "go svc\n");
    assert!(!dynamically_linked(&image.service));
}

#[tokio::test]
async fn an_unreachable_registry_fails_the_build_saying_where() {
    let server = GitServer::start().await.unwrap();
    let (_, sha) = repo(
        &server,
        "tiny",
        &[("Cargo.toml", TINY_MANIFEST), ("src/main.rs", "fn main() {}\n")],
    )
    .await;
    // A port nothing listens on: taken, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let node = Node::new(
        Limits {
            clone: Duration::from_secs(60),
            build: Duration::from_secs(300),
        },
        &closed,
    );
    let (built, dirs) = node
        .build("nowhere", &spec(&server, "tiny", &sha, ".", Strategy::Rust))
        .await;
    let failure = built.unwrap_err();
    assert_eq!(failure.stage, Stage::Build);
    assert!(
        failure.message.ends_with(&format!(
            "error: cannot push the image to the registry at {closed}: crane append failed (exit code 1)"
        )),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("connection refused"),
        "crane's own words: {}",
        failure.message
    );
    assert_bounded(&failure);
    let build_log = std::fs::read_to_string(dirs.build_log()).unwrap();
    assert!(
        build_log.contains(&format!("pushing {closed}/micro/tiny:{sha}")),
        "{build_log}"
    );
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
    let node = Node::without_registry(Limits::default());
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
    let node = Node::without_registry(Limits::default());

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
    let node = Node::without_registry(Limits::default());
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
    let node = Node::without_registry(Limits {
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
    let node = Node::without_registry(Limits::default());
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
    let registry = Registry::start();
    let node = Node::new(Limits::default(), &registry.address);

    let cold = Instant::now();
    let (built, _) = node
        .build(
            "cold",
            &spec(&server, "helloworld", &first, "services/helloworld", Strategy::Rust),
        )
        .await;
    let cold = cold.elapsed();
    let digest = built.unwrap();

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
    assert_ne!(digest, digest2, "a new commit is a new image");
    let pulled = tempfile::tempdir().unwrap();
    let image = pull(
        &format!("{}/micro/helloworld@{digest}", registry.address),
        pulled.path(),
    );

    // The built service serves: start it on a free loopback port and wait for it to accept.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(&image.service)
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
}
