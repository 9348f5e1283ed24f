//! Trace and span ids: 16 and 8 bytes, never all zeros (W3C `trace-id`/`parent-id`, B3
//! `TraceId`/`SpanId`), written as lower-case hex on the wire.

use std::fmt;
use std::num::{NonZeroU64, NonZeroU128};
use std::str::FromStr;

use rand::Rng;

use super::TraceContextError;

/// A trace's id: 16 bytes, not all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(NonZeroU128);

/// A span's id: 8 bytes, not all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZeroU64);

impl TraceId {
    /// A uniformly random id from the thread-local RNG (rand's `ThreadRng`: seeded from
    /// the OS, no syscall per id). All 16 bytes are random, so W3C's `random-trace-id`
    /// flag holds.
    pub fn random() -> Self {
        Self::random_with(&mut rand::rng())
    }

    /// A uniformly random id from `rng` (redrawn on the 2^-128 chance of all zeros).
    pub fn random_with(rng: &mut impl Rng) -> Self {
        loop {
            if let Some(id) = NonZeroU128::new(rng.random()) {
                return Self(id);
            }
        }
    }

    /// The id with these bytes, or `None` for all zeros.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        NonZeroU128::new(u128::from_be_bytes(bytes)).map(Self)
    }

    /// The id's 16 bytes, most significant first (as written in hex).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.get().to_be_bytes()
    }

    /// The id as one number (the bytes read big-endian).
    pub fn to_u128(self) -> u128 {
        self.0.get()
    }

    /// True when the upper 8 bytes are zero: a 64-bit B3 trace id, written in 16 digits.
    pub fn is_64_bit(self) -> bool {
        self.0.get() >> 64 == 0
    }

    /// Parses exactly 32 lower-case hex digits (W3C).
    pub(super) fn parse_hex32(hex: &[u8]) -> Result<Self, IdRule> {
        if hex.len() != 32 {
            return Err(IdRule::Digits);
        }
        Self::from_u128(lower_hex(hex).ok_or(IdRule::Digits)?)
    }

    /// Parses 16 or 32 lower-case hex digits (B3's 64- or 128-bit trace ids).
    pub(super) fn parse_b3_hex(hex: &[u8]) -> Result<Self, IdRule> {
        if hex.len() != 16 && hex.len() != 32 {
            return Err(IdRule::Digits);
        }
        Self::from_u128(lower_hex(hex).ok_or(IdRule::Digits)?)
    }

    fn from_u128(value: u128) -> Result<Self, IdRule> {
        NonZeroU128::new(value).map(Self).ok_or(IdRule::Zero)
    }
}

impl SpanId {
    /// A uniformly random id from the thread-local RNG.
    pub fn random() -> Self {
        Self::random_with(&mut rand::rng())
    }

    /// A uniformly random id from `rng` (redrawn on the 2^-64 chance of all zeros).
    pub fn random_with(rng: &mut impl Rng) -> Self {
        loop {
            if let Some(id) = NonZeroU64::new(rng.random()) {
                return Self(id);
            }
        }
    }

    /// The id with these bytes, or `None` for all zeros.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        NonZeroU64::new(u64::from_be_bytes(bytes)).map(Self)
    }

    /// The id's 8 bytes, most significant first (as written in hex).
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.get().to_be_bytes()
    }

    /// Parses exactly 16 lower-case hex digits.
    pub(super) fn parse_hex16(hex: &[u8]) -> Result<Self, IdRule> {
        if hex.len() != 16 {
            return Err(IdRule::Digits);
        }
        let value = lower_hex(hex).ok_or(IdRule::Digits)?;
        let value = u64::try_from(value).map_err(|_| IdRule::Digits)?;
        NonZeroU64::new(value).map(Self).ok_or(IdRule::Zero)
    }
}

/// Which rule an id broke; the header parsers add the header and field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdRule {
    /// Not the required number of lower-case hex digits.
    Digits,
    /// All zeros.
    Zero,
}

