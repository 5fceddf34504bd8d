//! The end of the `build` step: the executable packaged as an OCI image and pushed to the registry.
//!
//! The image has the two layers of the images `make images` builds (e2e/scripts/build-images.sh):
//! the base layer (`/etc/passwd` with the nonroot user 65532, the CA bundle, `/tmp`) and one with
//! the executable at [`SERVICE_PATH`]; its entrypoint is that path and its user `65532:65532`. The
//! executable's layer is reproducible (GNU tar: names sorted, mtime 0, owner and group 0), so one
//! executable always makes one layer digest.
//!
//! crane (go-containerregistry) assembles and pushes it: `crane append` pushes both layers on an
//! empty OCI image, `crane mutate` sets the configuration and pushes the result under the same tag,
//! printing `<repository>@sha256:…`. That is the manifest digest, which names the image in every
//! registry holding it: pushed here to `<registry address>/<path>:<tag>`, it is what the node pulls
//! as `localhost:5000/<path>@<digest>`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::process::Command;
use tokio::time::Instant;

use super::process::{self, Ended};
use super::reference::{Digest, Reference};
use super::{BuildFailure, BuildSpec, Log, Stage, base_env};

/// Where the executable is in the image, and the image's entrypoint.
pub const SERVICE_PATH: &str = "/usr/local/bin/service";
/// The user the image runs as: the base layer's nonroot user.
pub const USER: &str = "65532:65532";
/// The platform of the images built here (Rust builds for x86_64 musl, Go builds for amd64).
pub const PLATFORM: &str = "linux/amd64";

/// Where and how built images go.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// The crane binary.
    pub crane: PathBuf,
    /// The base layer, a tarball (`target/images/layers/base.tar`, made by `make images`).
    pub base_layer: PathBuf,
    /// The registry as this node reaches it, `host:port` over plain HTTP; it replaces the registry
    /// `BUILD_IMAGE` names, which is where the cluster's nodes pull from.
    pub registry: String,
}

impl Publisher {
    /// Checks what every build needs before the first one: crane runs, the base layer is there,
    /// the registry address is one.
    pub fn check(&self) -> Result<(), String> {
        let executable = std::fs::metadata(&self.crane)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            return Err(format!(
                "crane {} is not an executable (make controlplane builds it)",
                self.crane.display()
            ));
        }
        if !self.base_layer.is_file() {
            return Err(format!(
                "base layer {} is missing (make images makes it)",
                self.base_layer.display()
            ));
        }
        let probe: Reference = "microplane/probe:1".parse()?;
        probe.on_registry(&self.registry).map(|_| ())
    }

    /// Pushes the image of the base layer and `layer` (see [`service_layer`]) as `spec.image`
    /// moved to the registry address; the manifest digest.
    pub(super) async fn publish(
        &self,
        spec: &BuildSpec,
        layer: &Path,
        log: &Log,
        deadline: Instant,
    ) -> Result<Digest, BuildFailure> {
        let fail = |code: i32, last: &str| log.fail(Stage::Build, code, last);
        let target = spec
            .image
            .on_registry(&self.registry)
            .map_err(|e| fail(1, &format!("error: cannot push {}: {e}", spec.image)))?;
        log.line(&format!(
            "pushing {target}: the base layer {} and the executable's layer",
            self.base_layer.display()
        ));
        let mut append = self.crane(["append", "--insecure", "--oci-empty-base", "--platform", PLATFORM]);
        append
            .arg("-f")
            .arg(&self.base_layer)
            .arg("-f")
            .arg(layer)
            .args(["-t", &target.to_string()]);
        let ended = process::run(&mut append, log, true, deadline).await;
        if let Some((code, msg)) = ended_message(&ended, "crane append", &target) {
            return Err(fail(code, &msg));
        }
        let revision = format!("org.opencontainers.image.revision={}", spec.commit);
        let mut mutate = self.crane(["mutate", "--insecure", &target.to_string()]);
        mutate.args([
            "--entrypoint",
            SERVICE_PATH,
            "--user",
            USER,
            "--workdir",
            "/",
            "--env",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "--set-platform",
            PLATFORM,
            "--label",
            &revision,
            "-t",
            &target.to_string(),
        ]);
        let ended = process::run(&mut mutate, log, true, deadline).await;
        if let Some((code, msg)) = ended_message(&ended, "crane mutate", &target) {
            return Err(fail(code, &msg));
        }
        let digest = pushed_digest(&ended.success().unwrap_or_default(), &target.name)
            .map_err(|e| fail(1, &format!("error: {e}")))?;
        log.line(&format!("pushed {target} as {}@{digest}", target.name));
        log.line(&format!("the cluster pulls it as {}@{digest}", spec.image.name));
        Ok(digest)
    }

    fn crane<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut cmd = Command::new(&self.crane);
        cmd.args(args).env_clear().envs(base_env());
        cmd
    }
}

