//! Conditions as the operator sets them: how a reason ([`Reason`], from `microplane-crds` with the
//! condition types) reads in kstatus terms, and building `metav1.Condition` lists (a transition
//! time only when the status changes).
//!
//! Every kind's status follows kstatus (sigs.k8s.io/cli-utils/pkg/kstatus): `Ready=True` alone when
//! the object is done and healthy; `Reconciling=True` (with `Ready=False`) while work is in
//! progress, a transient error included; `Stalled=True` (with `Ready=False`) when it failed and will
//! not progress without a change somewhere. [`kstatus`] derives the two from the `Ready` condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use microplane_crds::{CondType, ConditionStatus, Reason};

/// What a `Ready` reason means in kstatus terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Done: `Ready=True` (used only with a true `Ready`).
    Done,
    /// Work in progress, or a transient error being retried: `Reconciling=True`.
    Reconciling,
    /// Failed; no progress without a change: `Stalled=True`.
    Stalled,
}

/// What `Ready=False` with `reason` means for kstatus.
pub const fn progress(reason: Reason) -> Progress {
    use Reason as R;
    match reason {
        R::Running
        | R::ScaledToZero
        | R::Provisioned
        | R::Delivered
        | R::Accepted
        | R::Valid
        | R::Routed
        | R::SigningKeysReplaced => Progress::Done,
        R::Pending
        | R::Deploying
        | R::Resolving
        | R::Building
        | R::ConfigNotReady
        | R::Resolved
        | R::Built
        | R::SourceNotReady
        | R::DiscoveryPending
        | R::NamespaceTerminating
        | R::QuotaPending
        // Retried with backoff: a network or cache hiccup is progress, not a failure.
        | R::SourceUnreachable
        | R::SourceTimeout
        | R::SourceCacheError => Progress::Reconciling,
        R::TenantNotFound
        | R::ConfigNotFound
        | R::ProgressDeadlineExceeded
        | R::ImagePullBackOff
        | R::ErrImagePull
        | R::InvalidImageName
        | R::CrashLoopBackOff
        | R::CreateContainerConfigError
        | R::CreateContainerError
        | R::BuildFailed
        | R::InvalidSource
        | R::InsecureSourceRefused
        | R::AuthenticationFailed
        | R::HostKeyMismatch
        | R::HostKeyNotPinned
        | R::RevisionNotFound
        | R::PathNotFound
        | R::PathEscapesRepository
        | R::NothingToBuild
        | R::RepositoryTooLarge
        | R::SecretInvalid
        | R::SecretNotFound
        | R::NotExposed
        | R::ReflectionFailed
        | R::NamespaceConflict
        | R::NamespaceReserved
        | R::HostConflict
        | R::SecretKeyNotFound
        | R::SecretValueNotText
        | R::PathConflict => Progress::Stalled,
    }
}

/// A condition to set: type, status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Condition type.
    pub type_: CondType,
    /// `True` or `False`.
    pub status: bool,
    /// Reason.
    pub reason: Reason,
    /// Human-readable message.
    pub message: String,
}

