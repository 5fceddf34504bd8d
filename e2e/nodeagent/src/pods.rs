//! Pods bound to this node, run as processes: one supervisor task per pod owns its address, its
//! volumes, its process, its probes and its status. Build pods (see [`crate::build`]) are run by
//! the agent itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::build::pod::{BuildPod, State, Status};
use crate::build::{self, Builder, Credentials, Workdirs};
use crate::net::{self, Cidr};
use crate::store::ImageStore;
use crate::{images, probes, volumes};

/// Settings of the agent.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Name of the Node.
    pub node: String,
    /// Network namespace the pods live in.
    pub netns: String,
    /// Range of pod addresses.
    pub cidr: Cidr,
    /// Where workspace binaries are (`target/debug`).
    pub bin_dir: PathBuf,
    /// Where pod directories (volumes, logs) and the image store go.
    pub state_dir: PathBuf,
    /// The builder image: pods whose `build` container runs it are builds this agent performs.
    pub builder_image: String,
    /// Where compiler caches shared between builds go.
    pub build_cache: PathBuf,
    /// How many builds may run at once.
    pub parallel_builds: usize,
}

struct Running {
    stop: watch::Sender<bool>,
}

/// The agent: the pods it supervises and the addresses in use.
pub struct Agent {
    client: Client,
    settings: Settings,
    pods: Mutex<HashMap<String, Running>>,
    /// Pods whose supervisor has ended: a late watch event showing an earlier state must not run
    /// them again (a finished build would build once more). Locked after `pods`.
    finished: Mutex<HashSet<String>>,
    addresses: Mutex<BTreeSet<Ipv4Addr>>,
    builder: Builder,
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

/// The directory of a pod: `<state>/pods/<namespace>_<name>_<uid prefix>`.
pub fn pod_dir(state: &std::path::Path, pod: &Pod) -> PathBuf {
    let uid: String = pod.uid().unwrap_or_default().chars().take(8).collect();
    state.join("pods").join(format!(
        "{}_{}_{uid}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    ))
}

impl Agent {
    /// An agent.
    pub fn new(client: Client, settings: Settings) -> Arc<Self> {
        let store = ImageStore::new(settings.state_dir.join("images"));
        let builder = Builder::new(
            settings.build_cache.clone(),
            store,
            settings.parallel_builds,
            build::Limits::default(),
        );
        Arc::new(Self {
            client,
            settings,
            pods: Mutex::default(),
            finished: Mutex::default(),
            addresses: Mutex::default(),
            builder,
        })
    }

    /// Watches the pods bound to this node until the stream ends.
    pub async fn run(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", self.settings.node));
        let mut events = watcher(api, wc).default_backoff().touched_objects().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(pod) => self.clone().observe(pod),
                Err(e) => tracing::warn!(error = %e, "pod watch"),
            }
        }
    }

    fn observe(self: Arc<Self>, pod: Pod) {
        let Some(uid) = pod.uid() else { return };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut pods = self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = pods.get(&uid) {
            if deleting {
                let _ = running.stop.send(true);
            }
            return;
        }
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) || self
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&uid);
        if terminal && !deleting {
            return;
        }
        let (stop, stopped) = watch::channel(deleting);
        pods.insert(uid.clone(), Running { stop });
        drop(pods);
        let agent = self.clone();
        tokio::spawn(async move {
            let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            if let Err(e) = agent.supervise(pod, stopped).await {
                tracing::warn!(pod = %name, error = %e, "pod supervisor");
            }
            let mut pods = agent.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            pods.remove(&uid);
            agent
                .finished
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(uid);
        });
    }

    async fn patch_status(&self, pod: &Pod, status: Value) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": status});
        if let Err(e) = api
            .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::debug!(pod = %pod.name_any(), error = %e, "status update");
        }
    }

    /// Runs one pod until it is deleted.
    async fn supervise(&self, pod: Pod, mut stopped: watch::Receiver<bool>) -> Result<(), String> {
        let spec = pod.spec.clone().ok_or("pod without spec")?;
        let container = spec.containers.first().cloned().ok_or("pod without containers")?;
        let dir = pod_dir(&self.settings.state_dir, &pod);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let result = if *stopped.borrow() {
            // Deleted before it ran here (or finished earlier): only the pod object is left to remove.
            Ok(())
        } else if build::pod::is_build_pod(&pod, &self.settings.builder_image) {
            // A build needs no address: it talks to the git remote from the host, like a kubelet's
            // image pull would.
            self.run_build_pod(&pod, &dir, &mut stopped).await
        } else {
            let ip = {
                let mut used = self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let ip = self
                    .settings
                    .cidr
                    .allocate(&used)
                    .ok_or("pod address range exhausted")?;
                used.insert(ip);
                ip
            };
            let result = self.run_pod(&pod, &container, &dir, ip, &mut stopped).await;
            let _ = net::remove_address(&self.settings.netns, ip).await;
            self.addresses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&ip);
            result
        };
        // The kubelet's last word: the pod object goes once its process is gone.
        if pod.metadata.deletion_timestamp.is_some() || *stopped.borrow() {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let _ = api.delete(&pod.name_any(), &dp).await;
        }
        result
    }

    async fn run_pod(
        &self,
        pod: &Pod,
        c: &Container,
        dir: &std::path::Path,
        ip: Ipv4Addr,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let host_ip = "127.0.0.1";
        let started_pod = now();
        let base = |phase: &str, ready: bool, container_status: Value| {
            let cond = |t: &str, s: bool| json!({"type": t, "status": if s {"True"} else {"False"}, "lastTransitionTime": started_pod});
            json!({
                "phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip.to_string(),
                "podIPs": [{"ip": ip.to_string()}], "startTime": started_pod,
                "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", ready), cond("Ready", ready)],
                "containerStatuses": [container_status],
            })
        };
        let image = c.image.clone().unwrap_or_default();
        let waiting = |reason: &str, message: &str, restarts: i32| {
            json!({"name": c.name, "image": image, "imageID": "", "ready": false, "started": false, "restartCount": restarts,
                   "state": {"waiting": {"reason": reason, "message": message}}})
        };

        // The image must resolve (built here, or a workspace binary); until it does, say why and look
        // again now and then.
        let bin = loop {
            match images::resolve(&image, &self.settings.bin_dir, self.builder.store()) {
                Ok(bin) => break bin,
                Err(e) => {
                    self.patch_status(pod, base("Pending", false, waiting("ErrImagePull", &e.to_string(), 0)))
                        .await;
                    if wait_stop(stopped, Duration::from_secs(5)).await {
                        return Ok(());
                    }
                }
            }
        };
        net::add_address(&self.settings.netns, ip).await?;

        let spec = pod.spec.clone().unwrap_or_default();
        let psc = spec.security_context.clone().unwrap_or_default();
        let csc = c.security_context.clone().unwrap_or_default();
        let uid = csc.run_as_user.or(psc.run_as_user).unwrap_or(65532);
        let gid = csc.run_as_group.or(psc.run_as_group).unwrap_or(65532);
        let fs_group = psc
            .fs_group
            .and_then(|g| u32::try_from(g).ok())
            .or(u32::try_from(gid).ok());
        let vol_root = dir.join("volumes");
        let ports: Vec<(String, i32)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
            .collect();
        let grace = Duration::from_secs(
            u64::try_from(spec.termination_grace_period_seconds.unwrap_or(30).max(0)).unwrap_or(30),
        );
        let always = !matches!(spec.restart_policy.as_deref(), Some("Never" | "OnFailure"));
        let mut restarts: i32 = 0;
        let mut restarts_in_a_row: u32 = 0;
        let mut last_state = Value::Null;

        loop {
            // Volumes and env must resolve before the process starts; until they do, say why.
            let prepared = match volumes::sync(&self.client, pod, &vol_root, fs_group).await {
                Ok(_) => self.env(pod, c, ip, &vol_root).await,
                Err(e) => Err(e),
            };
            let env = match prepared {
                Ok(env) => env,
                Err(e) => {
                    let st = waiting("CreateContainerConfigError", &e, restarts);
                    self.patch_status(pod, base("Pending", false, st)).await;
                    if wait_stop(stopped, Duration::from_secs(3)).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", c.name)))
                .map_err(|e| e.to_string())?;
            let err = log.try_clone().map_err(|e| e.to_string())?;
            let mut child = Command::new("/usr/sbin/ip")
                .args(["netns", "exec", &self.settings.netns, "/usr/bin/setpriv"])
                .args([
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                    "--".into(),
                ])
                .arg(&bin)
                .args(c.args.iter().flatten())
                .env_clear()
                .envs(env)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let pid = child.id().unwrap_or_default();
            let _ = std::fs::write(dir.join("pid"), pid.to_string());
            let started = now();
            let running = |ready: bool| {
                json!({"name": c.name, "image": image, "imageID": format!("microplane://{}", bin.display()),
                       "containerID": format!("microplane://{pid}"), "ready": ready, "started": true, "restartCount": restarts,
                       "state": {"running": {"startedAt": started}}, "lastState": last_state})
            };
            let mut ready = c.readiness_probe.is_none();
            self.patch_status(pod, base("Running", ready, running(ready))).await;

            // Probes, volume re-syncs and the process, until it exits, fails liveness or the pod goes.
            let run_started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut readiness = c.readiness_probe.as_ref().map(Tracker::new);
            let mut liveness = c.liveness_probe.as_ref().map(Tracker::new);
            let mut second = 0u64;
            let outcome = loop {
                tokio::select! {
                    status = child.wait() => break Outcome::Exited(status.ok().and_then(|s| s.code()).unwrap_or(-1)),
                    _ = stopped.changed() => break Outcome::Stop,
                    _ = tick.tick() => {
                        second += 1;
                        if second.is_multiple_of(2) {
                            let _ = volumes::sync(&self.client, pod, &vol_root, fs_group).await;
                        }
                        let elapsed = run_started.elapsed().as_secs();
                        if let Some(r) = readiness.as_mut() {
                            // Until the first success, probe every second so the pod becomes ready promptly.
                            if r.due(elapsed, second) || (!ready && r.started(elapsed)) {
                                let passed = probes::check(r.probe, ip, &ports).await;
                                if r.record(passed, ready) != ready {
                                    ready = !ready;
                                    self.patch_status(pod, base("Running", ready, running(ready))).await;
                                }
                            }
                        }
                        if let Some(l) = liveness.as_mut().filter(|l| l.due(elapsed, second)) {
                            let passed = probes::check(l.probe, ip, &ports).await;
                            if !l.record(passed, true) {
                                break Outcome::Unhealthy;
                            }
                        }
                    }
                }
            };
            let code = match outcome {
                Outcome::Exited(code) => code,
                Outcome::Stop | Outcome::Unhealthy => terminate(&mut child, pid, grace).await,
            };
            let finished = now();
            last_state = json!({"terminated": {"exitCode": code, "reason": match outcome { Outcome::Unhealthy => "Unhealthy", _ if code == 0 => "Completed", _ => "Error" }, "startedAt": started, "finishedAt": finished}});
            if matches!(outcome, Outcome::Stop) {
                return Ok(());
            }
            tracing::info!(pod = %pod.name_any(), code, "container exited");
            if !always && (code == 0 || spec.restart_policy.as_deref() == Some("Never")) {
                let phase = if code == 0 { "Succeeded" } else { "Failed" };
                let st = json!({"name": c.name, "image": image, "ready": false, "restartCount": restarts, "state": last_state});
                self.patch_status(pod, base(phase, false, st)).await;
                return Ok(());
            }
            restarts += 1;
            // The first restart is immediate; then CrashLoopBackOff, 10 s doubling to 5 minutes. A
            // container that ran for 10 minutes starts over.
            if run_started.elapsed() > Duration::from_secs(600) {
                restarts_in_a_row = 0;
            }
            restarts_in_a_row += 1;
            let backoff = match restarts_in_a_row {
                1 => Duration::ZERO,
                n => Duration::from_secs((10u64 << (n - 2).min(5)).min(300)),
            };
            if !backoff.is_zero() {
                let msg = format!("back-off {}s restarting failed container {}", backoff.as_secs(), c.name);
                let mut st = waiting("CrashLoopBackOff", &msg, restarts);
                st["lastState"] = last_state.clone();
                self.patch_status(pod, base("Running", false, st)).await;
                if wait_stop(stopped, backoff).await {
                    return Ok(());
                }
            }
        }
    }

    /// Runs a build pod: the clone, then the build (when a build slot is free), reporting each
    /// container's state as a kubelet would; the pod ends Succeeded with the digest as the build
    /// container's termination message, or Failed with the tail of the failing step's log. A
    /// deleted pod stops the build at once (its processes are killed).
    async fn run_build_pod(
        &self,
        pod: &Pod,
        dir: &std::path::Path,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let started = now();
        let terminated = |exit_code: i32, message: String, started_at: &Value| State::Terminated {
            exit_code,
            message,
            started_at: started_at.clone(),
            finished_at: now(),
        };
        let mut status = Status {
            started: started.clone(),
            clone: State::Waiting("PodInitializing", String::new()),
            build: State::Waiting("PodInitializing", String::new()),
        };
        let bp = match BuildPod::from_pod(pod) {
            Ok(bp) => bp,
            Err(e) => {
                // Not a pod this node can run: say why on the clone container and fail the pod.
                tracing::warn!(pod = %pod.name_any(), error = %e, "build pod does not follow the contract");
                status.clone = terminated(1, e, &started);
                self.patch_status(pod, status.json(pod)).await;
                return Ok(());
            }
        };
        let vol_root = dir.join("volumes");
        let dirs = Workdirs {
            workspace: vol_root.join(&bp.workspace_volume),
            logs: dir.to_path_buf(),
            scratch: dir.join("build"),
        };

        // The workspace and the Secret volume, like any pod's; until they resolve, say why.
        loop {
            match volumes::sync(&self.client, pod, &vol_root, None).await {
                Ok(_) => break,
                Err(e) => {
                    status.clone = State::Waiting("CreateContainerConfigError", e);
                    self.patch_status(pod, status.json(pod)).await;
                    if wait_stop(stopped, Duration::from_secs(3)).await {
                        return Ok(());
                    }
                }
            }
        }
        let mut spec = bp.spec.clone();
        if let Some(volume) = &bp.credentials_volume {
            match Credentials::from_dir(&vol_root.join(volume)) {
                Ok(c) => spec.credentials = Some(c),
                Err(e) => {
                    status.clone = terminated(1, e, &started);
                    self.patch_status(pod, status.json(pod)).await;
                    return Ok(());
                }
            }
        }
        tracing::info!(pod = %pod.name_any(), image = %spec.image, commit = %spec.commit, "building");

        let clone_started = now();
        status.clone = State::Running(clone_started.clone());
        self.patch_status(pod, status.json(pod)).await;
        let cloned = tokio::select! {
            r = self.builder.clone_source(&spec, &dirs) => r,
            () = until_stopped(stopped) => return Ok(()),
        };
        if let Err(f) = cloned {
            tracing::info!(pod = %pod.name_any(), code = f.exit_code, "clone failed");
            status.clone = terminated(f.exit_code, f.message, &clone_started);
            self.patch_status(pod, status.json(pod)).await;
            return Ok(());
        }
        status.clone = terminated(0, String::new(), &clone_started);

        status.build = State::Waiting(
            "ContainerCreating",
            format!("waiting for one of the node's {} build slots", self.builder.parallel()),
        );
        self.patch_status(pod, status.json(pod)).await;
        let _slot = tokio::select! {
            s = self.builder.slot() => s,
            () = until_stopped(stopped) => return Ok(()),
        };
        let build_started = now();
        status.build = State::Running(build_started.clone());
        self.patch_status(pod, status.json(pod)).await;
        let built = tokio::select! {
            r = self.builder.build(&spec, &dirs) => r,
            () = until_stopped(stopped) => return Ok(()),
        };
        status.build = match built {
            Ok(digest) => {
                tracing::info!(pod = %pod.name_any(), image = %spec.image, %digest, "built");
                terminated(0, digest.to_string(), &build_started)
            }
            Err(f) => {
                tracing::info!(pod = %pod.name_any(), code = f.exit_code, "build failed");
                terminated(f.exit_code, f.message, &build_started)
            }
        };
        self.patch_status(pod, status.json(pod)).await;
        Ok(())
    }

    /// The container's environment: its `env` (values, field and key references) with the pod's
    /// address for `MICRO_SERVICE_ADDRESS` (pods share one network namespace, so each binds its own
    /// address) and mount paths mapped to the volume directories on the host.
    async fn env(
        &self,
        pod: &Pod,
        c: &Container,
        ip: Ipv4Addr,
        vol_root: &std::path::Path,
    ) -> Result<Vec<(String, String)>, String> {
        let ns = pod.namespace().unwrap_or_default();
        let mounts: Vec<(String, PathBuf)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                (
                    m.mount_path.clone(),
                    vol_root.join(&m.name).join(m.sub_path.clone().unwrap_or_default()),
                )
            })
            .collect();
        let mut out = vec![("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string())];
        if let Some((_, tmp)) = mounts.iter().find(|(p, _)| p == "/tmp") {
            out.push(("TMPDIR".into(), tmp.display().to_string()));
        }
        for EnvVar {
            name,
            value,
            value_from,
        } in c.env.iter().flatten().cloned()
        {
            let mut v = match (value, value_from) {
                (Some(v), _) => v,
                (None, Some(from)) => {
                    if let Some(f) = from.field_ref {
                        match f.field_path.as_str() {
                            "metadata.name" => pod.name_any(),
                            "metadata.namespace" => ns.clone(),
                            "status.podIP" => ip.to_string(),
                            "spec.nodeName" => self.settings.node.clone(),
                            other => {
                                return Err(format!(
                                    "env {name}: fieldRef {other} is not supported by the dev node agent"
                                ));
                            }
                        }
                    } else if let Some(s) = from.secret_key_ref {
                        let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), &ns)
                            .get(&s.name)
                            .await
                            .map_err(|e| format!("env {name}: Secret {}: {e}", s.name))?;
                        let bytes = secret
                            .data
                            .and_then(|d| d.get(&s.key).cloned())
                            .ok_or_else(|| format!("env {name}: Secret {} has no key {}", s.name, s.key))?;
                        String::from_utf8(bytes.0).map_err(|_| format!("env {name}: not UTF-8"))?
                    } else if let Some(k) = from.config_map_key_ref {
                        let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(self.client.clone(), &ns)
                            .get(&k.name)
                            .await
                            .map_err(|e| format!("env {name}: ConfigMap {}: {e}", k.name))?;
                        cm.data
                            .and_then(|d| d.get(&k.key).cloned())
                            .ok_or_else(|| format!("env {name}: ConfigMap {} has no key {}", k.name, k.key))?
                    } else {
                        return Err(format!(
                            "env {name}: this valueFrom is not supported by the dev node agent"
                        ));
                    }
                }
                (None, None) => String::new(),
            };
            if let Some(port) = v.strip_prefix(':').filter(|_| name == "MICRO_SERVICE_ADDRESS") {
                v = format!("{ip}:{port}");
            }
            if let Some((mount, host)) = mounts.iter().find(|(m, _)| v == *m || v.starts_with(&format!("{m}/"))) {
                v = format!("{}{}", host.display(), &v[mount.len()..]);
            }
            out.push((name, v));
        }
        Ok(out)
    }

    /// Stops every supervised pod (agent shutdown).
    pub fn stop_all(&self) {
        for r in self
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            let _ = r.stop.send(true);
        }
    }
}

