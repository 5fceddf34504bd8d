//! Builds from source, done by the build node itself until the real build runs (the BuildKit
//! build issue).
//!
//! The operator turns a MicroService with a git source into a build Job whose pod clones the
//! commit (init container `clone`) and builds and pushes an image (container `build`, the
//! platform's builder image, rootless BuildKit). That builder image does not exist yet, so the
//! build pods go to this node (label and taint `microplane.dev/builder=dev`), which does their work
//! itself when the `build` container names the builder image (see [`pod::is_build_pod`]): it
//! clones with the git CLI ([`clone`]), builds a static executable with cargo (x86_64 musl) or go
//! (CGO off) ([`compile`]), packages it as an OCI image on the base layer and pushes it to the
//! in-cluster registry ([`package`]). The digest it reports is the manifest's, from which the
//! operator makes the Deployment's image, pulled by the real node like any other. Each step's
//! output is the container's log; a failure's termination message is the log's tail, as with the
//! kubelet's `FallbackToLogsOnError`.

mod clone;
mod compile;
pub mod package;
pub mod pod;
mod process;
pub mod reference;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

pub use self::compile::RUST_TARGET;
use self::package::Publisher;
use self::reference::{Digest, Reference};

/// How to turn the source into an executable (`BUILD_STRATEGY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A Cargo package: `cargo build`.
    Rust,
    /// A Go module's main package: `go build`.
    Go,
    /// A Dockerfile: needs BuildKit, which this node does not have.
    Dockerfile,
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Rust" => Ok(Self::Rust),
            "Go" => Ok(Self::Go),
            "Dockerfile" => Ok(Self::Dockerfile),
            other => Err(format!("BUILD_STRATEGY {other:?} is not one of Rust, Go, Dockerfile")),
        }
    }
}

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Credentials for the git remote, from the source's Secret (docs/api.md `source.git.secretRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `token`: HTTP basic auth as `x-access-token` with the token as password (what forges accept).
    Token(Secret),
    /// `username` and `password`: HTTP basic auth.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `ssh-privatekey` and `known_hosts`: ssh with the host keys pinned.
    Ssh {
        /// The private key (OpenSSH or PEM format).
        private_key: Secret,
        /// The `known_hosts` lines the server's key must match.
        known_hosts: String,
    },
}

impl Credentials {
    /// Reads the keys of the source's Secret (its `data`).
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        let read = |key: &str| -> Result<Option<String>, String> {
            data.get(key)
                .map(|bytes| {
                    String::from_utf8(bytes.clone()).map_err(|_| format!("git credentials: key {key} is not UTF-8"))
                })
                .transpose()
        };
        // Values typed into a Secret often end with a newline; a token or password never does.
        let line = |v: String| v.trim_end_matches(['\r', '\n']).to_string();
        if let Some(token) = read("token")? {
            return Ok(Self::Token(Secret(line(token))));
        }
        match (read("username")?, read("password")?) {
            (Some(username), Some(password)) => {
                return Ok(Self::Basic {
                    username: line(username),
                    password: Secret(line(password)),
                });
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err("git credentials: username and password go together".into());
            }
            (None, None) => {}
        }
        match (read("ssh-privatekey")?, read("known_hosts")?) {
            (Some(key), Some(known_hosts)) if !known_hosts.trim().is_empty() => Ok(Self::Ssh {
                private_key: Secret(key),
                known_hosts,
            }),
            (Some(_), _) => Err(
                "git credentials: ssh-privatekey needs known_hosts (ssh without pinned host keys is refused)".into(),
            ),
            (None, _) => Err(
                "git credentials: the Secret has none of token, username+password, ssh-privatekey+known_hosts".into(),
            ),
        }
    }
}

/// What to build: the environment of a build pod (see [`pod::BuildPod`]), checked.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The remote (`GIT_URL`).
    pub git_url: String,
    /// The commit to check out (`GIT_COMMIT`, 40 lowercase hex).
    pub commit: String,
    /// The service's directory in the repository (`GIT_PATH`, `.` for the root); must exist.
    pub path: String,
    /// The directory to build in, relative to the repository root (from `BUILD_CONTEXT`).
    pub context: String,
    /// How to build (`BUILD_STRATEGY`).
    pub strategy: Strategy,
    /// The Dockerfile (`BUILD_DOCKERFILE`), for the Dockerfile strategy.
    pub dockerfile: Option<String>,
    /// The tagged reference to push the result as (`BUILD_IMAGE`), naming the registry as the
    /// cluster's nodes reach it.
    pub image: Reference,
    /// Credentials for the remote.
    pub credentials: Option<Credentials>,
}

