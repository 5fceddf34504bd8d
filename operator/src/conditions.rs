//! Building `metav1.Condition` lists: a transition time only when the status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition to set: type, status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Condition type, e.g. `Ready`.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Cond {
    /// A condition that holds.
    pub fn ok(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }
    /// A condition that does not hold.
    pub fn fail(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// Merges `wanted` into `previous`: conditions keep their `lastTransitionTime` unless their status
/// changes; types not in `wanted` are dropped. Output is ordered as `wanted`.
pub fn merge(previous: &[Condition], wanted: &[Cond], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" }.to_string();
            let last = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason.to_string(),
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
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap_or_default())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let first = merge(&[], &[Cond::fail("Ready", "Deploying", "0/1")], Some(1), &t(10));
        assert_eq!(first[0].last_transition_time, t(10));
        let same = merge(&first, &[Cond::fail("Ready", "Deploying", "0/2")], Some(2), &t(20));
        assert_eq!(same[0].last_transition_time, t(10), "same status keeps the time");
        assert_eq!(same[0].message, "0/2");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, &[Cond::ok("Ready", "Running", "1/1")], Some(2), &t(30));
        assert_eq!(flipped[0].last_transition_time, t(30));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn conditions_not_wanted_are_dropped() {
        let first = merge(
            &[],
            &[Cond::ok("Ready", "A", ""), Cond::ok("Available", "B", "")],
            None,
            &t(1),
        );
        let next = merge(&first, &[Cond::ok("Ready", "A", "")], None, &t(2));
        assert_eq!(next.len(), 1);
    }
}