/// A probe's schedule and consecutive results.
struct Tracker<'a> {
    probe: &'a k8s_openapi::api::core::v1::Probe,
    passes: i32,
    failures: i32,
}

impl<'a> Tracker<'a> {
    fn new(probe: &'a k8s_openapi::api::core::v1::Probe) -> Self {
        Self {
            probe,
            passes: 0,
            failures: 0,
        }
    }
    fn started(&self, elapsed: u64) -> bool {
        elapsed >= u64::try_from(self.probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0)
    }
    fn due(&self, elapsed: u64, second: u64) -> bool {
        let period = u64::try_from(self.probe.period_seconds.unwrap_or(10).max(1)).unwrap_or(10);
        self.started(elapsed) && second.is_multiple_of(period)
    }
    /// Records a result; returns whether the probe now holds, given whether it held before
    /// (`failureThreshold` failures to flip to false, `successThreshold` passes to flip to true).
    fn record(&mut self, passed: bool, held: bool) -> bool {
        if passed {
            self.passes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.passes = 0;
        }
        if held {
            self.failures < self.probe.failure_threshold.unwrap_or(3)
        } else {
            self.passes >= self.probe.success_threshold.unwrap_or(1)
        }
    }
}

enum Outcome {
    Exited(i32),
    Stop,
    Unhealthy,
}

/// Resolves once the pod is to stop (never, when the agent drops the sender first).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits `d` or until stopped; true when stopped.
async fn wait_stop(stopped: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stopped.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stopped.borrow(),
        r = stopped.changed() => r.is_err() || *stopped.borrow(),
    }
}

/// SIGTERM to the process group, SIGKILL after the grace period; the exit code.
async fn terminate(child: &mut Child, pid: u32, grace: Duration) -> i32 {
    let group = format!("-{pid}");
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status().await;
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(s)) => s.code().unwrap_or(143),
        _ => {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status().await;
            let _ = child.wait().await;
            137
        }
    }
}
