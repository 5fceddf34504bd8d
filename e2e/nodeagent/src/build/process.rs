//! Running one tool of a build: in its own process group, output to the container's log, stopped
//! with everything it started when the deadline passes or the build is dropped (pod deleted).

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::Instant;

use super::Log;

/// How a tool ended.
pub(super) enum Ended {
    /// It exited with this code (128 + signal when killed by one); standard output when captured.
    Exited { code: i32, stdout: Vec<u8> },
    /// It could not start.
    NotStarted(String),
    /// The deadline passed; it was killed.
    TimedOut,
}

impl Ended {
    /// The captured output of a successful run.
    pub(super) fn success(self) -> Option<Vec<u8>> {
        match self {
            Self::Exited { code: 0, stdout } => Some(stdout),
            _ => None,
        }
    }
}

/// Kills a process group when dropped, unless the leader was reaped normally.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // `kill` rather than a signal call: the workspace forbids unsafe code. It is quick and
            // runs once per dropped build.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `cmd` until it exits or `deadline`, its standard error (and standard output, unless
/// `capture`) appended to `log`.
pub(super) async fn run(cmd: &mut Command, log: &Log, capture: bool, deadline: Instant) -> Ended {
    let stderr = match log.stdio() {
        Ok(s) => s,
        Err(e) => return Ended::NotStarted(e),
    };
    let stdout = if capture {
        Stdio::piped()
    } else {
        match log.stdio() {
            Ok(s) => s,
            Err(e) => return Ended::NotStarted(e),
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ended::NotStarted(format!("{:?}: {e}", cmd.as_std().get_program())),
    };
    let mut group = Group(child.id());
    let mut pipe = child.stdout.take();
    let work = async {
        let mut out = Vec::new();
        let read = async {
            if let Some(p) = pipe.as_mut() {
                let _ = p.read_to_end(&mut out).await;
            }
        };
        let (_, status) = tokio::join!(read, child.wait());
        (status, out)
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok((Ok(status), stdout)) => {
            group.0 = None;
            let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
            Ended::Exited { code, stdout }
        }
        Ok((Err(e), _)) => Ended::NotStarted(format!("waiting for {:?}: {e}", cmd.as_std().get_program())),
        Err(_) => Ended::TimedOut,
    }
}