impl Cond {
    /// A condition that holds.
    pub fn ok(type_: CondType, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }
    /// A condition that does not hold.
    pub fn fail(type_: CondType, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// Adds kstatus's `Reconciling` or `Stalled` to `wanted`, derived from its `Ready` condition: none
/// when Ready is true; `Reconciling=True` or `Stalled=True` with Ready's reason and message when it
/// is false. Any `Reconciling`/`Stalled` already in `wanted` is replaced. Without a `Ready` the
/// list is returned as it is.
pub fn kstatus(mut wanted: Vec<Cond>) -> Vec<Cond> {
    wanted.retain(|c| !matches!(c.type_, CondType::Reconciling | CondType::Stalled));
    let Some(ready) = wanted.iter().find(|c| c.type_ == CondType::Ready).cloned() else {
        return wanted;
    };
    if ready.status {
        return wanted;
    }
    let type_ = match progress(ready.reason) {
        // A false Ready is never "done": a reason of the done kind here still means work to do.
        Progress::Done | Progress::Reconciling => CondType::Reconciling,
        Progress::Stalled => CondType::Stalled,
    };
    wanted.push(Cond::ok(type_, ready.reason, ready.message));
    wanted
}

/// Merges `wanted` into `previous`: conditions keep their `lastTransitionTime` unless their status
/// changes; types not in `wanted` are dropped. Output is ordered as `wanted`.
pub fn merge(previous: &[Condition], wanted: &[Cond], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let status = ConditionStatus::from(w.status).as_str().to_string();
            let last = previous
                .iter()
                .find(|c| c.type_ == w.type_.as_str() && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: w.type_.as_str().to_string(),
                status,
                reason: w.reason.as_str().to_string(),
                message: w.message.clone(),
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use CondType as T;
    use Reason as R;
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap_or_default())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(&[], &[Cond::fail(T::Ready, R::Deploying, "0/1")], Some(1), &t(10));
        assert_eq!(first[0].last_transition_time, t(10));
        let same = merge(&first, &[Cond::fail(T::Ready, R::Deploying, "0/2")], Some(2), &t(20));
        assert_eq!(same[0].last_transition_time, t(10), "same status keeps the time");
        assert_eq!(same[0].message, "0/2");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, &[Cond::ok(T::Ready, R::Running, "1/1")], Some(2), &t(30));
        assert_eq!(flipped[0].last_transition_time, t(30));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn conditions_not_wanted_are_dropped() {
        let first = merge(
            &[],
            &[
                Cond::ok(T::Ready, R::Running, ""),
                Cond::ok(T::Available, R::Running, ""),
            ],
            None,
            &t(1),
        );
        let next = merge(&first, &[Cond::ok(T::Ready, R::Running, "")], None, &t(2));
        assert_eq!(next.len(), 1);
    }

    /// The kstatus case table: Ready as computed → the extra condition (type, status) or none.
    #[test]
    fn kstatus_conditions_follow_ready() {
        let cases: &[(bool, Reason, Option<CondType>)] = &[
            (true, R::Running, None),
            (true, R::ScaledToZero, None),
            (true, R::Provisioned, None),
            (true, R::Delivered, None),
            (true, R::Accepted, None),
            (false, R::Pending, Some(T::Reconciling)),
            (false, R::Resolving, Some(T::Reconciling)),
            (false, R::Building, Some(T::Reconciling)),
            (false, R::Deploying, Some(T::Reconciling)),
            (false, R::ConfigNotReady, Some(T::Reconciling)),
            (false, R::QuotaPending, Some(T::Reconciling)),
            (false, R::NamespaceTerminating, Some(T::Reconciling)),
            (false, R::SourceUnreachable, Some(T::Reconciling)),
            (false, R::SourceTimeout, Some(T::Reconciling)),
            (false, R::BuildFailed, Some(T::Stalled)),
            (false, R::ConfigNotFound, Some(T::Stalled)),
            (false, R::TenantNotFound, Some(T::Stalled)),
            (false, R::ImagePullBackOff, Some(T::Stalled)),
            (false, R::ProgressDeadlineExceeded, Some(T::Stalled)),
            (false, R::RevisionNotFound, Some(T::Stalled)),
            (false, R::NamespaceConflict, Some(T::Stalled)),
            (false, R::NamespaceReserved, Some(T::Stalled)),
            (false, R::HostConflict, Some(T::Stalled)),
            (false, R::SecretNotFound, Some(T::Stalled)),
            (false, R::PathConflict, Some(T::Stalled)),
            // A false Ready with a "done" reason would be a bug upstream; it still is not done.
            (false, R::Running, Some(T::Reconciling)),
        ];
        for &(ready, reason, extra) in cases {
            let cond = if ready {
                Cond::ok(T::Ready, reason, "m")
            } else {
                Cond::fail(T::Ready, reason, "m")
            };
            let out = kstatus(vec![cond.clone(), Cond::ok(T::Routed, R::Routed, "")]);
            assert_eq!(out[0], cond, "{reason}: Ready stays first and unchanged");
            assert_eq!(out[1].type_, T::Routed, "{reason}: other conditions are kept");
            let added: Vec<&Cond> = out[2..].iter().collect();
            match extra {
                None => assert!(added.is_empty(), "{reason}: {added:?}"),
                Some(type_) => {
                    assert_eq!(added.len(), 1, "{reason}");
                    assert_eq!(
                        (
                            added[0].type_,
                            added[0].status,
                            added[0].reason,
                            added[0].message.as_str()
                        ),
                        (type_, true, reason, "m"),
                        "{reason}"
                    );
                }
            }
        }
    }

    #[test]
    fn kstatus_replaces_stale_extras_and_needs_ready() {
        let out = kstatus(vec![
            Cond::ok(T::Ready, R::Running, ""),
            Cond::ok(T::Stalled, R::BuildFailed, ""),
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(kstatus(vec![Cond::ok(T::Routed, R::Routed, "")]).len(), 1);
        // Never both.
        for &r in Reason::ALL {
            let out = kstatus(vec![Cond::fail(T::Ready, r, "")]);
            assert_eq!(out.len(), 2, "{r}");
        }
    }
}
