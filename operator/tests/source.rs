//! Source resolution against real git repositories made on disk (file:// URLs), the build Job
//! builder, and the status of the source step.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use git2::{Repository, Signature};
use microplane_crds::{BuildStrategy, MicroService};
use microplane_operator::controller::microservice::source::{Run, SourceState};
use microplane_operator::controller::microservice::status;
use microplane_operator::labels;
use microplane_operator::source::git::{self, Credentials, Limits, Request, Revision, Transport};
use microplane_operator::source::job::{self, Build, BuildSettings, Outcome};
use microplane_operator::source::strategy::Strategy;
use microplane_operator::source::{self as src, Resolver, SourceSettings};

/// A repository with `files` committed on `branch`; returns the commit id.
fn commit(repo: &Repository, branch: &str, files: &[(&str, &str)], message: &str) -> String {
    let sig = Signature::now("Test", "test@example.com").unwrap();
    let workdir = repo.workdir().unwrap().to_path_buf();
    let mut index = repo.index().unwrap();
    for (path, content) in files {
        let full = workdir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        index.add_path(Path::new(path)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let refname = format!("refs/heads/{branch}");
    let parent = repo.find_reference(&refname).ok().and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some(&refname), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

struct Fixture {
    _dir: tempfile::TempDir,
    url: String,
    cache: std::path::PathBuf,
    /// First commit of main (tagged v1).
    main1: String,
    /// Head of main.
    head: String,
    dev: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin");
    let repo = Repository::init(&origin).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    let main1 = commit(
        &repo,
        "main",
        &[
            ("services/hello/Cargo.toml", "[package]\nname = \"hello\"\n"),
            ("services/hello/src/main.rs", "fn main() {}\n"),
            ("services/web/Dockerfile", "FROM scratch\n"),
            ("services/web/Cargo.toml", "[package]\nname = \"web\"\n"),
            ("services/go/go.mod", "module go\n"),
            ("docs/README.md", "docs\n"),
        ],
        "first",
    );
    let sig = Signature::now("Test", "test@example.com").unwrap();
    let obj = repo.revparse_single(&main1).unwrap();
    repo.tag("v1", &obj, &sig, "release 1", false).unwrap();
    commit(
        &repo,
        "main",
        &[("services/hello/src/main.rs", "fn main() { }\n")],
        "second",
    );
    let dev = commit(&repo, "dev", &[("services/dev/go.mod", "module dev\n")], "dev");
    // A symlink pointing outside the repository.
    std::os::unix::fs::symlink("/etc", origin.join("escape")).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("escape")).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let head = repo
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    let head = repo
        .commit(Some("refs/heads/main"), &sig, &sig, "link", &tree, &[&head])
        .unwrap()
        .to_string();
    Fixture {
        url: format!("file://{}", origin.display()),
        cache: dir.path().join("cache"),
        _dir: dir,
        main1,
        head,
        dev,
    }
}

fn request(url: &str, revision: Revision, path: &str) -> Request {
    Request {
        url: url.into(),
        revision,
        path: path.into(),
        strategy: BuildStrategy::Auto,
        dockerfile: "Dockerfile".into(),
    }
}

fn limits() -> Limits {
    Limits {
        max_bytes: 64 << 20,
        deadline: Instant::now() + Duration::from_secs(30),
    }
}

fn resolve(f: &Fixture, req: &Request) -> Result<git::Resolved, git::SourceError> {
    let repo = git::cache_path(&f.cache, "t", &req.url);
    git::resolve(&repo, req, &Credentials::None, &Transport::File, limits())
}

#[test]
fn branches_tags_commits_and_the_default_branch_resolve() {
    let f = fixture();
    let r = resolve(&f, &request(&f.url, Revision::Branch("main".into()), "services/hello")).unwrap();
    assert_eq!(r.commit, f.head);
    assert_eq!(r.strategy, Strategy::Rust);
    let r = resolve(&f, &request(&f.url, Revision::Default, "services/hello")).unwrap();
    assert_eq!(r.commit, f.head, "the default branch is main");
    let r = resolve(&f, &request(&f.url, Revision::Tag("v1".into()), "services/hello")).unwrap();
    assert_eq!(r.commit, f.main1, "an annotated tag peels to its commit");
    let r = resolve(&f, &request(&f.url, Revision::Branch("dev".into()), "services/dev")).unwrap();
    assert_eq!(r.commit, f.dev);
    assert_eq!(r.strategy, Strategy::Go);
    let short = f.main1[..9].to_string();
    let r = resolve(&f, &request(&f.url, Revision::Commit(short), "services/web")).unwrap();
    assert_eq!(r.commit, f.main1);
    assert_eq!(r.strategy, Strategy::Dockerfile, "a Dockerfile wins over Cargo.toml");
}

#[test]
fn a_commit_in_the_cache_resolves_without_the_remote() {
    let f = fixture();
    resolve(&f, &request(&f.url, Revision::Branch("main".into()), "services/hello")).unwrap();
    std::fs::remove_dir_all(f.url.trim_start_matches("file://")).unwrap();
    let r = resolve(&f, &request(&f.url, Revision::Commit(f.main1.clone()), "services/go")).unwrap();
    assert_eq!((r.commit, r.strategy), (f.main1.clone(), Strategy::Go));
    let e = resolve(&f, &request(&f.url, Revision::Branch("main".into()), "services/go")).unwrap_err();
    assert_eq!(e.reason, "SourceUnreachable", "{e}");
}

#[test]
fn missing_revisions_paths_and_builds_are_named() {
    let f = fixture();
    let e = resolve(&f, &request(&f.url, Revision::Branch("nope".into()), "")).unwrap_err();
    assert_eq!(e.reason, "RevisionNotFound");
    assert!(e.message.contains("branch nope"), "{e}");
    let e = resolve(&f, &request(&f.url, Revision::Tag("v9".into()), "")).unwrap_err();
    assert_eq!(e.reason, "RevisionNotFound");
    let e = resolve(&f, &request(&f.url, Revision::Commit("abcdef1234".into()), "")).unwrap_err();
    assert_eq!(e.reason, "RevisionNotFound");
    assert!(e.message.contains("commit abcdef1234"), "{e}");
    let e = resolve(&f, &request(&f.url, Revision::Default, "services/missing")).unwrap_err();
    assert_eq!(e.reason, "PathNotFound");
    assert!(e.message.contains("services/missing does not exist"), "{e}");
    let e = resolve(&f, &request(&f.url, Revision::Default, "docs/README.md")).unwrap_err();
    assert_eq!(e.reason, "PathNotFound");
    assert!(e.message.contains("not a directory"), "{e}");
    let e = resolve(&f, &request(&f.url, Revision::Default, "escape")).unwrap_err();
    assert_eq!(e.reason, "PathNotFound");
    assert!(e.message.contains("symbolic link"), "{e}");
    let e = resolve(&f, &request(&f.url, Revision::Default, "docs")).unwrap_err();
    assert_eq!(e.reason, "NothingToBuild");
    assert!(
        e.message
            .contains("looked for Dockerfile, Cargo.toml and go.mod in docs at commit"),
        "{e}"
    );
    let mut rust = request(&f.url, Revision::Default, "services/go");
    rust.strategy = BuildStrategy::Rust;
    let e = resolve(&f, &rust).unwrap_err();
    assert_eq!(e.reason, "NothingToBuild");
    assert!(e.message.contains("needs Cargo.toml"), "{e}");
    let e = resolve(&f, &request("file:///nonexistent/repo", Revision::Default, "")).unwrap_err();
    assert_eq!(e.reason, "SourceUnreachable", "{e}");
}

#[test]
fn a_repository_over_the_size_limit_is_refused() {
    let f = fixture();
    // A large incompressible file makes the pack bigger than the limit.
    let origin = Repository::open(f.url.trim_start_matches("file://")).unwrap();
    let mut noise = Vec::with_capacity(2 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < (2 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let blob = String::from_utf8_lossy(&noise).into_owned();
    commit(
        &origin,
        "big",
        &[("services/big/go.mod", "module big\n"), ("services/big/blob", &blob)],
        "big",
    );
    let req = request(&f.url, Revision::Branch("big".into()), "services/big");
    let small = Limits {
        max_bytes: 512 << 10,
        deadline: Instant::now() + Duration::from_secs(30),
    };
    // libgit2's local transport copies objects without a pack, so serve the repository through
    // `git daemon`-free smart transport: a bare clone reached over file:// still packs.
    let e = git::resolve(&f.cache, &req, &Credentials::None, &Transport::File, small);
    match e {
        Err(e) => assert_eq!(e.reason, "RepositoryTooLarge", "{e}"),
        Ok(_) => panic!("a 2 MiB repository passed a 512 KiB limit"),
    }
}

#[test]
fn ssh_needs_pinned_host_keys() {
    let f = fixture();
    let req = request("ssh://git@127.0.0.1:1/x.git", Revision::Default, "");
    let transport = git::transport(&req.url, false).unwrap();
    assert_eq!(
        transport,
        Transport::Ssh {
            host: "127.0.0.1".into(),
            port: Some(1)
        }
    );
    let e = git::resolve(&f.cache, &req, &Credentials::None, &transport, limits()).unwrap_err();
    assert_eq!(e.reason, "HostKeyNotPinned");
    let key_only = Credentials::Ssh {
        private_key: "-----BEGIN OPENSSH PRIVATE KEY-----".into(),
        known_hosts: None,
    };
    let e = git::resolve(&f.cache, &req, &key_only, &transport, limits()).unwrap_err();
    assert_eq!(e.reason, "HostKeyNotPinned");
    assert_eq!(
        git::transport("git@github.com:acme/x.git", false).unwrap(),
        Transport::Ssh {
            host: "github.com".into(),
            port: None
        }
    );
}

#[test]
fn known_hosts_matching() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20abcdefghijklmnopqrstuvwxyz012345";
    let other = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let line = |hosts: &str, k: &[u8]| format!("{hosts} ssh-ed25519 {}\n", b64.encode(k));
    let kh = line("github.com,gitlab.com", key);
    assert!(git::host_key_pinned(&kh, "github.com", None, key));
    assert!(git::host_key_pinned(&kh, "gitlab.com", None, key));
    assert!(!git::host_key_pinned(&kh, "github.com", None, other), "another key");
    assert!(!git::host_key_pinned(&kh, "evil.com", None, key), "another host");
    assert!(
        !git::host_key_pinned(&kh, "github.com", Some(2222), key),
        "another port"
    );
    let kh = line("[git.example]:2222", key);
    assert!(git::host_key_pinned(&kh, "git.example", Some(2222), key));
    assert!(!git::host_key_pinned(&kh, "git.example", None, key));
    // Hashed entry: |1|salt|HMAC-SHA1(salt, host).
    let salt = b"0123456789abcdefghij";
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
    let mac = aws_lc_rs::hmac::sign(&k, b"github.com");
    let hashed = format!("|1|{}|{}", b64.encode(salt), b64.encode(mac.as_ref()));
    assert!(git::host_key_pinned(&line(&hashed, key), "github.com", None, key));
    assert!(!git::host_key_pinned(&line(&hashed, key), "gitlab.com", None, key));
    // Revoked keys are refused even when listed too.
    let kh = format!("{}@revoked {}", line("github.com", key), line("github.com", key));
    assert!(!git::host_key_pinned(&kh, "github.com", None, key));
    assert!(!git::host_key_pinned("# comment\n\ngarbage\n", "github.com", None, key));
}

#[test]
fn insecure_urls_need_the_flag() {
    for url in ["http://127.0.0.1:1/x.git", "file:///tmp/x"] {
        let e = git::transport(url, false).unwrap_err();
        assert_eq!(e.reason, "InsecureSourceRefused", "{url}");
        assert!(e.message.contains("--allow-insecure-git-urls"));
        assert!(git::transport(url, true).is_ok());
    }
    assert_eq!(
        git::transport("https://github.com/a/b", false).unwrap(),
        Transport::Https
    );
    assert_eq!(git::transport("ftp://x/y", true).unwrap_err().reason, "InvalidSource");
}

#[test]
fn credentials_come_from_documented_keys_and_never_print() {
    use std::collections::BTreeMap;
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, k8s_openapi::ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
            .collect()
    };
    let c = Credentials::from_secret_data(&data(&[("token", "s3cret\n")])).unwrap();
    assert_eq!(c, Credentials::Token("s3cret".into()));
    assert!(!format!("{c:?}").contains("s3cret"));
    let c = Credentials::from_secret_data(&data(&[("username", "u"), ("password", "hunter2")])).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    let e = Credentials::from_secret_data(&data(&[("username", "u")])).unwrap_err();
    assert_eq!(e.reason, "SecretInvalid");
}

#[test]
fn spec_paths_that_escape_are_refused_before_any_fetch() {
    let ms: MicroService = serde_yaml::from_str(
        "apiVersion: microplane.dev/v1alpha1\nkind: MicroService\nmetadata: {name: a, namespace: t}\nspec:\n  source:\n    git: {url: 'https://example.com/r.git', path: 'a/../../etc'}\n",
    )
    .unwrap();
    let e = src::request(ms.spec.source.as_ref().unwrap()).unwrap_err();
    assert_eq!(e.reason, "PathEscapesRepository");
}

#[tokio::test]
async fn the_resolver_caches_polls_and_backs_off() {
    let f = fixture();
    let settings = SourceSettings {
        cache_dir: f.cache.clone(),
        allow_insecure: true,
        ..SourceSettings::default()
    };
    let resolver = Resolver::default();
    let req = request(&f.url, Revision::Branch("main".into()), "services/hello");
    let fetched = std::sync::atomic::AtomicU32::new(0);
    let creds = || async {
        fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Credentials::None)
    };
    let poll = Some(Duration::from_millis(300));
    let a = resolver
        .resolve(("t", "a"), req.clone(), None, poll, creds(), &settings)
        .await;
    assert_eq!(a.outcome.unwrap().commit, f.head);
    assert_eq!(a.again_in, poll);
    // Within the poll interval: cached, no network.
    let b = resolver
        .resolve(("t", "a"), req.clone(), None, poll, creds(), &settings)
        .await;
    assert!(b.outcome.is_ok());
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(resolver.known("t/a", &req, None));
    // A new commit on the branch is seen once the interval passed.
    let origin = Repository::open(f.url.trim_start_matches("file://")).unwrap();
    let newer = commit(&origin, "main", &[("services/hello/src/lib.rs", "")], "third");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let c = resolver
        .resolve(("t", "a"), req.clone(), None, poll, creds(), &settings)
        .await;
    assert_eq!(c.outcome.unwrap().commit, newer);
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A failure is not retried before its delay.
    let bad = request(&f.url, Revision::Branch("nope".into()), "");
    let d = resolver
        .resolve(("t", "b"), bad.clone(), None, None, creds(), &settings)
        .await;
    assert_eq!(d.outcome.unwrap_err().reason, "RevisionNotFound");
    assert_eq!(d.again_in, Some(src::retry_delay(1)));
    let e = resolver.resolve(("t", "b"), bad, None, None, creds(), &settings).await;
    assert!(e.again_in.unwrap() <= src::retry_delay(1));
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 3, "no second fetch");
}

