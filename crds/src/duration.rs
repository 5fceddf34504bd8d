//! Durations as the API spells them (`pollInterval`, `tokenTTL`): one or more `<digits><unit>`
//! with unit `ms`, `s`, `m` or `h`, such as `250ms`, `30s`, `15m` or `1h30m`, more than zero in
//! total. The schema's CEL rules admit exactly these (`tokenTTL` without `ms`); the fields stay
//! strings on the wire, and [`Duration`] is how they are read.

use std::fmt;
use std::str::FromStr;

/// A positive duration in the API's grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// Why a text is not a [`Duration`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to read.
    #[error("empty duration")]
    Empty,
    /// A unit (or anything else) where digits were expected, e.g. `m5` or `1h-`.
    #[error("{0:?} is not a duration: expected digits at {1:?}")]
    MissingNumber(String, String),
    /// Digits without a unit, or a unit other than `ms`, `s`, `m`, `h`, e.g. `15` or `1d`.
    #[error("{0:?} is not a duration: expected a unit (ms, s, m or h) at {1:?}")]
    UnknownUnit(String, String),
    /// More than the largest duration.
    #[error("{0:?} is too long a duration")]
    Overflow(String),
    /// Zero in total, e.g. `0s`.
    #[error("{0:?} is zero")]
    Zero(String),
}

impl Duration {
    /// Reads `s` (see the module documentation for the grammar).
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let overflow = || DurationError::Overflow(s.to_string());
        let mut total = std::time::Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(DurationError::MissingNumber(s.to_string(), rest.to_string()));
            }
            let n: u64 = rest[..digits].parse().map_err(|_| overflow())?;
            rest = &rest[digits..];
            let (part, len) = if rest.starts_with("ms") {
                (Some(std::time::Duration::from_millis(n)), 2)
            } else if rest.starts_with('s') {
                (Some(std::time::Duration::from_secs(n)), 1)
            } else if rest.starts_with('m') {
                (n.checked_mul(60).map(std::time::Duration::from_secs), 1)
            } else if rest.starts_with('h') {
                (n.checked_mul(3600).map(std::time::Duration::from_secs), 1)
            } else {
                return Err(DurationError::UnknownUnit(s.to_string(), rest.to_string()));
            };
            total = part.and_then(|p| total.checked_add(p)).ok_or_else(overflow)?;
            rest = &rest[len..];
        }
        if total.is_zero() {
            return Err(DurationError::Zero(s.to_string()));
        }
        Ok(Self(total))
    }

    /// As a `std::time::Duration`.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl fmt::Display for Duration {
    /// The shortest spelling in the grammar, e.g. `1h30m` or `1s500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (h, m, s, ms) = (secs / 3600, secs / 60 % 60, secs % 60, self.0.subsec_millis());
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (u64::from(ms), "ms")] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<std::time::Duration, DurationError> {
        Duration::parse(s).map(Duration::get)
    }

    #[test]
    fn reads_every_unit_and_sums() {
        assert_eq!(d("30s"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(d("1m"), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(d("15m"), Ok(std::time::Duration::from_secs(900)));
        assert_eq!(d("1h30m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(d("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(d("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(d("1s500ms"), Ok(std::time::Duration::from_millis(1500)));
        // Repeated and unordered units add up, as the CEL rule admits them.
        assert_eq!(d("1m1m"), Ok(std::time::Duration::from_secs(120)));
        assert_eq!(d("0h5s"), Ok(std::time::Duration::from_secs(5)));
        assert_eq!(
            "2h".parse::<Duration>().map(Duration::get),
            Ok(std::time::Duration::from_secs(7200))
        );
    }

    #[test]
    fn rejects_what_the_grammar_does_not_admit() {
        assert_eq!(d(""), Err(DurationError::Empty));
        assert!(matches!(d("0s"), Err(DurationError::Zero(_))));
        assert!(matches!(d("0ms0h"), Err(DurationError::Zero(_))));
        assert!(matches!(d("15"), Err(DurationError::UnknownUnit(..))));
        assert!(matches!(d("1d"), Err(DurationError::UnknownUnit(..))));
        assert!(matches!(d("5d"), Err(DurationError::UnknownUnit(..))));
        assert!(matches!(d("1h30"), Err(DurationError::UnknownUnit(..))));
        assert!(matches!(d("1 h"), Err(DurationError::UnknownUnit(..))));
        assert!(matches!(d("1H"), Err(DurationError::UnknownUnit(..))));
        assert!(matches!(d("s"), Err(DurationError::MissingNumber(..))));
        assert!(matches!(d("m5"), Err(DurationError::MissingNumber(..))));
        assert!(matches!(d("1hh"), Err(DurationError::MissingNumber(..))));
        assert!(matches!(d("-1s"), Err(DurationError::MissingNumber(..))));
        assert!(matches!(d(" 1s"), Err(DurationError::MissingNumber(..))));
        assert!(matches!(d("1.5s"), Err(DurationError::UnknownUnit(..))));
        assert!(matches!(d("99999999999999999999s"), Err(DurationError::Overflow(_))));
        assert!(matches!(d("18446744073709551615h"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn displays_in_the_grammar() {
        for s in ["1h30m", "250ms", "1s500ms", "15m", "2h"] {
            assert_eq!(Duration::parse(s).unwrap().to_string(), s);
        }
        let odd = Duration::parse("90m").unwrap();
        assert_eq!(odd.to_string(), "1h30m");
        assert_eq!(Duration::parse(&odd.to_string()), Ok(odd));
    }
}