/// Checks a relative path inside the repository (`.` is the root); its normal form.
pub fn relative_path(what: &str, p: &str) -> Result<String, String> {
    let path = Path::new(p);
    if p.is_empty() || path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{what} {p:?} is not a relative path inside the repository"));
    }
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    Ok(if parts.is_empty() { ".".into() } else { parts.join("/") })
}

impl BuildSpec {
    /// A spec that builds `path` (also the context) of `commit` and pushes it as `image`.
    pub fn new(git_url: &str, commit: &str, path: &str, strategy: Strategy, image: &str) -> Result<Self, String> {
        if git_url.trim().is_empty() || git_url.starts_with('-') || git_url.chars().any(char::is_control) {
            return Err(format!(
                "GIT_URL {:?} is not a repository URL",
                clone::redact_url(git_url)
            ));
        }
        let commit = commit.to_ascii_lowercase();
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("GIT_COMMIT {commit:?} is not a full 40-hex commit sha"));
        }
        let path = relative_path("GIT_PATH", path)?;
        let image: Reference = image.parse().map_err(|e| format!("BUILD_IMAGE: {e}"))?;
        if image.tag.is_none() || image.digest.is_some() {
            return Err(format!("BUILD_IMAGE {image} must be <name>:<tag>"));
        }
        Ok(Self {
            git_url: git_url.to_string(),
            commit,
            context: path.clone(),
            path,
            strategy,
            dockerfile: None,
            image,
            credentials: None,
        })
    }
}

/// Where one build works: `workspace` is the pod's `/workspace` (the clone goes to `src` in it),
/// `logs` holds `clone.log` and `build.log`, `scratch` is private to the agent (credentials,
/// outputs, the image's layer).
#[derive(Debug, Clone)]
pub struct Workdirs {
    /// The host directory mounted at `/workspace`.
    pub workspace: PathBuf,
    /// The directory of the containers' logs.
    pub logs: PathBuf,
    /// A directory only the agent reads.
    pub scratch: PathBuf,
}

impl Workdirs {
    /// The clone (`/workspace/src`).
    pub fn source(&self) -> PathBuf {
        self.workspace.join("src")
    }
    /// The `clone` container's log.
    pub fn clone_log(&self) -> PathBuf {
        self.logs.join("clone.log")
    }
    /// The `build` container's log.
    pub fn build_log(&self) -> PathBuf {
        self.logs.join("build.log")
    }
}

/// Which container failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The `clone` init container.
    Clone,
    /// The `build` container.
    Build,
}

/// A failed clone or build: the container's exit code and termination message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFailure {
    /// Which step failed.
    pub stage: Stage,
    /// Its exit code (non-zero).
    pub exit_code: i32,
    /// The last lines of its log (at most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes).
    pub message: String,
}

impl fmt::Display for BuildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} failed (exit code {}): {}",
            self.stage, self.exit_code, self.message
        )
    }
}

impl std::error::Error for BuildFailure {}

/// Most lines of a failure's termination message.
pub const TAIL_LINES: usize = 40;
/// Most bytes of a failure's termination message.
pub const TAIL_BYTES: usize = 2048;

/// The last [`TAIL_LINES`] lines of `log`, cut to its last [`TAIL_BYTES`] bytes (at a character
/// boundary), without the trailing newline.
pub fn tail(log: &str) -> String {
    let trimmed = log.trim_end_matches('\n');
    let start = trimmed
        .rmatch_indices('\n')
        .nth(TAIL_LINES - 1)
        .map_or(0, |(i, _)| i + 1);
    let mut out = &trimmed[start..];
    if out.len() > TAIL_BYTES {
        let mut cut = out.len() - TAIL_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = &out[cut..];
    }
    out.to_string()
}

/// A container log: output of the commands it runs, plus the agent's own lines.
pub(crate) struct Log {
    path: PathBuf,
    file: std::fs::File,
}

