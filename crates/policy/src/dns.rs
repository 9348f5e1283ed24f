//! DNS names and name patterns for egress rules.
//!
//! - [`DnsName`]: a concrete host name as a client asked for it (`CONNECT api.stripe.com:443`).
//! - [`DnsPattern`]: what an `EgressPolicy` allows: exact `api.stripe.com`, or a leftmost
//!   wildcard `*.stripe.com`.
//! - [`Host`]: the destination of an egress request: a [`DnsName`] or an IP address.
//!
//! Rules (the same for names and patterns):
//! - ASCII is lower-cased and one trailing dot is stripped (`API.Stripe.com.` ≡ `api.stripe.com`).
//! - Labels are LDH (letters, digits, hyphen; no leading/trailing hyphen), 1–63 bytes; the
//!   whole name is at most 253 bytes. Underscores and non-ASCII (write IDNs as `xn--` A-labels)
//!   are refused.
//! - IP addresses are not names: `10.0.0.1`, `[::1]`, and anything whose last label is numeric
//!   (`127.1`, `0x7f.1` — which `inet_aton`-style resolvers would read as IPv4) are refused;
//!   IP destinations go through explicit `cidr` rules.
//! - A wildcard `*` is allowed only as the whole leftmost label and matches **exactly one**
//!   label, as in TLS certificates (RFC 6125 §6.4.3): `*.stripe.com` matches `api.stripe.com`
//!   but neither `stripe.com` nor `a.b.stripe.com`. The part after `*.` needs at least two
//!   labels, so `*.com` is refused.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest DNS name, in bytes, without the trailing dot (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label, in bytes.
const MAX_LABEL_LEN: usize = 63;

/// Why a DNS name or pattern was refused. Offsets are byte offsets into the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DnsError {
    /// Nothing to parse.
    #[error("empty DNS name")]
    Empty,
    /// More than 253 bytes.
    #[error("DNS name is {len} bytes long; at most 253 are allowed")]
    TooLong {
        /// Length in bytes (without the trailing dot).
        len: usize,
    },
    /// An empty label (`a..b`, leading dot).
    #[error("empty label at byte {offset}")]
    EmptyLabel {
        /// Where the empty label starts.
        offset: usize,
    },
    /// A label longer than 63 bytes.
    #[error("label at byte {offset} is {len} bytes long; at most 63 are allowed")]
    LabelTooLong {
        /// Where the label starts.
        offset: usize,
        /// Its length.
        len: usize,
    },
    /// A character outside letters, digits and `-`.
    #[error("invalid character {found:?} at byte {offset}: labels are letters, digits and '-'")]
    InvalidCharacter {
        /// Where.
        offset: usize,
        /// The character found.
        found: char,
    },
    /// A label starting or ending with `-`.
    #[error("label at byte {offset} starts or ends with '-'")]
    HyphenAtLabelEdge {
        /// Where the label starts.
        offset: usize,
    },
    /// An IP address, or a name whose last label is numeric and could be read as one.
    #[error(
        "{0:?} is an IP address (or reads like one); IP destinations need an explicit cidr rule"
    )]
    IpAddress(String),
    /// `*` anywhere but as the whole leftmost label, or in a plain name.
    #[error(
        "'*' at byte {offset} is only allowed as the whole leftmost label of a pattern, as in '*.stripe.com'"
    )]
    MisplacedWildcard {
        /// Where the `*` is.
        offset: usize,
    },
    /// `*.com`: a wildcard over a single-label parent.
    #[error("wildcard over {0:?} is too broad: the part after '*.' needs at least two labels")]
    WildcardTooBroad(String),
}

/// A validated, lower-cased DNS host name without trailing dot (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    /// The name, e.g. `api.stripe.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsName {
    type Err = DnsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = canonical(s)?;
        if let Some(offset) = name.find('*') {
            return Err(DnsError::MisplacedWildcard { offset });
        }
        check_labels(&name, 0)?;
        Ok(DnsName(name))
    }
}