fn ended_message(ended: &Ended, what: &str, target: &Reference) -> Option<(i32, String)> {
    let registry = target.registry().unwrap_or_default();
    match ended {
        Ended::Exited { code: 0, .. } => None,
        Ended::Exited { code, .. } => Some((
            *code,
            format!("error: cannot push the image to the registry at {registry}: {what} failed (exit code {code})"),
        )),
        Ended::NotStarted(e) => Some((1, format!("error: cannot run {what}: {e}"))),
        Ended::TimedOut => Some((
            124,
            format!("error: {what} (pushing to {registry}) took too long and was stopped"),
        )),
    }
}

/// The digest in crane's last line, `<repository>@sha256:…`, which must name `repository`.
pub fn pushed_digest(stdout: &[u8], repository: &str) -> Result<Digest, String> {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default();
    let (name, digest) = line
        .split_once('@')
        .ok_or_else(|| format!("crane printed {line:?}, not the pushed image's digest"))?;
    if name != repository {
        return Err(format!("crane pushed {name}, not {repository}"));
    }
    digest.parse()
}

/// Lays out the executable's layer in `work/layer` (the executable at [`SERVICE_PATH`], mode 0755,
/// in directories of mode 0755) and tars it reproducibly into `work/service.tar`; the tarball.
pub(super) async fn service_layer(
    exe: &Path,
    work: &Path,
    log: &Log,
    deadline: Instant,
) -> Result<PathBuf, BuildFailure> {
    let fail = |code: i32, last: &str| log.fail(Stage::Build, code, last);
    log.line(&format!("packaging the executable as {SERVICE_PATH}"));
    let (root, tarball) = (work.join("layer"), work.join("service.tar"));
    let laid_out = {
        let (exe, root, tarball) = (exe.to_path_buf(), root.clone(), tarball.clone());
        tokio::task::spawn_blocking(move || lay_out(&exe, &root, &tarball))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    };
    laid_out.map_err(|e| fail(1, &format!("error: cannot lay out the image's layer: {e}")))?;
    let mut tar = Command::new("tar");
    tar.args([
        "--sort=name",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--format=gnu",
        "-C",
    ])
    .arg(&root)
    .arg("-cf")
    .arg(&tarball)
    .arg(".")
    .env_clear()
    .envs(base_env())
    .env("LC_ALL", "C");
    match process::run(&mut tar, log, false, deadline).await {
        Ended::Exited { code: 0, .. } => Ok(tarball),
        Ended::Exited { code, .. } => Err(fail(code, "error: tar of the image's layer failed")),
        Ended::NotStarted(e) => Err(fail(1, &format!("error: cannot run tar: {e}"))),
        Ended::TimedOut => Err(fail(
            124,
            "error: tar of the image's layer took too long and was stopped",
        )),
    }
}

