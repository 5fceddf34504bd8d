//! The `build` step's compilers: cargo for Rust, go for Go, both offline (a build reaches no
//! network: crates and modules come from the agent user's caches) and at low priority, so the
//! machine's other work (the control plane, the node's pods) keeps going. Both make static
//! executables, since the image has no libc: cargo for [`RUST_TARGET`] (musl; `musl-gcc` for
//! crates with C parts), go with cgo off.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::process::Command;
use tokio::time::Instant;

use super::process::{self, Ended};
use super::{BuildFailure, BuildSpec, Log, Stage, Workdirs, base_env};

/// The target cargo builds for: statically linked with musl.
pub const RUST_TARGET: &str = "x86_64-unknown-linux-musl";

/// The name of a repository's warm cache: its last path segment, so builds of one repository
/// share compiled dependencies even when it is served from another host or port (a loopback test
/// server's port changes every run). Repositories of the same name share a cache, which is safe:
/// builds of one cache take turns and cargo's fingerprints see every changed source.
pub(super) fn cache_key(git_url: &str) -> String {
    let name = git_url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default()
        .trim_end_matches(".git");
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if key.trim_matches('_').is_empty() {
        "repository".into()
    } else {
        key
    }
}

/// A compiler run at low priority with the base environment plus `env`.
fn tool(program: &str, env: &[(&str, &Path)], dir: &Path) -> Command {
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "10", program])
        .env_clear()
        .envs(base_env())
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .current_dir(dir);
    cmd
}

fn ended_message(ended: &Ended, what: &str) -> Option<(i32, String)> {
    match ended {
        Ended::Exited { code: 0, .. } => None,
        Ended::Exited { code, .. } => Some((*code, format!("error: {what} failed (exit code {code})"))),
        Ended::NotStarted(e) => Some((1, format!("error: cannot run {what}: {e}"))),
        Ended::TimedOut => Some((124, format!("error: {what} took too long and was stopped"))),
    }
}

/// The build directory on the host, which must exist in the clone.
fn context_dir(spec: &BuildSpec, dirs: &Workdirs, log: &Log) -> Result<PathBuf, BuildFailure> {
    let dir = dirs.source().join(&spec.context);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(log.fail(
            Stage::Build,
            1,
            &format!(
                "error: BUILD_CONTEXT {} is not a directory at commit {}",
                spec.context, spec.commit
            ),
        ))
    }
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    manifest_path: PathBuf,
    default_run: Option<String>,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct Message {
    reason: String,
    manifest_path: Option<PathBuf>,
    target: Option<Target>,
    executable: Option<PathBuf>,
}

/// The binary of a package to run: the only one, else `default-run`, else the one named like the
/// package.
fn pick_binary(pkg: &Package) -> Result<String, String> {
    let bins: Vec<&str> = pkg
        .targets
        .iter()
        .filter(|t| t.kind.iter().any(|k| k == "bin"))
        .map(|t| t.name.as_str())
        .collect();
    match bins.as_slice() {
        [] => Err(format!("package {} has no binary target to run", pkg.name)),
        [one] => Ok((*one).to_string()),
        many => pkg
            .default_run
            .as_deref()
            .or_else(|| many.iter().copied().find(|b| *b == pkg.name))
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "package {} has binaries {} and no default-run: set package.default-run to the service's",
                    pkg.name,
                    many.join(", ")
                )
            }),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `cargo build --offline --bins --target` [`RUST_TARGET`] in the context with the warm target