fn build<'a>(commit: &'a str, strategy: Strategy) -> Build<'a> {
    Build {
        tenant: "acme",
        service: "hello",
        url: "https://example.com/r.git",
        commit,
        path: "services/hello",
        strategy,
        dockerfile: "Dockerfile",
        credentials: None,
    }
}

#[test]
fn build_jobs_are_named_by_what_shapes_the_image() {
    let s = BuildSettings::default();
    let c1 = "a".repeat(40);
    let c2 = "b".repeat(40);
    let a = build(&c1, Strategy::Rust);
    assert_eq!(a.job_name(&s), build(&c1, Strategy::Rust).job_name(&s));
    assert_ne!(a.job_name(&s), build(&c2, Strategy::Rust).job_name(&s));
    assert_ne!(a.job_name(&s), build(&c1, Strategy::Dockerfile).job_name(&s));
    let other = BuildSettings {
        builder_image: "builder:2".into(),
        ..BuildSettings::default()
    };
    assert_ne!(a.job_name(&s), a.job_name(&other));
    assert!(a.job_name(&s).starts_with("acme-hello-build-"));
    let long = "x".repeat(63);
    let b = Build {
        service: &long,
        ..build(&c1, Strategy::Go)
    };
    assert!(b.job_name(&s).len() <= 63, "{}", b.job_name(&s));
    assert_eq!(a.image(&s), format!("localhost:5000/acme/hello:{c1}"));
}

