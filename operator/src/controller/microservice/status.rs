//! The status of a MicroService, computed from what was observed: a pure function.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use std::time::Duration;

use microplane_crds::{CondType, MicroService, MicroServiceStatus, Phase, Reason};

use crate::conditions::Cond;

/// Why a MicroService cannot be deployed at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Its namespace has no tenant (Namespace object).
    TenantNotFound(String),
    /// Configs it lists do not exist.
    ConfigNotFound(Vec<String>),
    /// A listed Config exists but is not delivered yet (or failed).
    ConfigNotReady(String, Option<String>),
}

/// A pod-level problem that explains why the Deployment is not available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    /// The container waiting reason, e.g. `ImagePullBackOff`.
    pub reason: Reason,
    /// What the kubelet said, with the pod name.
    pub message: String,
}

/// Waiting reasons that need a user's action; anything else (ContainerCreating, …) is progress.
const PROBLEM_REASONS: [Reason; 6] = [
    Reason::ImagePullBackOff,
    Reason::ErrImagePull,
    Reason::InvalidImageName,
    Reason::CrashLoopBackOff,
    Reason::CreateContainerConfigError,
    Reason::CreateContainerError,
];

/// The first actionable container problem among the pods.
pub fn pod_problem<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<PodProblem> {
    let mut problems: Vec<(String, PodProblem)> = pods
        .into_iter()
        .flat_map(|pod| {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            pod.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .filter_map(|cs| {
                    cs.state
                        .as_ref()?
                        .waiting
                        .as_ref()
                        .map(|w| (cs.name.clone(), w.clone()))
                })
                .filter_map(move |(container, w)| {
                    let reason = *PROBLEM_REASONS
                        .iter()
                        .find(|r| Some(r.as_str()) == w.reason.as_deref())?;
                    let detail = w.message.unwrap_or_default();
                    Some((
                        pod_name.clone(),
                        PodProblem {
                            reason,
                            message: format!("pod {pod_name} container {container}: {reason} {detail}")
                                .trim()
                                .to_string(),
                        },
                    ))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // Deterministic across reconciles, so the status does not flap between pods.
    problems.sort_by(|a, b| a.0.cmp(&b.0));
    problems.into_iter().next().map(|(_, p)| p)
}

/// Rollout state of a Deployment for the generation the operator last applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Replicas wanted.
    pub desired: i32,
    /// Pods existing (old and new).
    pub replicas: i32,
    /// Ready pods.
    pub ready: i32,
    /// Pods of the current template.
    pub updated: i32,
    /// Available pods.
    pub available: i32,
    /// The Deployment controller has seen the current spec.
    pub observed: bool,
    /// `Progressing` says the deadline passed.
    pub deadline_exceeded: bool,
}

impl Rollout {
    /// Reads a Deployment.
    pub fn of(d: &Deployment) -> Self {
        let st = d.status.clone().unwrap_or_default();
        let desired = d.spec.replicas.unwrap_or(1);
        Self {
            desired,
            replicas: st.replicas.unwrap_or(0),
            ready: st.ready_replicas.unwrap_or(0),
            updated: st.updated_replicas.unwrap_or(0),
            available: st.available_replicas.unwrap_or(0),
            observed: st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0),
            deadline_exceeded: st.conditions.iter().flatten().any(|c| {
                c.type_.as_deref() == Some("Progressing")
                    && c.status.as_deref() == Some("False")
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            }),
        }
    }

    /// Fully rolled out: every wanted pod is of the current template and available, no old ones left.
    pub fn complete(&self) -> bool {
        self.observed && self.updated >= self.desired && self.available >= self.desired && self.replicas == self.desired
    }
}

/// Computes the status. `previous` supplies the fields this function does not own.
pub fn compute(
    previous: Option<&MicroServiceStatus>,
    generation: Option<i64>,
    image: Option<&str>,
    blocked: Option<&Blocked>,
    rollout: Option<&Rollout>,
    problem: Option<&PodProblem>,
) -> (MicroServiceStatus, Vec<Cond>) {
    let mut status = MicroServiceStatus {
        observed_generation: generation,
        commit: previous.and_then(|p| p.commit.clone()),
        endpoints: previous.map(|p| p.endpoints.clone()).unwrap_or_default(),
        url: previous.and_then(|p| p.url.clone()),
        ..MicroServiceStatus::default()
    };
    let (phase, available, ready) = match (blocked, rollout) {
        (Some(b), _) => {
            let (reason, message) = match b {
                Blocked::TenantNotFound(ns) => (
                    Reason::TenantNotFound,
                    format!("namespace {ns} is not a tenant: create a Namespace (microplane.dev) named {ns}"),
                ),
                Blocked::ConfigNotFound(names) => (
                    Reason::ConfigNotFound,
                    format!("Config {} not found in this namespace", names.join(", ")),
                ),
                Blocked::ConfigNotReady(name, why) => (
                    Reason::ConfigNotReady,
                    match why {
                        Some(why) => format!("Config {name} is not delivered: {why}"),
                        None => format!("Config {name} is not delivered yet"),
                    },
                ),
            };
            let phase = if matches!(b, Blocked::ConfigNotReady(..)) {
                Phase::Pending
            } else {
                Phase::Failed
            };
            (
                phase,
                Cond::fail(CondType::Available, reason, message.clone()),
                Cond::fail(CondType::Ready, reason, message),
            )
        }
        (None, None) => {
            let m = "waiting for the Deployment".to_string();
            (
                Phase::Pending,
                Cond::fail(CondType::Available, Reason::Pending, m.clone()),
                Cond::fail(CondType::Ready, Reason::Pending, m),
            )
        }
        (None, Some(r)) => {
            status.replicas = Some(r.replicas);
            status.ready_replicas = Some(r.ready);
            status.image = image.map(str::to_owned);
            let counts = format!("{}/{} pods available, {} updated", r.available, r.desired, r.updated);
            if r.complete() {
                let reason = if r.desired == 0 {
                    Reason::ScaledToZero
                } else {
                    Reason::Running
                };
                let m = format!("{counts}; rolled out");
                (
                    Phase::Running,
                    Cond::ok(CondType::Available, reason, m.clone()),
                    Cond::ok(CondType::Ready, reason, m),
                )
            } else if let Some(p) = problem {
                (
                    Phase::Failed,
                    Cond::fail(CondType::Available, p.reason, p.message.clone()),
                    Cond::fail(CondType::Ready, p.reason, p.message.clone()),
                )
            } else if r.deadline_exceeded {
                let m = format!("{counts}; the rollout exceeded its progress deadline");
                (
                    Phase::Failed,
                    Cond::fail(CondType::Available, Reason::ProgressDeadlineExceeded, m.clone()),
                    Cond::fail(CondType::Ready, Reason::ProgressDeadlineExceeded, m),
                )
            } else {
                let m = format!("{counts}; rolling out");
                (
                    Phase::Deploying,
                    Cond::fail(CondType::Available, Reason::Deploying, m.clone()),
                    Cond::fail(CondType::Ready, Reason::Deploying, m),
                )
            }
        }
    };
    status.phase = Some(phase);
    (status, vec![ready, available])
}

/// How much longer a new MicroService's first status may wait, or `None` to write it now.
///
/// A MicroService that has never had a status (its first generation) and is only *progressing*
/// — `Ready` False with a reason that resolves by itself (`Deploying`, `Pending`), or `Routed`
/// waiting for discovery — within `settle` of its creation is not written yet: a rollout that ends
/// within it costs one status write (Ready) instead of three. Anything a user must act on (a
/// failing pod, a missing Config: a `Stalled` reason), a source build (its phases are the news), a
/// changed spec of an existing object (`observedGeneration` must move at once) and every object
/// older than `settle` are written at once. kstatus, Argo CD and `kubectl wait` read no status as
/// in progress, which it is.
pub fn settling(
    ms: &MicroService,
    previous: Option<&MicroServiceStatus>,
    wanted: &[Cond],
    settle: Duration,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<Duration> {
    if settle.is_zero() || ms.spec.source.is_some() || previous.is_some_and(|p| p.observed_generation.is_some()) {
        return None;
    }
    let progressing =
        |c: &Cond| !c.status && crate::conditions::progress(c.reason) == crate::conditions::Progress::Reconciling;
    let ready = wanted.iter().find(|c| c.type_ == CondType::Ready)?;
    let routed_pending = wanted
        .iter()
        .find(|c| c.type_ == CondType::Routed)
        .is_some_and(|c| c.reason == Reason::DiscoveryPending);
    let waiting = if ready.status {
        routed_pending
    } else {
        progressing(ready)
    };
    if !waiting {
        return None;
    }
    let created = ms.metadata.creation_timestamp.as_ref()?.0;
    let age = Duration::try_from(now.duration_since(created)).ok()?;
    settle.checked_sub(age).filter(|d| !d.is_zero())
}

/// Whether `next` differs from `previous` only in how far a rollout has come — condition messages,
/// pod counts, the endpoints list — while everything a reader acts on is the same: the generation
/// observed, the phase, every condition's status and reason, the image, the commit, the URL and
/// the builds. Such a write is held for the rest of the progress interval (`Context::progress_hold`).
pub fn progress_only(previous: &MicroServiceStatus, next: &MicroServiceStatus) -> bool {
    let same_conditions = previous.conditions.len() == next.conditions.len()
        && previous.conditions.iter().zip(&next.conditions).all(|(a, b)| {
            a.type_ == b.type_
                && a.status == b.status
                && a.reason == b.reason
                && a.observed_generation == b.observed_generation
        });
    same_conditions
        && previous.observed_generation == next.observed_generation
        && previous.phase == next.phase
        && previous.image == next.image
        && previous.commit == next.commit
        && previous.url == next.url
        && previous.builds == next.builds
}

/// Overlays the source step on a status computed by [`compute`] (whose `wanted` is `[Ready,
/// Available]`): `SourceReady` and `BuildSucceeded` conditions, the running commit and image, and
/// `Ready`/phase held back until the current commit's image is what runs.
pub fn with_source(
    status: &mut MicroServiceStatus,
    wanted: Vec<Cond>,
    source: &super::source::SourceState,
    run: Option<&super::source::Run>,
    builds: Vec<microplane_crds::BuiltImage>,
) -> Vec<Cond> {
    use super::source::SourceState as S;
    let short = |c: &str| c.chars().take(12).collect::<String>();
    let mut ready = wanted
        .first()
        .cloned()
        .unwrap_or_else(|| Cond::fail(CondType::Ready, Reason::Pending, ""));
    let mut available = wanted
        .get(1)
        .cloned()
        .unwrap_or_else(|| Cond::fail(CondType::Available, Reason::Pending, ""));
    status.builds = builds;
    status.commit = run.map(|r| r.version.clone());
    let resolved = |commit: &str| {
        Cond::ok(
            CondType::SourceReady,
            Reason::Resolved,
            format!("resolved to commit {commit}"),
        )
    };
    let (source_ready, built, hold) = match source {
        S::Resolving => (
            Cond::fail(CondType::SourceReady, Reason::Resolving, "resolving the git source"),
            Cond::fail(
                CondType::BuildSucceeded,
                Reason::Resolving,
                "waiting for the source to resolve",
            ),
            Some((
                Phase::Resolving,
                Cond::fail(CondType::Ready, Reason::Resolving, "resolving the git source"),
            )),
        ),
        S::Failed(e) => (
            Cond::fail(CondType::SourceReady, e.reason, e.message.clone()),
            Cond::fail(
                CondType::BuildSucceeded,
                Reason::SourceNotReady,
                "the source did not resolve",
            ),
            Some((
                // A transient error is retried: still resolving, not failed.
                if crate::conditions::progress(e.reason) == crate::conditions::Progress::Reconciling {
                    Phase::Resolving
                } else {
                    Phase::Failed
                },
                Cond::fail(CondType::Ready, e.reason, e.message.clone()),
            )),
        ),
        S::Building { commit, job } => {
            let m = format!("building commit {} (Job {job})", short(commit));
            (
                resolved(commit),
                Cond::fail(CondType::BuildSucceeded, Reason::Building, m.clone()),
                Some((Phase::Building, Cond::fail(CondType::Ready, Reason::Building, m))),
            )
        }
        S::BuildFailed { commit, message } => (
            resolved(commit),
            Cond::fail(CondType::BuildSucceeded, Reason::BuildFailed, message.clone()),
            Some((
                Phase::Failed,
                Cond::fail(
                    CondType::Ready,
                    Reason::BuildFailed,
                    format!("commit {}: {message}", short(commit)),
                ),
            )),
        ),
        S::Built { commit, image } => (
            resolved(commit),
            Cond::ok(CondType::BuildSucceeded, Reason::Built, image.clone()),
            None,
        ),
    };
    if let Some((phase, cond)) = hold {
        status.phase = Some(phase);
        if !available.status {
            // Nothing runs yet: Available says why, like Ready.
            if status.replicas.is_none() {
                available = Cond::fail(CondType::Available, cond.reason, cond.message.clone());
            }
        }
        ready = cond;
    }
    vec![ready, source_ready, built, available]
}

/// What the gateway makes of a MicroService: `status.endpoints`, `status.url` and the `Routed`
/// condition. `Routed` informs; it does not gate `Ready`, which says the workload runs (a service
/// whose pods serve but do not offer reflection is still deployed).
pub(crate) fn routing(
    name: &str,
    expose: bool,
    protocol: microplane_crds::Protocol,
    discovery: Option<&crate::discovery::DiscoveryState>,
    gateway_url: Option<&str>,
) -> (Vec<String>, Option<String>, Cond) {
    use crate::discovery::DiscoveryState;
    if !expose {
        return (
            Vec::new(),
            None,
            Cond::fail(
                CondType::Routed,
                Reason::NotExposed,
                "spec.expose is false: the gateway does not route it",
            ),
        );
    }
    let url = gateway_url.map(|u| format!("{}/{name}", u.trim_end_matches('/')));
    match (protocol, discovery) {
        (microplane_crds::Protocol::Http, _) => (
            Vec::new(),
            url,
            Cond::ok(
                CondType::Routed,
                Reason::Routed,
                format!("the gateway proxies /{name}/… to the service"),
            ),
        ),
        (_, Some(DiscoveryState::Ready(d))) => {
            const SHOWN: usize = 100;
            let mut listed: Vec<&str> = d.endpoints.iter().take(10).map(String::as_str).collect();
            if d.endpoints.len() > listed.len() {
                listed.push("…");
            }
            (
                d.endpoints.iter().take(SHOWN).cloned().collect(),
                url,
                Cond::ok(
                    CondType::Routed,
                    Reason::Routed,
                    format!("{} endpoints discovered: {}", d.endpoints.len(), listed.join(", ")),
                ),
            )
        }
        (_, Some(DiscoveryState::Failed(e))) => {
            let mut e = e.summary();
            if e.len() > 300 {
                let mut cut = 300;
                while !e.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.truncate(cut);
            }
            (
                Vec::new(),
                url,
                Cond::fail(
                    CondType::Routed,
                    Reason::ReflectionFailed,
                    format!("gRPC reflection failed: {e}"),
                ),
            )
        }
        (_, _) => (
            Vec::new(),
            url,
            Cond::fail(
                CondType::Routed,
                Reason::DiscoveryPending,
                "waiting for a ready pod to answer gRPC server reflection",
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::DiscoveryState;
    use crate::discovery::reflection::ReflectionError;

    #[test]
    fn a_failed_discovery_is_reported_without_the_pod_it_asked() {
        let routed = |e: ReflectionError| {
            routing(
                "hello",
                true,
                microplane_crds::Protocol::Grpc,
                Some(&DiscoveryState::Failed(e)),
                None,
            )
            .2
        };
        let unimplemented = "status: Unimplemented, message: \"no reflection\"".to_string();
        let a = routed(ReflectionError::Call("10.244.3.240:8080".into(), unimplemented.clone()));
        let b = routed(ReflectionError::Call("10.244.9.7:8080".into(), unimplemented));
        assert_eq!((a.status, a.reason), (false, Reason::ReflectionFailed));
        assert_eq!(a.message, b.message, "another pod, the same failure: the same status");
        assert!(a.message.contains("Unimplemented"), "{}", a.message);
        for e in [
            ReflectionError::Call("10.1.2.3:8080".into(), "channel closed".into()),
            ReflectionError::Protocol("10.1.2.3:8080".into(), "stream ended early".into()),
            ReflectionError::Invalid("10.1.2.3:8080".into(), "missing dependency".into()),
            ReflectionError::Timeout("10.1.2.3:8080".into(), std::time::Duration::from_secs(5)),
        ] {
            let c = routed(e.clone());
            assert!(!c.message.contains("10.1.2.3"), "{} shows the address", c.message);
            assert!(e.to_string().contains("10.1.2.3"), "the log keeps it: {e}");
        }
    }
}