impl Log {
    fn create(path: PathBuf) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { path, file })
    }

    /// Appends one line of the agent's own.
    fn line(&self, text: &str) {
        let _ = writeln!(&self.file, "{text}");
    }

    /// A handle for a child's output.
    fn stdio(&self) -> Result<std::process::Stdio, String> {
        self.file
            .try_clone()
            .map(Into::into)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Ends the step as failed: `last` is the log's last line; the failure carries the tail.
    fn fail(&self, stage: Stage, exit_code: i32, last: &str) -> BuildFailure {
        self.line(last);
        let text = std::fs::read(&self.path).unwrap_or_default();
        // Only the end matters; reading it whole is fine for logs of this size.
        BuildFailure {
            stage,
            exit_code: if exit_code == 0 { 1 } else { exit_code },
            message: tail(&String::from_utf8_lossy(&text)),
        }
    }
}

/// Time limits of the steps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The clone, all fetches included.
    pub clone: Duration,
    /// The build, the packaging and the push.
    pub build: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            clone: Duration::from_secs(300),
            build: Duration::from_secs(1800),
        }
    }
}

/// Runs builds: at most a few at once, with warm caches shared between builds of a repository.
pub struct Builder {
    cache: PathBuf,
    publisher: Publisher,
    slots: Semaphore,
    parallel: usize,
    limits: Limits,
    /// One lock per cargo target directory: builds sharing one would overwrite each other's output.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Builder {
    /// A builder keeping compiler caches under `cache` and pushing images with `publisher`,
    /// running at most `parallel` builds at once.
    pub fn new(cache: PathBuf, publisher: Publisher, parallel: usize, limits: Limits) -> Self {
        let parallel = parallel.max(1);
        Self {
            cache,
            publisher,
            slots: Semaphore::new(parallel),
            parallel,
            limits,
            locks: Mutex::default(),
        }
    }

    /// How many builds may run at once.
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// Waits for a build slot; the build holds it until the permit drops.
    pub async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }

    fn lock_for(&self, dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(dir.to_path_buf())
            .or_default()
            .clone()
    }

    /// The `clone` step: `spec.commit` of `spec.git_url` checked out in `dirs.source()`.
    pub async fn clone_source(&self, spec: &BuildSpec, dirs: &Workdirs) -> Result<(), BuildFailure> {
        let log = open_log(dirs.clone_log(), Stage::Clone)?;
        let deadline = tokio::time::Instant::now() + self.limits.clone;
        clone::run(spec, dirs, &log, deadline).await
    }

    /// The `build` step on a clone: builds the executable, packages it as an image and pushes it
    /// as `spec.image` (on the publisher's registry address); the manifest digest. Call it holding
    /// a [`Builder::slot`].
    pub async fn build(&self, spec: &BuildSpec, dirs: &Workdirs) -> Result<Digest, BuildFailure> {
        let log = open_log(dirs.build_log(), Stage::Build)?;
        let deadline = tokio::time::Instant::now() + self.limits.build;
        log.line(&format!(
            "building {} of {} at {} with the {:?} strategy",
            spec.context,
            clone::redact_url(&spec.git_url),
            spec.commit,
            spec.strategy
        ));
        let work = dirs.scratch.join("image");
        let pushed = self.build_and_push(spec, dirs, &work, &log, deadline).await;
        // Pushed (or failed): the layer's copy of the executable and its tarball would only fill
        // the disk, a pod at a time.
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
        pushed
    }

    async fn build_and_push(
        &self,
        spec: &BuildSpec,
        dirs: &Workdirs,
        work: &Path,
        log: &Log,
        deadline: tokio::time::Instant,
    ) -> Result<Digest, BuildFailure> {
        let layer = match spec.strategy {
            Strategy::Rust => {
                let target = self.cache.join("cargo").join(compile::cache_key(&spec.git_url));
                let lock = self.lock_for(&target);
                let _held = lock.lock().await;
                let exe = compile::rust(spec, dirs, &target, log, deadline).await?;
                // Copied into the layer while the target directory is still this build's.
                package::service_layer(&exe, work, log, deadline).await?
            }
            Strategy::Go => {
                let exe = compile::go(spec, dirs, &self.cache.join("go-build"), log, deadline).await?;
                package::service_layer(&exe, work, log, deadline).await?
            }
            Strategy::Dockerfile => {
                return Err(log.fail(
                    Stage::Build,
                    1,
                    &format!(
                        "error: the Dockerfile strategy ({}) cannot build on the local dev node, which builds only Rust and Go sources; a real cluster builds Dockerfiles with BuildKit. Set source.build.strategy to Rust or Go to build here.",
                        spec.dockerfile.as_deref().unwrap_or("Dockerfile")
                    ),
                ));
            }
        };
        self.publisher.publish(spec, &layer, log, deadline).await
    }

    /// Clone and build, as one build pod does (waiting for a slot in between).
    pub async fn run_build(&self, spec: &BuildSpec, dirs: &Workdirs) -> Result<Digest, BuildFailure> {
        self.clone_source(spec, dirs).await?;
        let _slot = self.slot().await;
        self.build(spec, dirs).await
    }
}

