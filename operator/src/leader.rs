//! Leader election on a coordination.k8s.io Lease: one replica writes, standbys keep their caches
//! warm and take over.
//!
//! The protocol is client-go's, written out here because a standby must notice a released Lease
//! within a second or two (kube-lease-manager's standby sleeps until the holder's lease would
//! expire, so a handover after a graceful release took the whole lease duration):
//!
//! - a standby reads the Lease every `retry` (1 s) and takes it when it is free (released) or
//!   expired, with an optimistic-concurrency `replace`, so two standbys never both win;
//! - the leader renews every `duration / 3` and steps down by itself (stops writing at once) when it
//!   has not renewed for `2/3 duration`, well before anyone may take the Lease;
//! - on shutdown the leader releases the Lease (no holder), so a standby takes over at its next read.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct Election {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease duration in seconds: how long a dead leader keeps the lease.
    pub duration: u64,
    /// How often a standby reads the Lease.
    pub retry: Duration,
}

/// What the Lease says, as far as the election is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// `holderIdentity`; none (or empty) when released.
    pub identity: Option<String>,
    /// `renewTime` in Unix milliseconds.
    pub renewed_ms: Option<i64>,
    /// `leaseDurationSeconds`.
    pub duration_s: Option<i32>,
}

/// What to do with the Lease now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create it (it does not exist).
    Create,
    /// Take it: free or expired.
    Acquire,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it.
    Wait,
}

/// The decision for `me` at `now_ms` (Unix milliseconds), given the Lease (none: it does not exist).
pub fn decide(lease: Option<&Holder>, me: &str, now_ms: i64) -> Step {
    let Some(h) = lease else { return Step::Create };
    match h.identity.as_deref() {
        None | Some("") => Step::Acquire,
        Some(id) if id == me => Step::Renew,
        Some(_) => {
            let expires = h
                .renewed_ms
                .zip(h.duration_s)
                .map(|(r, d)| r.saturating_add(i64::from(d) * 1000));
            match expires {
                Some(e) if e > now_ms => Step::Wait,
                _ => Step::Acquire,
            }
        }
    }
}

fn holder(lease: &Lease) -> Holder {
    let spec = lease.spec.clone().unwrap_or_default();
    Holder {
        identity: spec.holder_identity,
        renewed_ms: spec.renew_time.map(|t| t.0.as_millisecond()),
        duration_s: spec.lease_duration_seconds,
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Handle of a running election.
pub struct Leadership {
    /// True while this replica leads.
    pub is_leader: watch::Receiver<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    /// Stops the election and waits for it: a leader releases the Lease first.
    pub async fn stop(self) {
        if let Some(task) = self.task
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "leader election task failed");
        }
    }
}

/// Starts leader election; `is_leader` says whether this replica leads (always true without
/// election). When `shutdown` resolves, a leader stops leading at once and releases the Lease.
pub fn start(
    client: Client,
    election: Option<Election>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Leadership {
    let Some(e) = election else {
        // The sender is dropped: receivers keep reading `true`, and nothing ever changes it.
        let (_, rx) = watch::channel(true);
        return Leadership {
            is_leader: rx,
            task: None,
        };
    };
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let task = tokio::spawn(run(api, e, tx, shutdown));
    Leadership {
        is_leader: rx,
        task: Some(task),
    }
}

async fn run(
    api: Api<Lease>,
    e: Election,
    tx: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let duration = Duration::from_secs(e.duration.max(3));
    let renew_every = duration / 3;
    let renew_deadline = duration * 2 / 3;
    let mut last_renewed: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let leading = *tx.borrow();
        // A leader that could not renew in time stops writing before anyone may take over.
        if leading && last_renewed.is_none_or(|t| t.elapsed() >= renew_deadline) {
            tx.send_replace(false);
            tracing::warn!(lease = %e.name, "lease not renewed in time; stepped down");
        }
        let budget = match last_renewed {
            Some(t) if leading => renew_deadline
                .saturating_sub(t.elapsed())
                .max(Duration::from_millis(100)),
            _ => duration / 3,
        };
        let attempt = tokio::time::timeout(budget, step(&api, &e, duration, &tx, &mut last_renewed));
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = attempt => {
                if let Err(err) = r.unwrap_or_else(|_| Err("lease request timed out".into())) {
                    tracing::warn!(lease = %e.name, error = %err, "leader election");
                }
            }
        }
        let pause = if *tx.borrow() { renew_every } else { e.retry };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    // Shutting down: stop writing first, then hand the Lease over.
    let was_leader = tx.send_replace(false);
    if was_leader {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(3), release(&api, &e)).await {
            Ok(Ok(())) => tracing::info!(lease = %e.name, took_ms = started.elapsed().as_millis(), "lease released"),
            Ok(Err(err)) => tracing::warn!(lease = %e.name, error = %err, "cannot release the lease; it expires"),
            Err(_) => tracing::warn!(lease = %e.name, "releasing the lease timed out; it expires"),
        }
    }
}