#[test]
fn build_job_shape() {
    let s = BuildSettings::default();
    let c = "c".repeat(40);
    let creds = "acme-hello-build-x-git";
    let job = job::desired(
        &Build {
            credentials: Some(creds),
            ..build(&c, Strategy::Rust)
        },
        &s,
    );
    assert_eq!(job.metadata.namespace.as_deref(), Some("microplane-builds"));
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(1800));
    assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
    let labels = job.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get(labels::BUILD_OF_LABEL).map(String::as_str), Some("hello"));
    assert_eq!(labels.get(labels::TENANT_LABEL).map(String::as_str), Some("acme"));
    assert!(
        !labels.contains_key("microplane.dev/service"),
        "build pods must never match the service's selector"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let clone = &pod.init_containers.as_ref().unwrap()[0];
    let builder = &pod.containers[0];
    let env = |c: &k8s_openapi::api::core::v1::Container, n: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == n)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env(clone, "GIT_COMMIT").as_deref(), Some(c.as_str()));
    assert_eq!(env(clone, "GIT_PATH").as_deref(), Some("services/hello"));
    assert_eq!(env(builder, "BUILD_STRATEGY").as_deref(), Some("Rust"));
    assert_eq!(
        env(builder, "BUILD_CONTEXT").as_deref(),
        Some("/workspace/src/services/hello")
    );
    assert_eq!(
        env(builder, "BUILD_IMAGE").as_deref(),
        Some(format!("localhost:5000/acme/hello:{c}").as_str())
    );
    assert!(
        env(builder, "BUILD_GENERATED_DOCKERFILE")
            .unwrap()
            .contains("cargo install")
    );
    // Credentials are mounted in the clone step only.
    let mounts = |c: &k8s_openapi::api::core::v1::Container| -> Vec<String> {
        c.volume_mounts.iter().flatten().map(|m| m.name.clone()).collect()
    };
    assert!(mounts(clone).contains(&"git-credentials".to_string()));
    assert!(!mounts(builder).contains(&"git-credentials".to_string()));
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "git-credentials")
        .unwrap();
    assert_eq!(vol.secret.as_ref().unwrap().secret_name.as_deref(), Some(creds));
    // The clone step is fully restricted; the builder is as locked down as BuildKit allows.
    let sc = clone.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    // BuildKit is root of the pod's user namespace only, with the runtime's seccomp profile.
    assert_eq!(pod.host_users, Some(false));
    let sc = builder.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(sc.privileged, None);
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(
        !env(builder, "BUILDKITD_FLAGS").unwrap().contains("no-process-sandbox"),
        "RUN steps run in containers of their own"
    );
    assert!(
        builder
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()
            .contains_key("memory")
    );
    // Secrets reach the containers as files only: no environment variable reads a Secret, and the
    // only Secret volumes are the source credentials (clone) and the registry's (build).
    for c in [clone, builder] {
        assert_eq!(c.termination_message_policy.as_deref(), Some("FallbackToLogsOnError"));
        for e in c.env.iter().flatten() {
            let from_secret = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref());
            assert!(from_secret.is_none(), "{}: env {} reads a Secret", c.name, e.name);
        }
    }
    let secret_volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.secret.is_some())
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(secret_volumes, ["git-credentials"]);
    let git_mount = clone
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "git-credentials")
        .unwrap();
    assert_eq!(git_mount.mount_path, job::CREDENTIALS_DIR);
    assert_eq!(git_mount.read_only, Some(true));
    // The clone script reads every credential from that directory, never from its arguments.
    let script = clone.command.as_ref().unwrap().join(" ");
    for key in ["token", "username", "password", "ssh-privatekey", "known_hosts"] {
        assert!(
            script.contains(&format!("$d/{key}")) || script.contains(&format!("$creds/{key}")),
            "the clone step reads {key} from {}",
            job::CREDENTIALS_DIR
        );
    }
    // The registry's credentials, when set, go to the build step only, read-only.
    let with_registry = BuildSettings {
        registry_secret: Some("push".into()),
        ..BuildSettings::default()
    };
    let job = job::desired(&build(&c, Strategy::Go), &with_registry);
    let pod = job.spec.unwrap().template.spec.unwrap();
    let (clone, builder) = (&pod.init_containers.as_ref().unwrap()[0], &pod.containers[0]);
    assert!(!mounts(clone).contains(&"registry-credentials".to_string()));
    let m = builder
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "registry-credentials")
        .unwrap();
    assert_eq!(
        (m.mount_path.as_str(), m.read_only),
        (job::REGISTRY_CREDENTIALS_DIR, Some(true))
    );
    assert_eq!(
        env(builder, "DOCKER_CONFIG").as_deref(),
        Some(job::REGISTRY_CREDENTIALS_DIR)
    );
    // Dockerfile builds name their Dockerfile and get no generated one.
    let job = job::desired(&build(&c, Strategy::Dockerfile), &s);
    let builder = &job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(env(builder, "BUILD_DOCKERFILE").as_deref(), Some("Dockerfile"));
    assert!(env(builder, "BUILD_GENERATED_DOCKERFILE").is_none());
}

