//! Integers with a range that is part of their type: the sizes, counts and ports of resources.
//!
//! A field declared as, say, `BoundedU32<1, 262_143>` cannot hold anything else, and a YAML
//! value outside the range is refused while the document is read, so the error names file,
//! line and field. The ranges of every field are listed in `docs/resources.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A number outside the range of the field it was given for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} is out of range: must be between {min} and {max}")]
pub struct OutOfRange {
    /// The number as written.
    pub value: i128,
    /// The smallest accepted value.
    pub min: u64,
    /// The largest accepted value.
    pub max: u64,
}

macro_rules! bounded_int {
    ($(#[$doc:meta])* $name:ident, $int:ty, $into:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = $into)]
        pub struct $name<const MIN: $int, const MAX: $int>($int);

        impl<const MIN: $int, const MAX: $int> $name<MIN, MAX> {
            /// The smallest accepted value.
            pub const MIN: $int = MIN;
            /// The largest accepted value.
            pub const MAX: $int = MAX;

            /// The value, `MIN..=MAX`.
            pub fn get(self) -> $int {
                self.0
            }
        }

        impl<const MIN: $int, const MAX: $int> TryFrom<i128> for $name<MIN, MAX> {
            type Error = OutOfRange;
            fn try_from(value: i128) -> Result<Self, OutOfRange> {
                let inside = <$int>::try_from(value)
                    .ok()
                    .filter(|v| (MIN..=MAX).contains(v));
                inside.map($name).ok_or(OutOfRange {
                    value,
                    min: u64::from(MIN),
                    max: u64::from(MAX),
                })
            }
        }

        impl<const MIN: $int, const MAX: $int> TryFrom<i64> for $name<MIN, MAX> {
            type Error = OutOfRange;
            fn try_from(value: i64) -> Result<Self, OutOfRange> {
                Self::try_from(i128::from(value))
            }
        }

        impl<const MIN: $int, const MAX: $int> From<$name<MIN, MAX>> for $int {
            fn from(v: $name<MIN, MAX>) -> $int {
                v.0
            }
        }

        impl<const MIN: $int, const MAX: $int> fmt::Display for $name<MIN, MAX> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

bounded_int!(
    /// A `u16` in `MIN..=MAX`, e.g. a port.
    BoundedU16,
    u16,
    "u16"
);
bounded_int!(
    /// A `u32` in `MIN..=MAX`, e.g. a connection limit.
    BoundedU32,
    u32,
    "u32"
);
bounded_int!(
    /// A `u64` in `MIN..=MAX`, e.g. a number of seconds.
    BoundedU64,
    u64,
    "u64"
);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Percent = BoundedU32<1, 100>;

    #[test]
    fn both_ends_are_inclusive() {
        assert_eq!(Percent::try_from(1i64).map(Percent::get), Ok(1));
        assert_eq!(Percent::try_from(100i64).map(Percent::get), Ok(100));
        for outside in [0i64, 101, -1, i64::MIN, i64::MAX, 1 << 32] {
            let err = Percent::try_from(outside).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{outside} is out of range: must be between 1 and 100")
            );
        }
    }

    #[test]
    fn serde_goes_through_the_range_check() {
        assert_eq!(serde_json::from_str::<Percent>("42").unwrap().get(), 42);
        assert_eq!(
            serde_json::to_string(&Percent::try_from(42i64).unwrap()).unwrap(),
            "42"
        );
        let err = serde_json::from_str::<Percent>("4294967296").unwrap_err();
        assert!(
            err.to_string().contains("4294967296 is out of range"),
            "{err}"
        );
        assert!(serde_json::from_str::<Percent>("1.5").is_err());
        assert!(serde_json::from_str::<Percent>("\"5\"").is_err());
    }
}