type StepError = Box<dyn std::error::Error + Send + Sync>;

async fn step(
    api: &Api<Lease>,
    e: &Election,
    duration: Duration,
    tx: &watch::Sender<bool>,
    last_renewed: &mut Option<Instant>,
) -> Result<(), StepError> {
    let current = api.get_opt(&e.name).await?;
    let seen = current.as_ref().map(holder);
    let now = now_ms();
    let decision = decide(seen.as_ref(), &e.identity, now);
    let leading = *tx.borrow();
    if decision == Step::Wait {
        if leading {
            tx.send_replace(false);
            tracing::warn!(lease = %e.name, holder = ?seen.and_then(|h| h.identity), "lease taken by another replica; stepped down");
        }
        return Ok(());
    }
    let secs = i32::try_from(duration.as_secs()).unwrap_or(15);
    let stamp = MicroTime(Timestamp::now());
    let mut lease = current.clone().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(e.name.clone()),
            namespace: Some(e.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_default();
    if decision != Step::Renew {
        spec.acquire_time = Some(stamp.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + i32::from(decision == Step::Acquire));
    }
    spec.holder_identity = Some(e.identity.clone());
    spec.lease_duration_seconds = Some(secs);
    spec.renew_time = Some(stamp);
    lease.spec = Some(spec);
    let written = match decision {
        Step::Create => api.create(&PostParams::default(), &lease).await,
        // resourceVersion from the read: a concurrent writer makes this a 409, never a double win.
        _ => api.replace(&e.name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(_) => {
            *last_renewed = Some(Instant::now());
            if !leading {
                tx.send_replace(true);
                // How long the Lease stood free or expired before this replica took it.
                let free_for_ms = seen.as_ref().and_then(|h| {
                    let since = match h.identity.as_deref() {
                        None | Some("") => h.renewed_ms,
                        Some(_) => h.renewed_ms.zip(h.duration_s).map(|(r, d)| r + i64::from(d) * 1000),
                    }?;
                    Some(now.saturating_sub(since).max(0))
                });
                tracing::info!(
                    lease = %e.name,
                    identity = %e.identity,
                    previous = ?seen.and_then(|h| h.identity).filter(|i| !i.is_empty()),
                    handover_ms = ?free_for_ms,
                    "became leader"
                );
            }
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Marks the Lease free if this replica still holds it (`holderIdentity` cleared, `renewTime` the
/// release time, so the next leader can say how long the handover took).
async fn release(api: &Api<Lease>, e: &Election) -> Result<(), StepError> {
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        return Ok(());
    };
    let spec: &mut LeaseSpec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    spec.lease_duration_seconds = Some(1);
    api.replace(&e.name, &PostParams::default(), &lease).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(id: Option<&str>, renewed_ms: i64, duration_s: i32) -> Holder {
        Holder {
            identity: id.map(str::to_owned),
            renewed_ms: Some(renewed_ms),
            duration_s: Some(duration_s),
        }
    }

    #[test]
    fn decisions() {
        let now = 100_000;
        let cases: &[(Option<Holder>, Step)] = &[
            (None, Step::Create),
            (Some(h(None, now - 1, 15)), Step::Acquire),
            (Some(h(Some(""), now - 1, 15)), Step::Acquire),
            (Some(h(Some("me"), now - 1, 15)), Step::Renew),
            // Ours even when expired: renew (nobody took it).
            (Some(h(Some("me"), now - 60_000, 15)), Step::Renew),
            (Some(h(Some("other"), now - 14_000, 15)), Step::Wait),
            (Some(h(Some("other"), now - 15_000, 15)), Step::Acquire),
            (Some(h(Some("other"), now - 16_000, 15)), Step::Acquire),
            (
                Some(Holder {
                    identity: Some("other".into()),
                    renewed_ms: None,
                    duration_s: None,
                }),
                Step::Acquire,
            ),
        ];
        for (lease, want) in cases {
            assert_eq!(decide(lease.as_ref(), "me", now), *want, "{lease:?}");
        }
    }
}