fn finished_job(condition: &str) -> k8s_openapi::api::batch::v1::Job {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "j", "namespace": "microplane-builds"},
        "status": {"conditions": [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}
    }))
    .unwrap()
}

fn pod_with(container: &str, init: bool, exit: i32, message: &str) -> k8s_openapi::api::core::v1::Pod {
    let statuses = serde_json::json!([{
        "name": container, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": exit, "message": message}}
    }]);
    let key = if init {
        "initContainerStatuses"
    } else {
        "containerStatuses"
    };
    serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": {key: statuses}})).unwrap()
}

#[test]
fn build_outcomes() {
    let digest = format!("sha256:{}", "f".repeat(64));
    let ok = pod_with("build", false, 0, &format!("{digest}\n"));
    assert_eq!(
        job::outcome(&finished_job("Complete"), &[&ok]),
        Outcome::Succeeded(digest)
    );
    assert_eq!(job::outcome(&finished_job("Complete"), &[]), Outcome::Running);
    let garbage = pod_with("build", false, 0, "done");
    assert!(matches!(
        job::outcome(&finished_job("Complete"), &[&garbage]),
        Outcome::Failed(_)
    ));
    let log = (1..=100).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
    let failed = pod_with("build", false, 101, &log);
    let Outcome::Failed(m) = job::outcome(&finished_job("Failed"), &[&failed]) else {
        panic!("not failed")
    };
    assert!(
        m.starts_with("step build exited with code 101 (whole log: kubectl logs -n microplane-builds job/j -c build):"),
        "names where the whole log is: {m}"
    );
    assert!(m.contains("line 100") && !m.contains("line 80\n"), "the tail only: {m}");
    let clone_failed = pod_with("clone", true, 128, "fatal: couldn't find remote ref");
    let Outcome::Failed(m) = job::outcome(&finished_job("Failed"), &[&clone_failed]) else {
        panic!("not failed")
    };
    assert!(m.contains("step clone exited with code 128"), "{m}");
    assert!(m.contains("job/j -c clone"), "{m}");
    let Outcome::Failed(m) = job::outcome(&finished_job("Failed"), &[]) else {
        panic!("not failed")
    };
    assert!(m.contains("BackoffLimitExceeded"), "{m}");
    let running: k8s_openapi::api::batch::v1::Job =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "j"}})).unwrap();
    assert_eq!(job::outcome(&running, &[]), Outcome::Running);
    assert_eq!(job::tail(&"é".repeat(2000), 5, 100).chars().count(), 51);
}

