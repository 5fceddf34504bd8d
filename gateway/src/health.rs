//! What `/readyz` and `/healthz` say, from the sync task's reports and the shutdown signal.
//!
//! Ready means "send me traffic": a routing snapshot has been applied, the sync task runs, its stream
//! to the operator has not been down for longer than the stale threshold (the last snapshot keeps
//! serving meanwhile, so a rolling operator upgrade leaves gateways ready), and no shutdown has
//! begun. Live means "do not restart me": false only when the sync task stopped for good.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why the gateway is not ready (or that it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Serving a snapshot, in touch with the operator (or briefly out of touch).
    Ready,
    /// No snapshot applied yet.
    NoSnapshot,
    /// The sync stream has been down this long (more than the threshold).
    SyncDown(Duration),
    /// The sync task is not running.
    SyncStopped,
    /// SIGTERM: endpoints are being withdrawn.
    ShuttingDown,
}

impl Readiness {
    /// The body `/readyz` answers with.
    pub fn describe(self) -> String {
        match self {
            Self::Ready => "ready".into(),
            Self::NoSnapshot => "waiting for the first routing snapshot".into(),
            Self::SyncDown(d) => format!("sync stream down for {}s", d.as_secs()),
            Self::SyncStopped => "sync task stopped".into(),
            Self::ShuttingDown => "shutting down".into(),
        }
    }
}

/// What the sync task and the shutdown have reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// A snapshot was applied at least once.
    pub has_snapshot: bool,
    /// Since when the stream is down; none while connected.
    pub down_since: Option<Instant>,
    /// The sync task runs.
    pub task_running: bool,
    /// The sync task stopped and will not be restarted.
    pub task_dead: bool,
    /// Shutdown has begun.
    pub shutting_down: bool,
}

/// The readiness verdict: a pure function of the reports, the time and the stale threshold.
pub(crate) fn judge(s: &State, now: Instant, stale: Duration) -> Readiness {
    if s.shutting_down {
        return Readiness::ShuttingDown;
    }
    if !s.task_running || s.task_dead {
        return Readiness::SyncStopped;
    }
    if !s.has_snapshot {
        return Readiness::NoSnapshot;
    }
    match s.down_since {
        Some(t) if now.saturating_duration_since(t) > stale => Readiness::SyncDown(now.saturating_duration_since(t)),
        _ => Readiness::Ready,
    }
}

/// Shared health state.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    stale: Duration,
}

impl Health {
    /// A gateway that has just started: no snapshot, stream down since now, task running.
    pub fn new(stale: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                has_snapshot: false,
                down_since: Some(Instant::now()),
                task_running: true,
                task_dead: false,
                shutting_down: false,
            }),
            stale,
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// A snapshot was applied.
    pub fn snapshot_applied(&self) {
        self.update(|s| s.has_snapshot = true);
    }
    /// The stream to the operator is open.
    pub fn connected(&self) {
        self.update(|s| s.down_since = None);
    }
    /// The stream ended or failed (keeps the earliest time when already down).
    pub(crate) fn disconnected(&self) {
        self.update(|s| {
            s.down_since.get_or_insert_with(Instant::now);
        });
    }
    /// The sync task ended; `for_good` when it will not be restarted.
    pub(crate) fn task_stopped(&self, for_good: bool) {
        self.update(|s| {
            s.task_running = false;
            s.task_dead |= for_good;
            s.down_since.get_or_insert_with(Instant::now);
        });
    }
    /// The sync task was restarted.
    pub(crate) fn task_started(&self) {
        self.update(|s| s.task_running = !s.task_dead);
    }
    /// SIGTERM: not ready from now on.
    pub(crate) fn shutting_down(&self) {
        self.update(|s| s.shutting_down = true);
    }

    /// The readiness verdict now.
    pub fn readiness(&self) -> Readiness {
        judge(
            &self.state.lock().unwrap_or_else(PoisonError::into_inner),
            Instant::now(),
            self.stale,
        )
    }

    /// Liveness: false only when the sync task stopped for good.
    pub fn live(&self) -> bool {
        !self.state.lock().unwrap_or_else(PoisonError::into_inner).task_dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_table() {
        let t0 = Instant::now();
        let stale = Duration::from_secs(30);
        let ok = State {
            has_snapshot: true,
            down_since: None,
            task_running: true,
            task_dead: false,
            shutting_down: false,
        };
        let at = |secs| t0 + Duration::from_secs(secs);
        let cases: Vec<(State, Instant, Readiness)> = vec![
            (ok.clone(), at(0), Readiness::Ready),
            (
                State {
                    has_snapshot: false,
                    ..ok.clone()
                },
                at(0),
                Readiness::NoSnapshot,
            ),
            // Never a snapshot, stream down: still "no snapshot" (the first cause).
            (
                State {
                    has_snapshot: false,
                    down_since: Some(t0),
                    ..ok.clone()
                },
                at(100),
                Readiness::NoSnapshot,
            ),
            // Down for less than the threshold: keeps serving the last snapshot, ready.
            (
                State {
                    down_since: Some(t0),
                    ..ok.clone()
                },
                at(30),
                Readiness::Ready,
            ),
            (
                State {
                    down_since: Some(t0),
                    ..ok.clone()
                },
                at(31),
                Readiness::SyncDown(Duration::from_secs(31)),
            ),
            (
                State {
                    task_running: false,
                    ..ok.clone()
                },
                at(0),
                Readiness::SyncStopped,
            ),
            (
                State {
                    task_dead: true,
                    ..ok.clone()
                },
                at(0),
                Readiness::SyncStopped,
            ),
            (
                State {
                    shutting_down: true,
                    ..ok.clone()
                },
                at(0),
                Readiness::ShuttingDown,
            ),
            (
                State {
                    shutting_down: true,
                    has_snapshot: false,
                    ..ok.clone()
                },
                at(0),
                Readiness::ShuttingDown,
            ),
        ];
        for (state, now, want) in cases {
            assert_eq!(judge(&state, now, stale), want, "{state:?}");
        }
    }

    #[test]
    fn transitions() {
        let h = Health::new(Duration::from_secs(30));
        assert_eq!(h.readiness(), Readiness::NoSnapshot);
        h.connected();
        h.snapshot_applied();
        assert_eq!(h.readiness(), Readiness::Ready);
        h.disconnected();
        assert_eq!(h.readiness(), Readiness::Ready, "briefly down: still ready");
        h.task_stopped(false);
        assert_eq!(h.readiness(), Readiness::SyncStopped);
        assert!(h.live(), "restartable: still live");
        h.task_started();
        assert_eq!(h.readiness(), Readiness::Ready);
        h.task_stopped(true);
        h.task_started();
        assert!(!h.live());
        assert_eq!(h.readiness(), Readiness::SyncStopped);
        let h = Health::new(Duration::ZERO);
        h.snapshot_applied();
        h.connected();
        h.shutting_down();
        assert_eq!(h.readiness(), Readiness::ShuttingDown);
        assert!(h.live());
    }
}
