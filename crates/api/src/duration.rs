//! Human-written durations in resources and flags: `90s`, `5m`, `1h`, `1h30m`.
//!
//! Every duration meshwork reads ends up added to "now" (a certificate's `notAfter`, a token's
//! expiry), so none is unbounded: a [`HumanDuration`] is at most [`HumanDuration::MAX`], and a
//! resource field takes a [`BoundedDuration`] whose range is part of its type and documented in
//! `docs/resources.md`. Out-of-range values are refused when the text is parsed, never later.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration written as a sequence of `<integer><unit>` with units `ms`, `s`, `m`, `h`, `d`,
/// greater than zero and at most [`HumanDuration::MAX`].
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
    /// Longer than any duration meshwork accepts ([`HumanDuration::MAX`]).
    #[error("duration {0:?} is too large; at most {max} is accepted", max = HumanDuration::MAX)]
    Overflow(String),
    /// Not a Gateway API duration (GEP-2257).
    #[error(
        "duration {0:?}: a Gateway API duration is 1 to 4 parts of 1 to 5 digits and a unit h, m, s or ms (GEP-2257), e.g. 1h2m, 10s or 500ms"
    )]
    NotGateway(String),
    /// A Gateway API duration outside the range of its field.
    #[error("duration {text:?} is out of range: must be between {min} and {max}")]
    GatewayOutOfRange {
        /// The text as written.
        text: String,
        /// The smallest accepted value, in GEP-2257 form.
        min: String,
        /// The largest accepted value, in GEP-2257 form.
        max: String,
    },
    /// Outside the range of the field it was given for.
    #[error("duration {text:?} is out of range: must be between {min} and {max}")]
    OutOfRange {
        /// The text as written.
        text: String,
        /// The smallest accepted value.
        min: HumanDuration,
        /// The largest accepted value.
        max: HumanDuration,
    },
}

impl HumanDuration {
    /// The longest duration meshwork accepts anywhere: 3650 days (10 years). Far beyond any
    /// sensible TTL, and far enough below the end of X.509/`time`'s calendar (year 9999) that
    /// `now + d` can always be represented.
    pub const MAX: HumanDuration = HumanDuration(Duration::from_secs(3650 * 86_400));

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
        let overflow = || DurationError::Overflow(s.to_owned());
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(malformed)?;
            if digits == 0 {
                return Err(malformed());
            }
            // Only digits, so a parse failure is a number too large for u64.
            let n: u64 = rest[..digits].parse().map_err(|_| overflow())?;
            let unit_len = rest[digits..]
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len() - digits);
            let unit = &rest[digits..digits + unit_len];
            let seconds = |per: u64| n.checked_mul(per).map(Duration::from_secs);
            let part = match unit {
                "ms" => Some(Duration::from_millis(n)),
                "s" => seconds(1),
                "m" => seconds(60),
                "h" => seconds(3600),
                "d" => seconds(86_400),
                _ => return Err(malformed()),
            };
            total = part
                .and_then(|p| total.checked_add(p))
                .ok_or_else(overflow)?;
            rest = &rest[digits + unit_len..];
        }
        if total.is_zero() {
            return Err(DurationError::Zero);
        }
        if total > Self::MAX.0 {
            return Err(overflow());
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
    /// In the largest unit that divides it exactly (`30d`, `1h`, `90s`, `250ms`), so that
    /// what is printed parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let unit = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ]
        .into_iter()
        .find(|(per, _)| ms.is_multiple_of(*per));
        match unit {
            Some((per, name)) => write!(f, "{}{name}", ms / per),
            None => write!(f, "{ms}ms"),
        }
    }
}

/// A [`HumanDuration`] between `MIN_MS` and `MAX_MS` milliseconds (inclusive): the type of
/// every duration field of a resource, so that its range is checked where the YAML is read
/// (and the error names file, line and field) rather than where the value is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BoundedDuration<const MIN_MS: u64, const MAX_MS: u64>(HumanDuration);

impl<const MIN_MS: u64, const MAX_MS: u64> BoundedDuration<MIN_MS, MAX_MS> {
    /// The smallest accepted value.
    pub const MIN: HumanDuration = HumanDuration(Duration::from_millis(MIN_MS));
    /// The largest accepted value.
    pub const MAX: HumanDuration = HumanDuration(Duration::from_millis(MAX_MS));

