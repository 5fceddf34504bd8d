//! The `clone` step with the git CLI: the one commit, fetched alone when the server allows it
//! (protocol v2 serves any reachable commit) and with all branches and tags otherwise.
//!
//! Credentials never reach a command line or a log: HTTP passwords are answered by a `GIT_ASKPASS`
//! script reading 0600 files in a private directory that is removed when the step ends, and ssh
//! gets the key file and the pinned `known_hosts` through `GIT_SSH_COMMAND`. User and system git
//! configuration is ignored, so no credential helper or URL rewrite of the agent's user applies.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::process::Command;
use tokio::time::Instant;

use super::process::{self, Ended};
use super::{BuildFailure, BuildSpec, Credentials, Log, Stage, Workdirs, base_env};

/// A URL without the user information a user may have put in it.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// `'…'` for a POSIX shell.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn write_private(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the credential files into the private `dir`; the environment that makes git use them.
pub(super) fn credential_env(creds: &Credentials, dir: &Path) -> Result<Vec<(String, String)>, String> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let askpass = |username: &str, password: &str| -> Result<Vec<(String, String)>, String> {
        let (user_file, pass_file, script) = (dir.join("username"), dir.join("password"), dir.join("askpass"));
        write_private(&user_file, username, 0o600)?;
        write_private(&pass_file, password, 0o600)?;
        // git asks "Username for '…': " and then "Password for '…': ".
        let body = format!(
            "#!/bin/sh\ncase \"$1\" in\nUsername*) exec cat {} ;;\n*) exec cat {} ;;\nesac\n",
            shell_quote(&user_file),
            shell_quote(&pass_file)
        );
        write_private(&script, &body, 0o700)?;
        Ok(vec![("GIT_ASKPASS".into(), script.display().to_string())])
    };
    match creds {
        Credentials::Token(token) => askpass("x-access-token", token.expose()),
        Credentials::Basic { username, password } => askpass(username, password.expose()),
        Credentials::Ssh {
            private_key,
            known_hosts,
        } => {
            let (key, hosts) = (dir.join("ssh-privatekey"), dir.join("known_hosts"));
            let mut key_text = private_key.expose().to_string();
            // ssh refuses a key file without its final newline.
            if !key_text.ends_with('\n') {
                key_text.push('\n');
            }
            write_private(&key, &key_text, 0o600)?;
            write_private(&hosts, known_hosts, 0o600)?;
            let ssh = format!(
                "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
                 -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
                shell_quote(&key),
                shell_quote(&hosts)
            );
            Ok(vec![("GIT_SSH_COMMAND".into(), ssh)])
        }
    }
}

/// git with the step's environment.
fn git(env: &[(String, String)], dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd
}

