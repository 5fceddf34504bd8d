//! The real node of the environment under test (`e2e/scripts/node-up.sh`): images pushed into its
//! in-cluster registry, and what its container runtime says about a container.
//!
//! The suites run `make images`' helloworld through the registry, as users' images arrive: a suite
//! asks for [`helloworld`] under a tag, the image is pushed once per process and tag, and the pod
//! pulls `localhost:5000/e2e/helloworld:<tag>` from the registry pod on the node.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Mutex;

use crate::{Error, Result, repo_root};

/// Name of the node's Node object.
pub const NODE: &str = "microplane-node";

static PUSHED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn script(name: &str) -> Command {
    Command::new(repo_root().join("e2e/scripts").join(name))
}

fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| Error::Manifest(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Manifest(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Pushes `target/images/<tarball>` to the node's registry as `repository:tag` (with another
/// entrypoint when given) unless this process already did; the reference pods use.
pub fn push(tarball: &str, repository_tag: &str, entrypoint: Option<&str>) -> Result<String> {
    let reference = format!("localhost:5000/{repository_tag}");
    let key = format!("{repository_tag} {entrypoint:?}");
    if PUSHED
        .lock()
        .map_err(|_| Error::Manifest("push lock poisoned".into()))?
        .get_or_insert_default()
        .contains(&key)
    {
        return Ok(reference);
    }
    let mut cmd = script("push-image.sh");
    cmd.arg(repo_root().join("target/images").join(tarball))
        .arg(repository_tag);
    if let Some(e) = entrypoint {
        cmd.args(["--entrypoint", e]);
    }
    let printed = run(cmd, "push-image.sh")?;
    if printed != reference {
        return Err(Error::Manifest(format!(
            "push-image.sh printed {printed:?}, expected {reference:?}"
        )));
    }
    PUSHED
        .lock()
        .map_err(|_| Error::Manifest("push lock poisoned".into()))?
        .get_or_insert_default()
        .insert(key);
    Ok(reference)
}

/// The workspace's helloworld (`make images`) as `localhost:5000/e2e/helloworld:<tag>` in the
/// node's registry. Different tags are the same image: a new tag is a new version to roll out.
pub fn helloworld(tag: &str) -> Result<String> {
    push("helloworld.tar", &format!("e2e/helloworld:{tag}"), None)
}

/// An image that exits at once with status 2 (helloworld's client without arguments): a pod of it
/// crash-loops.
pub fn crasher() -> Result<String> {
    push(
        "helloworld.tar",
        "e2e/crasher:1",
        Some("/usr/local/bin/helloworld-call"),
    )
}

/// Runs a command inside the node (`e2e/scripts/node-exec.sh`, its network and mount namespaces);
/// its standard output.
pub fn exec(args: &[&str]) -> Result<String> {
    let mut cmd = script("node-exec.sh");
    cmd.args(args);
    run(cmd, &format!("node-exec.sh {}", args.join(" ")))
}

/// The container runtime's record of a container (`ctr containers info`): its OCI spec as the
/// runtime applied it, among others. `container_id` is the pod status' `containerd://<id>`.
pub fn container_info(container_id: &str) -> Result<serde_json::Value> {
    let id = container_id.trim_start_matches("containerd://");
    let out = exec(&["ctr", "-n", "k8s.io", "containers", "info", id])?;
    serde_json::from_str(&out).map_err(|e| Error::Manifest(format!("ctr containers info {id}: {e}")))
}

/// The host pid of a container's main process (`ctr tasks ls`).
pub fn container_pid(container_id: &str) -> Result<u32> {
    let id = container_id.trim_start_matches("containerd://");
    let out = exec(&["ctr", "-n", "k8s.io", "tasks", "ls"])?;
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?, f.next()?))
        })
        .find(|(task, _, status)| *task == id && *status == "RUNNING")
        .and_then(|(_, pid, _)| pid.parse().ok())
        .ok_or_else(|| Error::Manifest(format!("no running task {id} on the node")))
}

/// Ids of the containers the node's runtime has running.
pub fn running_containers() -> Result<Vec<String>> {
    let out = exec(&["ctr", "-n", "k8s.io", "tasks", "ls"])?;
    Ok(out
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[2] == "RUNNING").then(|| f[0].to_string())
        })
        .collect())
}