    /// The parsed duration.
    pub fn get(self) -> Duration {
        self.0.get()
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> std::str::FromStr for BoundedDuration<MIN_MS, MAX_MS> {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        let out_of_range = || DurationError::OutOfRange {
            text: s.to_owned(),
            min: Self::MIN,
            max: Self::MAX,
        };
        let d = match s.parse::<HumanDuration>() {
            Ok(d) => d,
            Err(DurationError::Overflow(_) | DurationError::Zero) => return Err(out_of_range()),
            Err(e) => return Err(e),
        };
        match (Self::MIN..=Self::MAX).contains(&d) {
            true => Ok(BoundedDuration(d)),
            false => Err(out_of_range()),
        }
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> TryFrom<String> for BoundedDuration<MIN_MS, MAX_MS> {
    type Error = DurationError;
    fn try_from(s: String) -> Result<Self, DurationError> {
        s.parse()
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> From<BoundedDuration<MIN_MS, MAX_MS>> for String {
    fn from(d: BoundedDuration<MIN_MS, MAX_MS>) -> String {
        d.0.to_string()
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> fmt::Display for BoundedDuration<MIN_MS, MAX_MS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Gateway API duration (GEP-2257): one to four `<1–5 digits><unit>` parts with units `h`,
/// `m`, `s`, `ms` (`1h2m`, `500ms`, `0s`), between `MIN_MS` and `MAX_MS` milliseconds. Unlike
/// [`BoundedDuration`] zero is a value (`0s` disables a Gateway API timeout) and `d` is not a
/// unit: the format is the Gateway API's, so that routes written for other meshes load as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GatewayDuration<const MIN_MS: u64, const MAX_MS: u64>(Duration);

/// GEP-2257's grammar, for messages and schemas.
pub const GATEWAY_DURATION_GRAMMAR: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

impl<const MIN_MS: u64, const MAX_MS: u64> GatewayDuration<MIN_MS, MAX_MS> {
    /// The parsed duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// Whole milliseconds (every value fits: at most 4 × 99999 h).
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this is `0s` (which disables a Gateway API timeout).
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Parses GEP-2257 text: `None` when it does not follow the grammar.
fn gateway_millis(s: &str) -> Option<u64> {
    let (mut total, mut parts, mut rest) = (0u64, 0, s);
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if !(1..=5).contains(&digits) {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let after = &rest[digits..];
        let (per, len) = match after.as_bytes() {
            [b'm', b's', ..] => (1, 2),
            [b'h', ..] => (3_600_000, 1),
            [b'm', ..] => (60_000, 1),
            [b's', ..] => (1_000, 1),
            _ => return None,
        };
        // Past four parts the text is refused before the sum could grow: at most
        // 4 × 99999 h, far below u64::MAX milliseconds.
        parts += 1;
        if parts > 4 {
            return None;
        }
        total += n * per;
        rest = &after[len..];
    }
    (1..=4).contains(&parts).then_some(total)
}

impl<const MIN_MS: u64, const MAX_MS: u64> std::str::FromStr for GatewayDuration<MIN_MS, MAX_MS> {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let ms = gateway_millis(s).ok_or_else(|| DurationError::NotGateway(s.to_owned()))?;
        if !(MIN_MS..=MAX_MS).contains(&ms) {
            return Err(DurationError::GatewayOutOfRange {
                text: s.to_owned(),
                min: format_millis(MIN_MS),
                max: format_millis(MAX_MS),
            });
        }
        Ok(GatewayDuration(Duration::from_millis(ms)))
    }
}

/// Milliseconds in GEP-2257's canonical form (`1h2m`, `500ms`, `0s`), for people.
pub fn format_millis(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (per, unit) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")] {
        if rest >= per {
            out += &format!("{}{unit}", rest / per);
            rest %= per;
        }
    }
    out
}

impl<const MIN_MS: u64, const MAX_MS: u64> TryFrom<String> for GatewayDuration<MIN_MS, MAX_MS> {
    type Error = DurationError;
    fn try_from(s: String) -> Result<Self, DurationError> {
        s.parse()
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> From<GatewayDuration<MIN_MS, MAX_MS>> for String {
    fn from(d: GatewayDuration<MIN_MS, MAX_MS>) -> String {
        d.to_string()
    }
}

impl<const MIN_MS: u64, const MAX_MS: u64> fmt::Display for GatewayDuration<MIN_MS, MAX_MS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_millis(self.as_millis()))
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
        assert!(matches!(d("1h-5m"), Err(DurationError::Malformed(_))));
        assert_eq!(d("0s"), Err(DurationError::Zero));
        assert_eq!(d(""), Err(DurationError::Empty));
    }

    #[test]
    fn nothing_longer_than_max_parses() {
        let d = |s: &str| s.parse::<HumanDuration>().map(HumanDuration::get);
        assert_eq!(d("3650d"), Ok(HumanDuration::MAX.get()));
        assert_eq!(d("87600h"), Ok(HumanDuration::MAX.get()));
        for huge in [
            "3650d1ms",
            "99999999999999h",
            "18446744073709551615d",
            "99999999999999999999999s",
            "18446744073709551615s18446744073709551615s",
        ] {
            assert_eq!(d(huge), Err(DurationError::Overflow(huge.into())), "{huge}");
        }
    }

    #[test]
    fn display_uses_the_largest_exact_unit_and_round_trips() {
        for (text, shown) in [
            ("30d", "30d"),
            ("720h", "30d"),
            ("90m", "90m"),
            ("3600s", "1h"),
            ("1500ms", "1500ms"),
            ("1s", "1s"),
        ] {
            let d: HumanDuration = text.parse().unwrap_or(HumanDuration::MAX);
            assert_eq!(d.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<HumanDuration>(), Ok(d));
        }
    }

    type OneSecToOneDay = BoundedDuration<1000, 86_400_000>;

    #[test]
    fn bounded_durations_check_both_ends() {
        let d = |s: &str| s.parse::<OneSecToOneDay>().map(OneSecToOneDay::get);
        assert_eq!(d("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(d("24h"), Ok(Duration::from_secs(86_400)));
        for outside in ["999ms", "24h1s", "0s", "99999999999999h"] {
            let err = d(outside).err().map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(
                err,
                format!("duration {outside:?} is out of range: must be between 1s and 1d"),
            );
        }
        assert!(matches!(d("1y"), Err(DurationError::Malformed(_))));
    }

    type UpToOneHour = GatewayDuration<0, 3_600_000>;

    #[test]
    fn gateway_durations_follow_gep_2257() {
        let d = |s: &str| s.parse::<UpToOneHour>().map(UpToOneHour::as_millis);
        // GEP-2257's own examples that fit the range, and zero.
        assert_eq!(d("0s"), Ok(0));
        assert_eq!(d("0h0m0s"), Ok(0));
        assert_eq!(d("1h"), Ok(3_600_000));
        assert_eq!(d("500ms"), Ok(500));
        assert_eq!(d("2m1s"), Ok(121_000));
        assert_eq!(d("1s500ms"), Ok(1_500));
        assert_eq!(d("10s"), Ok(10_000));
        // GEP-2257 refuses these: no sign, no fractions, no `d`, at most 5 digits and 4 parts.
        for bad in [
            "",
            "1",
            "1d",
            "-1s",
            "1.5s",
            "123456ms",
            "1h1m1s1ms1ms",
            "s",
            "1 s",
            "1S",
        ] {
            assert!(d(bad).is_err(), "{bad}");
        }
        assert_eq!(
            d("1h1ms").unwrap_err().to_string(),
            "duration \"1h1ms\" is out of range: must be between 0s and 1h"
        );
        assert_eq!(
            d("99999h").unwrap_err().to_string(),
            "duration \"99999h\" is out of range: must be between 0s and 1h"
        );
        assert!(d("1d").unwrap_err().to_string().contains("GEP-2257"));
    }

    #[test]
    fn gateway_durations_print_in_canonical_form() {
        for (text, shown) in [
            ("0s", "0s"),
            ("3600s", "1h"),
            ("61s", "1m1s"),
            ("1500ms", "1s500ms"),
        ] {
            let d: UpToOneHour = text.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(d.to_string(), shown);
            assert_eq!(shown.parse::<UpToOneHour>(), Ok(d));
        }
    }
}