#[test]
fn status_of_the_source_step() {
    let c = "d".repeat(40);
    let (mut st, wanted) = status::compute(None, Some(3), None, None, None, None);
    let conds = status::with_source(
        &mut st,
        wanted,
        &SourceState::Building {
            commit: c.clone(),
            job: "j".into(),
        },
        None,
        Vec::new(),
    );
    let types: Vec<_> = conds.iter().map(|c| c.type_).collect();
    assert_eq!(types, ["Ready", "SourceReady", "BuildSucceeded", "Available"]);
    assert_eq!(st.phase, Some(microplane_crds::Phase::Building));
    assert_eq!((conds[0].status, conds[0].reason.as_str()), (false, "Building"));
    assert_eq!((conds[1].status, conds[1].reason.as_str()), (true, "Resolved"));
    assert_eq!(conds[3].reason, "Building", "nothing runs yet");

    // A failed build while the previous commit runs: Ready False, Available True.
    let run = Run {
        image: "r/acme/hello@sha256:1".into(),
        version: "e".repeat(40),
    };
    let mut d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"generation": 1},
        "spec": {"replicas": 1, "selector": {}, "template": {}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1}
    }))
    .unwrap();
    let r = status::Rollout::of(&d);
    let (mut st, wanted) = status::compute(None, Some(3), Some(&run.image), None, Some(&r), None);
    let conds = status::with_source(
        &mut st,
        wanted,
        &SourceState::BuildFailed {
            commit: c.clone(),
            message: "step build exited with code 1".into(),
        },
        Some(&run),
        Vec::new(),
    );
    assert_eq!((conds[0].status, conds[0].reason.as_str()), (false, "BuildFailed"));
    assert_eq!((conds[3].status, conds[3].reason.as_str()), (true, "Running"));
    assert_eq!(st.commit.as_deref(), Some(run.version.as_str()), "the running commit");
    assert_eq!(st.phase, Some(microplane_crds::Phase::Failed));

    // Built and rolled out: Ready.
    d.metadata.generation = Some(1);
    let (mut st, wanted) = status::compute(None, Some(3), Some(&run.image), None, Some(&r), None);
    let conds = status::with_source(
        &mut st,
        wanted,
        &SourceState::Built {
            commit: run.version.clone(),
            image: run.image.clone(),
        },
        Some(&run),
        Vec::new(),
    );
    assert!(conds.iter().all(|c| c.status), "{conds:?}");
    assert_eq!(st.phase, Some(microplane_crds::Phase::Running));
    assert_eq!(st.image.as_deref(), Some(run.image.as_str()));

    // An unresolvable source says why in Ready and SourceReady.
    let (mut st, wanted) = status::compute(None, Some(3), None, None, None, None);
    let conds = status::with_source(
        &mut st,
        wanted,
        &SourceState::Failed(git::SourceError::new(
            microplane_crds::Reason::AuthenticationFailed,
            "refused",
        )),
        None,
        Vec::new(),
    );
    assert_eq!(
        (conds[0].reason.as_str(), conds[1].reason.as_str()),
        ("AuthenticationFailed", "AuthenticationFailed")
    );
    assert_eq!(st.phase, Some(microplane_crds::Phase::Failed));
}

