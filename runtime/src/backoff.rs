//! The one capped exponential backoff every retry loop of Microplane uses.

use std::time::Duration;

/// A delay that starts at `first` after one failure, doubles with each further failure in a row,
/// and never exceeds `max`.
///
/// ```
/// use std::time::Duration;
/// use microplane_runtime::Backoff;
///
/// const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
/// assert_eq!(RETRY.delay(1), Duration::from_secs(1));
/// assert_eq!(RETRY.delay(3), Duration::from_secs(4));
/// assert_eq!(RETRY.delay(40), Duration::from_secs(60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// `first` after one failure, doubling up to `max`.
    #[must_use]
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The delay after `failures` failures in a row (0 counts as 1).
    #[must_use]
    pub fn delay(&self, failures: u32) -> Duration {
        // 2^31 times any non-zero delay is past every cap we use; stop doubling there.
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// [`Backoff::delay`] spread uniformly over its upper half, so that many clients failing
    /// together (gateways losing the operator at once) do not retry in step.
    #[must_use]
    pub fn jittered(&self, failures: u32) -> Duration {
        let full = self.delay(failures);
        let half = full / 2;
        let nanos = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let got: Vec<u128> = (0..=9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, [100, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn a_cap_that_is_not_a_power_of_two_is_reached_not_rounded() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(b.delay(9), Duration::from_secs(256));
        assert_eq!(b.delay(10), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_varies() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let seen: std::collections::BTreeSet<Duration> = (0..200).map(|_| b.jittered(4)).collect();
        assert!(
            seen.iter()
                .all(|d| *d >= Duration::from_millis(400) && *d <= Duration::from_millis(800))
        );
        assert!(seen.len() > 10, "jitter does not vary: {seen:?}");
    }
}