pub(super) async fn run(spec: &BuildSpec, dirs: &Workdirs, log: &Log, deadline: Instant) -> Result<(), BuildFailure> {
    let url = redact_url(&spec.git_url);
    log.line(&format!("cloning {url} at {}", spec.commit));
    let fail = |code: i32, last: &str| log.fail(Stage::Clone, code, last);
    let src = dirs.source();
    // A clone left by an earlier attempt of this pod (agent restart) is started over.
    let prepared = {
        let src = src.clone();
        let scratch = dirs.scratch.clone();
        tokio::task::spawn_blocking(move || {
            if src.exists() {
                std::fs::remove_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            }
            std::fs::create_dir_all(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
            std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
            tempfile::Builder::new()
                .prefix("git-credentials-")
                .tempdir_in(&scratch)
                .map_err(|e| format!("{}: {e}", scratch.display()))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    // Removed (credentials and all) when this step ends, however it ends.
    let private = prepared.map_err(|e| fail(1, &format!("error: cannot prepare the workspace: {e}")))?;

    let mut env = base_env();
    env.extend(
        [
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("LC_ALL", "C"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    if let Some(creds) = &spec.credentials {
        let extra = credential_env(creds, private.path())
            .map_err(|e| fail(1, &format!("error: cannot prepare the git credentials: {e}")))?;
        env.extend(extra);
    }

    // A failed git command ends the step with `last` as the log's last line.
    let check = |ended: Ended, last: String| match ended {
        Ended::Exited { code: 0, .. } => Ok(()),
        Ended::Exited { code, .. } => Err(fail(code, &last)),
        Ended::NotStarted(e) => Err(fail(1, &format!("error: cannot run git: {e}"))),
        Ended::TimedOut => Err(fail(
            124,
            &format!("error: the clone of {url} took too long and was stopped"),
        )),
    };
    let mut init = git(&env, None);
    init.args(["init", "--quiet"]).arg(&src);
    check(
        process::run(&mut init, log, false, deadline).await,
        format!("error: git init {} failed", src.display()),
    )?;
    let mut remote = git(&env, Some(&src));
    remote.args(["remote", "add", "origin", "--", &spec.git_url]);
    check(
        process::run(&mut remote, log, false, deadline).await,
        "error: GIT_URL is not a git remote".into(),
    )?;
    let mut fetch_one = git(&env, Some(&src));
    fetch_one.args(["fetch", "--quiet", "--no-tags", "--depth=1", "origin", &spec.commit]);
    match process::run(&mut fetch_one, log, false, deadline).await {
        Ended::Exited { code, .. } if code != 0 => {
            log.line("fetching the commit alone failed; fetching every branch and tag instead");
            let mut fetch_all = git(&env, Some(&src));
            fetch_all.args([
                "fetch",
                "--quiet",
                "--tags",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
            ]);
            check(
                process::run(&mut fetch_all, log, false, deadline).await,
                format!("error: cannot fetch from {url} (see above)"),
            )?;
        }
        other => check(other, String::new())?,
    }
    let mut checkout = git(&env, Some(&src));
    checkout.args([
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "--quiet",
        "--detach",
        &spec.commit,
    ]);
    check(
        process::run(&mut checkout, log, false, deadline).await,
        format!(
            "error: commit {} is not in {url}: no branch or tag there reaches it",
            spec.commit
        ),
    )?;
    let service_dir = src.join(&spec.path);
    if !service_dir.is_dir() {
        return Err(fail(
            1,
            &format!(
                "error: GIT_PATH {} is not a directory at commit {}",
                spec.path, spec.commit
            ),
        ));
    }
    log.line(&format!("checked out {} at {}", spec.commit, spec.path));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::Secret;

    #[test]
    fn redacts_user_information() {
        assert_eq!(redact_url("https://u:p@host/r.git"), "https://***@host/r.git");
        assert_eq!(redact_url("https://host/a@b.git"), "https://host/a@b.git");
        assert_eq!(redact_url("git@host:org/r.git"), "git@host:org/r.git");
        assert_eq!(redact_url("http://tok@127.0.0.1:80"), "http://***@127.0.0.1:80");
    }

    #[test]
    fn credentials_stay_in_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let env = credential_env(&Credentials::Token(Secret::new("t0ken")), dir.path()).unwrap();
        assert_eq!(env.len(), 1);
        assert!(!env[0].1.contains("t0ken"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join("password")), 0o600);
        assert_eq!(std::fs::read_to_string(dir.path().join("password")).unwrap(), "t0ken");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("username")).unwrap(),
            "x-access-token"
        );
        let out = std::process::Command::new(&env[0].1)
            .arg("Password for 'http://x-access-token@h': ")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"t0ken");
        let out = std::process::Command::new(&env[0].1)
            .arg("Username for 'http://h': ")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"x-access-token");

        let dir = tempfile::tempdir().unwrap();
        let ssh = Credentials::Ssh {
            private_key: Secret::new("-----BEGIN KEY-----"),
            known_hosts: "h ssh-ed25519 AAAA".into(),
        };
        let env = credential_env(&ssh, dir.path()).unwrap();
        assert_eq!(env[0].0, "GIT_SSH_COMMAND");
        assert!(env[0].1.contains("StrictHostKeyChecking=yes"), "{}", env[0].1);
        assert!(
            env[0]
                .1
                .contains(&format!("UserKnownHostsFile='{}/known_hosts'", dir.path().display()))
        );
        assert!(!env[0].1.contains("BEGIN KEY"));
        assert_eq!(mode(&dir.path().join("ssh-privatekey")), 0o600);
        assert!(
            std::fs::read_to_string(dir.path().join("ssh-privatekey"))
                .unwrap()
                .ends_with('\n')
        );
    }
}