impl TryFrom<&str> for DnsName {
    type Error = DnsError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An egress destination pattern: exact name or `*.` + name (exactly one leftmost label).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DnsPattern {
    /// Matches exactly this name.
    Exact(DnsName),
    /// `*.parent`: matches any name with exactly one more (leftmost) label than `parent`.
    Wildcard {
        /// The part after `*.`.
        parent: DnsName,
    },
}

impl DnsPattern {
    /// Whether `host` (any case, optional trailing dot) is matched. Invalid host names never
    /// match, so a malformed leftmost label cannot ride a wildcard.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            DnsPattern::Exact(name) => host.eq_ignore_ascii_case(name.as_str()),
            DnsPattern::Wildcard { parent } => host.split_once('.').is_some_and(|(label, rest)| {
                rest.eq_ignore_ascii_case(parent.as_str()) && check_label(label, 0).is_ok()
            }),
        }
    }

    /// Whether `name` is matched.
    pub fn matches_name(&self, name: &DnsName) -> bool {
        self.matches(name.as_str())
    }
}

impl FromStr for DnsPattern {
    type Err = DnsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = canonical(s)?;
        match name.strip_prefix("*.") {
            Some(parent) => {
                if let Some(i) = parent.find('*') {
                    return Err(DnsError::MisplacedWildcard { offset: i + 2 });
                }
                check_labels(parent, 2)?;
                if !parent.contains('.') {
                    return Err(DnsError::WildcardTooBroad(parent.to_owned()));
                }
                Ok(DnsPattern::Wildcard {
                    parent: DnsName(parent.to_owned()),
                })
            }
            None => name.parse().map(DnsPattern::Exact),
        }
    }
}

impl TryFrom<&str> for DnsPattern {
    type Error = DnsError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for DnsPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsPattern::Exact(name) => write!(f, "{name}"),
            DnsPattern::Wildcard { parent } => write!(f, "*.{parent}"),
        }
    }
}

impl Serialize for DnsPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DnsPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The destination host of an egress request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name; matched against `host` rules. The proxy resolves it itself.
    Dns(DnsName),
    /// An IP literal; matched only against `cidr` rules. IPv4-mapped IPv6 addresses are
    /// stored as IPv4 so that `::ffff:10.0.0.1` meets the rules for `10.0.0.1`.
    Ip(IpAddr),
}

impl FromStr for Host {
    type Err = DnsError;
    /// Parses the host part of `CONNECT host:port` or of an absolute-form URI: an IPv4
    /// literal, a bracketed or bare IPv6 literal, or a DNS name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unbracketed = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Host::Ip(ip.to_canonical()));
        }
        s.parse().map(Host::Dns)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => write!(f, "{name}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Lower-cases, strips one trailing dot, refuses empty/too long/IP inputs.
fn canonical(s: &str) -> Result<String, DnsError> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return Err(DnsError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(DnsError::TooLong { len: s.len() });
    }
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    let last_label = s.rsplit('.').next().unwrap_or(s);
    if unbracketed.parse::<IpAddr>().is_ok() || looks_numeric(last_label) {
        return Err(DnsError::IpAddress(s.to_owned()));
    }
    Ok(s.to_ascii_lowercase())
}