/// Issue 20, item 8: a commit pinned by URL is answered from the git cache without the network. A
/// cache shared by tenants would tell tenant B, with no credentials, whether a commit (and a path)
/// exists in tenant A's private repository; each tenant has a partition of its own.
#[tokio::test]
async fn the_git_cache_never_answers_for_another_tenant() {
    let f = fixture();
    let settings = SourceSettings {
        cache_dir: f.cache.clone(),
        allow_insecure: true,
        ..SourceSettings::default()
    };
    let resolver = Resolver::default();
    let none = || async { Ok(Credentials::None) };
    let main = request(&f.url, Revision::Branch("main".into()), "services/hello");
    let a = resolver
        .resolve(("alpha", "a"), main, None, None, none(), &settings)
        .await;
    assert_eq!(a.outcome.unwrap().commit, f.head);
    // The remote goes away (for tenant B: a private repository it has no credentials for).
    std::fs::remove_dir_all(f.url.trim_start_matches("file://")).unwrap();
    let pinned = request(&f.url, Revision::Commit(f.main1.clone()), "services/go");
    let b = resolver
        .resolve(("beta", "probe"), pinned.clone(), None, None, none(), &settings)
        .await;
    assert_eq!(
        b.outcome.unwrap_err().reason,
        "SourceUnreachable",
        "tenant beta must not learn from alpha's fetch that the commit exists"
    );
    // Tenant alpha's own pinned commit still needs no network.
    let again = resolver
        .resolve(("alpha", "b"), pinned, None, None, none(), &settings)
        .await;
    assert_eq!(again.outcome.unwrap().commit, f.main1);
}