fn open_log(path: PathBuf, stage: Stage) -> Result<Log, BuildFailure> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    Log::create(path).map_err(|e| BuildFailure {
        stage,
        exit_code: 1,
        message: format!("cannot open the log: {e}"),
    })
}

/// The environment every step starts from: the agent's own minus anything not needed to find and
/// run the tools (no kubeconfig, tokens or proxies leak into a build).
fn base_env() -> Vec<(String, String)> {
    const KEEP: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "TZ",
        "TMPDIR",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "GOPATH",
        "GOROOT",
        "GOMODCACHE",
    ];
    let mut env: Vec<(String, String)> = KEEP
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_like_fallback_to_logs_on_error() {
        assert_eq!(tail("a\nb\n"), "a\nb");
        let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail(&many);
        assert_eq!(t.lines().count(), TAIL_LINES);
        assert!(t.starts_with("line 60\n") && t.ends_with("line 99"), "{t}");
        let long = format!("{}\nlast", "é".repeat(3000));
        let t = tail(&long);
        assert!(t.len() <= TAIL_BYTES && t.ends_with("\nlast"), "{}", t.len());
        assert_eq!(tail(""), "");
    }

    #[test]
    fn checks_specs() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let s = BuildSpec::new(
            "http://127.0.0.1:1/r.git",
            sha,
            "./services/x/",
            Strategy::Rust,
            "r.local/t/s:abc",
        )
        .unwrap();
        assert_eq!((s.path.as_str(), s.context.as_str()), ("services/x", "services/x"));
        let root = BuildSpec::new("http://h/r.git", &sha.to_uppercase(), ".", Strategy::Go, "r/t/s:1").unwrap();
        assert_eq!((root.path.as_str(), root.commit.as_str()), (".", sha));
        for (url, commit, path, image) in [
            ("", sha, ".", "r/t/s:1"),
            ("--upload-pack=x", sha, ".", "r/t/s:1"),
            ("http://h/r.git", "abc123", ".", "r/t/s:1"),
            ("http://h/r.git", "main", ".", "r/t/s:1"),
            ("http://h/r.git", sha, "../x", "r/t/s:1"),
            ("http://h/r.git", sha, "/etc", "r/t/s:1"),
            ("http://h/r.git", sha, "", "r/t/s:1"),
            ("http://h/r.git", sha, ".", "r/t/s"),
            ("http://h/r.git", sha, ".", "NOPE"),
        ] {
            assert!(
                BuildSpec::new(url, commit, path, Strategy::Rust, image).is_err(),
                "{url} {commit} {path} {image}"
            );
        }
        assert!("Auto".parse::<Strategy>().is_err());
    }

    #[test]
    fn reads_credentials_and_never_prints_them() {
        let mut data = BTreeMap::new();
        let mut write = |k: &str, v: &str| {
            data.insert(k.to_string(), v.as_bytes().to_vec());
            Credentials::from_data(&data)
        };
        assert!(
            Credentials::from_data(&BTreeMap::new())
                .unwrap_err()
                .contains("none of")
        );
        assert!(write("ssh-privatekey", "KEY").unwrap_err().contains("known_hosts"));
        assert!(matches!(
            write("known_hosts", "host ssh-ed25519 AAAA\n").unwrap(),
            Credentials::Ssh { .. }
        ));
        assert!(write("username", "bob\n").unwrap_err().contains("go together"));
        let basic = write("password", "hunter2\n").unwrap();
        assert_eq!(
            basic,
            Credentials::Basic {
                username: "bob".into(),
                password: Secret::new("hunter2")
            }
        );
        assert!(!format!("{basic:?}").contains("hunter2"));
        let token = write("token", "tok3n\n").unwrap();
        assert_eq!(token, Credentials::Token(Secret::new("tok3n")));
        assert!(!format!("{token:?}").contains("tok3n"));
    }
}
