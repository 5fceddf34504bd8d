//! The processes the bench starts and supervises: pinned to a CPU, in a process group of their
//! own, stopped with the run; their configs, ports and programs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use http::StatusCode;

use crate::h1::H1;

/// A process this bench started, in a process group of its own, pinned with `taskset`. Dropping it
/// stops the whole group: SIGTERM, then SIGKILL after 3 s.
pub struct Proc {
    pub name: String,
    pub child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(
        dir: &Path,
        name: &str,
        cpu: u32,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> Result<Self> {
        let log = dir.join("logs").join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(cpu.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Fails with the end of its log when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Fails unless the process may run on `cpu` only.
    pub fn check_pinned(&self, cpu: u32) -> Result<()> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .unwrap_or("");
        ensure!(
            allowed == cpu.to_string(),
            "{} may run on CPUs {allowed:?}, not only {cpu}",
            self.name
        );
        Ok(())
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole group: nginx's and haproxy's workers too, even when the leader is gone.
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets the CPU affinity of every thread of `pid`.
pub fn pin(pid: u32, cpu: u32) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    ensure!(
        out.status.success(),
        "taskset -p {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `-p` prefix, `-e` startup error log and `-c` config of an nginx instance.
pub fn nginx_args(dir: &Path, conf: &Path) -> Vec<String> {
    let stem = conf
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    vec![
        "-p".to_string(),
        format!("{}/", dir.display()),
        "-e".to_string(),
        dir.join("logs")
            .join(format!("{stem}.startup.log"))
            .display()
            .to_string(),
        "-c".to_string(),
        conf.display().to_string(),
    ]
}

/// Renders a template (`{{NAME}}` placeholders) into the run directory.
pub fn write_config(dir: &Path, name: &str, template: &str, vars: &[(&str, String)]) -> Result<PathBuf> {
    let mut text = template.to_string();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    ensure!(!text.contains("{{"), "{name}: a placeholder is left unrendered");
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Free loopback ports, all distinct (the listeners are held until every port is picked).
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?;
    ports.try_into().map_err(|_| anyhow!("port allocation"))
}

/// A program on PATH or in the sbin directories (nginx and haproxy live in /usr/sbin).
pub fn tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} is not installed (apt-get install -y wrk haproxy nginx-light)"))
}

/// The first line a program prints for its version flag (on stdout or stderr).
pub fn version(program: &Path, flag: &str) -> Result<String> {
    let out = Command::new(program).arg(flag).stdin(Stdio::null()).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Waits until `GET path` on `addr` answers 200, failing early when the process exits.
pub async fn wait_http_ok(proc: &mut Proc, addr: SocketAddr, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.check_running()?;
        let last = match H1::connect(addr).await {
            Ok(mut c) => match c.get(path).await {
                Ok((StatusCode::OK, _)) => return Ok(()),
                Ok((status, body)) => format!("{status} {}", String::from_utf8_lossy(&body)),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "{} did not answer 200 on http://{addr}{path} within 30s (last: {last})",
                proc.name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_templates_and_refuses_unrendered_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let vars = [("PORT", "80".to_string()), ("DIR", "/x".to_string())];
        let path = write_config(dir.path(), "a.conf", "listen {{PORT}}; root {{DIR}}/{{PORT}};", &vars).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "listen 80; root /x/80;");
        assert!(write_config(dir.path(), "b.conf", "{{BACKEND}}", &vars).is_err());
        let args = nginx_args(Path::new("/run/x"), Path::new("/run/x/nginx-proxy.conf"));
        assert_eq!(
            args,
            [
                "-p",
                "/run/x/",
                "-e",
                "/run/x/logs/nginx-proxy.startup.log",
                "-c",
                "/run/x/nginx-proxy.conf"
            ]
        );
    }
}
