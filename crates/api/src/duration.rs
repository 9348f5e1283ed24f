//! Human-written durations in resources: `90s`, `5m`, `1h`, `1h30m`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration written as a sequence of `<integer><unit>` with units `ms`, `s`, `m`, `h`, `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("duration is empty; write e.g. 30s, 5m or 1h")]
    Empty,
    /// A number without a unit, or an unknown unit.
    #[error("duration {0:?}: expected <number><unit> with unit ms, s, m, h or d")]
    Malformed(String),
    /// Zero-length durations make no sense for TTLs and timeouts.
    #[error("duration must be greater than zero")]
    Zero,
    /// Too large to represent.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl HumanDuration {
    /// The parsed duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let malformed = || DurationError::Malformed(s.to_owned());
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(malformed)?;
            let n: u64 = rest[..digits].parse().map_err(|_| malformed())?;
            let unit_len = rest[digits..]
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len() - digits);
            let unit = &rest[digits..digits + unit_len];
            let part = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(malformed)?),
                "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(malformed)?),
                "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(malformed)?),
                _ => return Err(malformed()),
            };
            total = total
                .checked_add(part)
                .ok_or_else(|| DurationError::Overflow(s.to_owned()))?;
            rest = &rest[digits + unit_len..];
        }
        if total.is_zero() {
            return Err(DurationError::Zero);
        }
        Ok(HumanDuration(total))
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = DurationError;
    fn try_from(s: String) -> Result<Self, DurationError> {
        s.parse()
    }
}

impl From<HumanDuration> for String {
    fn from(d: HumanDuration) -> String {
        d.to_string()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        let d = |s: &str| s.parse::<HumanDuration>().map(HumanDuration::get);
        assert_eq!(d("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("2d"), Ok(Duration::from_secs(172_800)));
        assert!(matches!(d("10"), Err(DurationError::Malformed(_))));
        assert!(matches!(d("10x"), Err(DurationError::Malformed(_))));
        assert!(matches!(d("h"), Err(DurationError::Malformed(_))));
        assert_eq!(d("0s"), Err(DurationError::Zero));
        assert_eq!(d(""), Err(DurationError::Empty));
    }
}