/// The layer's tree under `root` (made anew), with modes set whatever the umask.
fn lay_out(exe: &Path, root: &Path, tarball: &Path) -> Result<(), String> {
    fn err(p: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
        move |e| format!("{}: {e}", p.display())
    }
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(err(root))?;
    }
    if tarball.exists() {
        std::fs::remove_file(tarball).map_err(err(tarball))?;
    }
    let target = root.join(SERVICE_PATH.trim_start_matches('/'));
    let bin = target.parent().ok_or("the service path has no directory")?;
    std::fs::create_dir_all(bin).map_err(err(bin))?;
    std::fs::copy(exe, &target).map_err(err(exe))?;
    let mode = |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(err(p));
    mode(&target)?;
    for dir in target.ancestors().skip(1) {
        mode(dir)?;
        if dir == root {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_the_pushed_digest() {
        let repo = "10.199.12.2:5000/micro/hello";
        let out = format!("{repo}@sha256:{HEX}\n");
        assert_eq!(
            pushed_digest(out.as_bytes(), repo).unwrap().to_string(),
            format!("sha256:{HEX}")
        );
        let noisy = format!("something first\n{repo}@sha256:{HEX}\n\n");
        assert!(pushed_digest(noisy.as_bytes(), repo).is_ok());
        assert!(
            pushed_digest(b"", repo)
                .unwrap_err()
                .contains("not the pushed image's digest")
        );
        let other = format!("10.199.12.2:5000/micro/other@sha256:{HEX}\n");
        assert!(
            pushed_digest(other.as_bytes(), repo)
                .unwrap_err()
                .contains("not 10.199.12.2:5000/micro/hello")
        );
        assert!(pushed_digest(format!("{repo}@sha256:abc").as_bytes(), repo).is_err());
    }

    fn log_in(dir: &Path) -> Log {
        Log::create(dir.join("build.log")).unwrap()
    }

    /// `tar -tv` of a tarball: one `mode owner/group size date time name` line per entry.
    fn listing(tarball: &Path) -> Vec<String> {
        let out = std::process::Command::new("tar")
            .args(["-tv", "--numeric-owner", "-f"])
            .arg(tarball)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn lays_the_executable_out_reproducibly() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("hello");
        std::fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o700)).unwrap();
        let log = log_in(dir.path());
        let deadline = Instant::now() + std::time::Duration::from_secs(60);

        let first = service_layer(&exe, &dir.path().join("a"), &log, deadline)
            .await
            .unwrap();
        let lines = listing(&first);
        let names: Vec<&str> = lines.iter().filter_map(|l| l.split_whitespace().last()).collect();
        assert_eq!(
            names,
            [
                "./",
                "./usr/",
                "./usr/local/",
                "./usr/local/bin/",
                "./usr/local/bin/service"
            ]
        );
        for line in &lines {
            // Owned by root, dated 1970, executable and searchable by the nonroot user.
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[1], "0/0", "{line}");
            assert_eq!(fields[3], "1970-01-01", "{line}");
            assert!(fields[0].ends_with("rwxr-xr-x"), "{line}");
        }
        assert_eq!(lines[4].split_whitespace().nth(2), Some("18"), "{}", lines[4]);

        // Another day, another umask's worth of modes, another place: the same bytes.
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o750)).unwrap();
        let touched = std::process::Command::new("touch")
            .args(["-d", "2030-01-01"])
            .arg(&exe)
            .status()
            .unwrap();
        assert!(touched.success());
        let second = service_layer(&exe, &dir.path().join("b"), &log, deadline)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
        // Laid out again in place: the old tree and tarball are replaced, not added to.
        std::fs::write(dir.path().join("b/layer/stray"), b"x").unwrap();
        let again = service_layer(&exe, &dir.path().join("b"), &log, deadline)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), std::fs::read(&again).unwrap());

        // A changed executable is a changed layer.
        std::fs::write(&exe, b"#!/bin/sh\necho bye\n").unwrap();
        let third = service_layer(&exe, &dir.path().join("c"), &log, deadline)
            .await
            .unwrap();
        assert_ne!(std::fs::read(&first).unwrap(), std::fs::read(&third).unwrap());
    }

    #[tokio::test]
    async fn a_missing_executable_fails_the_build_step() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let f = service_layer(&dir.path().join("absent"), dir.path(), &log, deadline)
            .await
            .unwrap_err();
        assert_eq!((f.stage, f.exit_code), (Stage::Build, 1));
        assert!(f.message.contains("cannot lay out the image's layer"), "{}", f.message);
    }

    #[test]
    fn checks_its_settings() {
        let dir = tempfile::tempdir().unwrap();
        let crane = dir.path().join("crane");
        std::fs::write(&crane, b"#!/bin/sh\n").unwrap();
        let base = dir.path().join("base.tar");
        let p = Publisher {
            crane: crane.clone(),
            base_layer: base.clone(),
            registry: "10.199.12.2:5000".into(),
        };
        assert!(p.check().unwrap_err().contains("not an executable"));
        std::fs::set_permissions(&crane, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(p.check().unwrap_err().contains("base layer"));
        std::fs::write(&base, b"").unwrap();
        p.check().unwrap();
        let bad = Publisher {
            registry: "http://10.199.12.2:5000".into(),
            ..p
        };
        assert!(bad.check().unwrap_err().contains("not a registry address"));
    }
}