impl IdRule {
    /// The error for `field` of `header`, saying how many digits it needs.
    pub(super) fn at(
        self,
        header: &'static str,
        field: &'static str,
        digits: &'static str,
    ) -> TraceContextError {
        let rule = match self {
            IdRule::Digits => digits,
            IdRule::Zero => "must not be all zeros",
        };
        TraceContextError::Field {
            header,
            field,
            rule,
        }
    }
}

/// The value of up to 32 lower-case hex digits; `None` for any other byte (upper-case
/// included: both W3C and B3 allow lower case only).
pub(super) fn lower_hex(hex: &[u8]) -> Option<u128> {
    if hex.is_empty() || hex.len() > 32 {
        return None;
    }
    hex.iter().try_fold(0u128, |value, &byte| {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(digit))
    })
}

impl FromStr for TraceId {
    type Err = TraceContextError;

    /// Exactly 32 lower-case hex digits, not all zeros (W3C's `trace-id`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_hex32(s.as_bytes())
            .map_err(|rule| rule.at("trace id", "value", "must be 32 lower-case hex digits"))
    }
}

impl FromStr for SpanId {
    type Err = TraceContextError;

    /// Exactly 16 lower-case hex digits, not all zeros.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_hex16(s.as_bytes())
            .map_err(|rule| rule.at("span id", "value", "must be 16 lower-case hex digits"))
    }
}

/// A log field: a request's trace id, or `-` when it has none (tracing off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceIdField(pub Option<TraceId>);

impl TraceIdField {
    /// No trace id (printed as `-`).
    pub const NONE: Self = TraceIdField(None);
}

impl fmt::Display for TraceIdField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => fmt::Display::fmt(&id, f),
            None => f.write_str("-"),
        }
    }
}

impl fmt::Display for TraceId {
    /// 32 lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0.get())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    /// 16 lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0.get())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_32_lower_hex_digits_not_all_zeros() {
        let id: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(id.to_bytes()[0], 0x4b);
        for bad in [
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47366",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "",
        ] {
            assert_eq!(
                bad.parse::<TraceId>(),
                Err(TraceContextError::Field {
                    header: "trace id",
                    field: "value",
                    rule: "must be 32 lower-case hex digits"
                }),
                "{bad}"
            );
        }
        assert!(matches!(
            "00000000000000000000000000000000".parse::<TraceId>(),
            Err(TraceContextError::Field {
                rule: "must not be all zeros",
                ..
            })
        ));
    }

    #[test]
    fn span_ids_are_16_lower_hex_digits_not_all_zeros() {
        let id: SpanId = "00f067aa0ba902b7".parse().unwrap();
        assert_eq!(id.to_string(), "00f067aa0ba902b7");
        assert_eq!(SpanId::from_bytes(id.to_bytes()), Some(id));
        assert!("00F067AA0BA902B7".parse::<SpanId>().is_err());
        assert!("00f067aa0ba902b".parse::<SpanId>().is_err());
        assert!("+0f067aa0ba902b7".parse::<SpanId>().is_err());
        assert!("0000000000000000".parse::<SpanId>().is_err());
        assert_eq!(SpanId::from_bytes([0; 8]), None);
        assert_eq!(TraceId::from_bytes([0; 16]), None);
    }

    #[test]
    fn b3_trace_ids_are_64_or_128_bit() {
        let short = TraceId::parse_b3_hex(b"463ac35c9f6413ad").unwrap();
        assert!(short.is_64_bit());
        assert_eq!(short.to_string(), "0000000000000000463ac35c9f6413ad");
        let long = TraceId::parse_b3_hex(b"463ac35c9f6413ad48485a3953bb6124").unwrap();
        assert!(!long.is_64_bit());
        assert_eq!(
            TraceId::parse_b3_hex(b"463ac35c9f6413ad4"),
            Err(IdRule::Digits)
        );
        assert_eq!(
            TraceId::parse_b3_hex(b"0000000000000000"),
            Err(IdRule::Zero)
        );
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(TraceId::random(), TraceId::random());
        assert_ne!(SpanId::random(), SpanId::random());
    }
}