/// Decimal (`1`) or hex (`0x7f`) last labels are how `inet_aton` spells IPv4 parts.
fn looks_numeric(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Checks every label of a (lower-cased) name; `base` offsets error positions.
fn check_labels(name: &str, base: usize) -> Result<(), DnsError> {
    let mut offset = base;
    for label in name.split('.') {
        check_label(label, offset)?;
        offset += label.len() + 1;
    }
    Ok(())
}

fn check_label(label: &str, offset: usize) -> Result<(), DnsError> {
    if label.is_empty() {
        return Err(DnsError::EmptyLabel { offset });
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(DnsError::LabelTooLong {
            offset,
            len: label.len(),
        });
    }
    if let Some((i, c)) = label
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-'))
    {
        return Err(if c == '*' {
            DnsError::MisplacedWildcard { offset: offset + i }
        } else {
            DnsError::InvalidCharacter {
                offset: offset + i,
                found: c,
            }
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(DnsError::HyphenAtLabelEdge { offset });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> DnsPattern {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn exact_patterns_are_case_and_trailing_dot_insensitive() {
        let p = pattern("API.Stripe.com.");
        assert_eq!(p.to_string(), "api.stripe.com");
        for host in ["api.stripe.com", "API.STRIPE.COM", "api.stripe.com."] {
            assert!(p.matches(host), "{host}");
        }
        for host in [
            "stripe.com",
            "x.api.stripe.com",
            "api.stripe.com.evil",
            "api.stripe.co",
        ] {
            assert!(!p.matches(host), "{host}");
        }
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let p = pattern("*.stripe.com");
        assert_eq!(p.to_string(), "*.stripe.com");
        assert!(p.matches("api.stripe.com"));
        assert!(p.matches("FILES.stripe.com."));
        for host in [
            "stripe.com",
            "a.b.stripe.com",
            ".stripe.com",
            "a b.stripe.com",
            "-a.stripe.com",
            "evilstripe.com",
        ] {
            assert!(!p.matches(host), "{host}");
        }
    }

    #[test]
    fn refusals() {
        let cases = [
            ("", DnsError::Empty),
            (".", DnsError::Empty),
            ("a..b", DnsError::EmptyLabel { offset: 2 }),
            ("-a.com", DnsError::HyphenAtLabelEdge { offset: 0 }),
            (
                "a_b.com",
                DnsError::InvalidCharacter {
                    offset: 1,
                    found: '_',
                },
            ),
            ("api*.stripe.com", DnsError::MisplacedWildcard { offset: 3 }),
            ("api.*.com", DnsError::MisplacedWildcard { offset: 4 }),
            ("*.*.stripe.com", DnsError::MisplacedWildcard { offset: 2 }),
            ("*.com", DnsError::WildcardTooBroad("com".into())),
            ("10.0.0.1", DnsError::IpAddress("10.0.0.1".into())),
            ("[::1]", DnsError::IpAddress("[::1]".into())),
            ("::1", DnsError::IpAddress("::1".into())),
            ("127.1", DnsError::IpAddress("127.1".into())),
            ("evil.0x7f", DnsError::IpAddress("evil.0x7f".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(raw.parse::<DnsPattern>(), Err(want), "{raw:?}");
        }
        let long_label = "a".repeat(64);
        assert!(matches!(
            format!("{long_label}.com").parse::<DnsPattern>(),
            Err(DnsError::LabelTooLong { offset: 0, len: 64 })
        ));
        let long_name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63),
        ]
        .join(".");
        assert!(matches!(
            long_name.parse::<DnsPattern>(),
            Err(DnsError::TooLong { len: 255 })
        ));
        assert_eq!(
            "*.stripe.com".parse::<DnsName>(),
            Err(DnsError::MisplacedWildcard { offset: 0 })
        );
    }

    #[test]
    fn hosts_split_into_names_and_ips() {
        let host = |s: &str| s.parse::<Host>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(host("API.stripe.com").to_string(), "api.stripe.com");
        assert_eq!(host("10.1.2.3"), Host::Ip([10, 1, 2, 3].into()));
        assert_eq!(host("[::1]").to_string(), "[::1]");
        assert_eq!(host("::ffff:10.0.0.1"), Host::Ip([10, 0, 0, 1].into()));
        assert!("127.1".parse::<Host>().is_err());
        assert!("a b".parse::<Host>().is_err());
    }

    #[test]
    fn serde_round_trip() {
        let p: DnsPattern =
            serde_json::from_str("\"*.Stripe.com\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_string(&p).unwrap_or_default(),
            "\"*.stripe.com\""
        );
        assert!(serde_json::from_str::<DnsPattern>("\"1.2.3.4\"").is_err());
    }
}