/// directory `target`; the executable of the context's package (cargo reports where it is:
/// `<target>/x86_64-unknown-linux-musl/debug/<bin>`).
pub(super) async fn rust(
    spec: &BuildSpec,
    dirs: &Workdirs,
    target: &Path,
    log: &Log,
    deadline: Instant,
) -> Result<PathBuf, BuildFailure> {
    let fail = |code: i32, last: &str| log.fail(Stage::Build, code, last);
    let dir = context_dir(spec, dirs, log)?;
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(fail(
            1,
            &format!(
                "error: nothing to build in {}: there is no Cargo.toml (the Rust strategy builds a Cargo package)",
                spec.context
            ),
        ));
    }
    let env = [("CARGO_TARGET_DIR", target), ("CARGO_TERM_COLOR", Path::new("never"))];
    let mut metadata = tool("cargo", &env, &dir);
    metadata.args(["metadata", "--offline", "--no-deps", "--format-version=1"]);
    let ended = process::run(&mut metadata, log, true, deadline).await;
    if let Some((code, msg)) = ended_message(&ended, "cargo metadata") {
        return Err(fail(code, &msg));
    }
    let meta: Metadata = serde_json::from_slice(&ended.success().unwrap_or_default())
        .map_err(|e| fail(1, &format!("error: cargo metadata printed something unexpected: {e}")))?;
    let pkg = meta
        .packages
        .iter()
        .find(|p| same_file(&p.manifest_path, &manifest))
        .ok_or_else(|| {
            fail(
                1,
                &format!(
                    "error: {}/Cargo.toml is not a package (a virtual workspace manifest?): point the source's path at the service's package",
                    spec.context
                ),
            )
        })?;
    let bin = pick_binary(pkg).map_err(|e| fail(1, &format!("error: {e}")))?;
    log.line(&format!("cargo build of package {} (binary {bin})", pkg.name));

    let mut build = tool("cargo", &env, &dir);
    build.args([
        "build",
        "--offline",
        "--bins",
        "--target",
        RUST_TARGET,
        "--message-format=json-render-diagnostics",
    ]);
    let ended = process::run(&mut build, log, true, deadline).await;
    if let Some((code, msg)) = ended_message(&ended, "cargo build") {
        return Err(fail(code, &msg));
    }
    let stdout = ended.success().unwrap_or_default();
    let exe = stdout
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Message>(line).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter(|m| m.manifest_path.as_deref().is_some_and(|p| same_file(p, &manifest)))
        .filter(|m| {
            m.target
                .as_ref()
                .is_some_and(|t| t.name == bin && t.kind.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m.executable);
    exe.ok_or_else(|| {
        fail(
            1,
            &format!("error: cargo build reported no executable for binary {bin}"),
        )
    })
}

/// `go build` of the context's main package into the private scratch directory; the executable.
pub(super) async fn go(
    spec: &BuildSpec,
    dirs: &Workdirs,
    cache: &Path,
    log: &Log,
    deadline: Instant,
) -> Result<PathBuf, BuildFailure> {
    let fail = |code: i32, last: &str| log.fail(Stage::Build, code, last);
    let dir = context_dir(spec, dirs, log)?;
    if !dir.join("go.mod").is_file() {
        return Err(fail(
            1,
            &format!(
                "error: nothing to build in {}: there is no go.mod (the Go strategy builds a Go module's main package)",
                spec.context
            ),
        ));
    }
    let out_dir = dirs.scratch.join("out");
    std::fs::create_dir_all(&out_dir).map_err(|e| fail(1, &format!("error: {}: {e}", out_dir.display())))?;
    let out = out_dir.join("service");
    let env = [
        ("GOFLAGS", Path::new("-mod=mod -buildvcs=false")),
        ("GOPROXY", Path::new("off")),
        ("GOTOOLCHAIN", Path::new("local")),
        ("CGO_ENABLED", Path::new("0")),
        ("GOOS", Path::new("linux")),
        ("GOARCH", Path::new("amd64")),
        ("GOCACHE", cache),
    ];
    let mut build = tool("go", &env, &dir);
    build.args(["build", "-trimpath", "-o"]).arg(&out).arg(".");
    let ended = process::run(&mut build, log, false, deadline).await;
    if let Some((code, msg)) = ended_message(&ended, "go build") {
        return Err(fail(code, &msg));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, bins: &[&str], default_run: Option<&str>) -> Package {
        Package {
            name: name.into(),
            manifest_path: PathBuf::new(),
            default_run: default_run.map(str::to_string),
            targets: bins
                .iter()
                .map(|b| Target {
                    name: (*b).into(),
                    kind: vec!["bin".into()],
                })
                .chain([Target {
                    name: name.into(),
                    kind: vec!["lib".into()],
                }])
                .collect(),
        }
    }

    #[test]
    fn picks_the_service_binary() {
        assert_eq!(pick_binary(&pkg("a", &["x"], None)).unwrap(), "x");
        assert_eq!(
            pick_binary(&pkg("helloworld", &["helloworld", "helloworld-call"], None)).unwrap(),
            "helloworld"
        );
        assert_eq!(pick_binary(&pkg("a", &["x", "y"], Some("y"))).unwrap(), "y");
        assert!(
            pick_binary(&pkg("a", &["x", "y"], None))
                .unwrap_err()
                .contains("default-run")
        );
        assert!(pick_binary(&pkg("a", &[], None)).unwrap_err().contains("no binary"));
    }

    #[test]
    fn one_cache_per_repository() {
        assert_eq!(cache_key("http://127.0.0.1:4242/helloworld.git"), "helloworld");
        assert_eq!(cache_key("https://u:p@h/org/Repo/"), "repo");
        assert_eq!(cache_key("git@github.com:org/my.svc.git"), "my_svc");
        assert_eq!(cache_key("ssh://h/"), "h");
        assert_eq!(cache_key("http://h/.."), "repository");
        assert_ne!(cache_key("http://h/r.git"), cache_key("http://h/s.git"));
    }
}
