//! `Mesh` `spec.pods`: the addresses of pod mode (issue 10), where each workload replica runs
//! in a network namespace of its own.
//!
//! `network` is split into /24 "slots": each `meshwork up` takes one (a bridge with the
//! slot's `.1`, pods from `.2`). `virtualAddresses` is where a pod's resolver takes the
//! addresses it answers names with; a sidecar maps them back to the names. Both are IPv4
//! CIDRs (pods have IPv6 disabled) parsed as [`policy::Cidr`]: a bad one is refused while
//! the document is read, naming file, line and field. The defaults sit in 198.18.0.0/15,
//! the block reserved for network testing (RFC 2544), so they collide with no real network.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use policy::Cidr;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// `spec.pods` of a `Mesh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodsSpec {
    /// The pod network, split into /24 slots (one per running `meshwork up`); a prefix of
    /// /8 to /24. Default `198.18.0.0/16`.
    #[serde(default = "PodNetwork::default_network")]
    pub network: PodNetwork,
    /// The addresses pod resolvers answer names with; a prefix of /8 to /28, not
    /// overlapping `network`. Default `198.19.0.0/16`.
    #[serde(default = "VirtualAddresses::default_range")]
    pub virtual_addresses: VirtualAddresses,
}

impl Default for PodsSpec {
    fn default() -> Self {
        PodsSpec {
            network: PodNetwork::default_network(),
            virtual_addresses: VirtualAddresses::default_range(),
        }
    }
}

impl PodsSpec {
    /// Whether the two ranges share an address (the loader refuses it).
    pub fn overlap(&self) -> bool {
        let (a, b) = (self.network.cidr(), self.virtual_addresses.cidr());
        a.contains(b.network()) || b.contains(a.network())
    }
}

/// `spec.pods.network`: an IPv4 CIDR of prefix /8 to /24.
pub type PodNetwork = Ipv4Cidr<8, 24>;
/// `spec.pods.virtualAddresses`: an IPv4 CIDR of prefix /8 to /28.
pub type VirtualAddresses = Ipv4Cidr<8, 28>;

impl PodNetwork {
    /// `198.18.0.0/16`.
    pub fn default_network() -> PodNetwork {
        Ipv4Cidr::new(Ipv4Addr::new(198, 18, 0, 0), 16)
    }
}

impl VirtualAddresses {
    /// `198.19.0.0/16`.
    pub fn default_range() -> VirtualAddresses {
        Ipv4Cidr::new(Ipv4Addr::new(198, 19, 0, 0), 16)
    }
}

/// An IPv4 network whose prefix length is `MIN..=MAX`, with host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr<const MIN: u8, const MAX: u8> {
    network: Ipv4Addr,
    len: u8,
}

/// Why text is not a pod range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodCidrError {
    /// Not a CIDR at all.
    #[error(transparent)]
    Cidr(#[from] policy::CidrError),
    /// An IPv6 network: pods have IPv6 disabled.
    #[error("{0} is an IPv6 network; pods use IPv4 only (e.g. 198.18.0.0/16)")]
    Ipv6(String),
    /// A prefix outside the field's range.
    #[error("{text}: the prefix length must be between /{min} and /{max}")]
    Prefix {
        /// What was written.
        text: String,
        /// Shortest prefix accepted.
        min: u8,
        /// Longest prefix accepted.
        max: u8,
    },
}

impl<const MIN: u8, const MAX: u8> Ipv4Cidr<MIN, MAX> {
    /// invariant: callers give a network address and a length in `MIN..=MAX`.
    const fn new(network: Ipv4Addr, len: u8) -> Self {
        Ipv4Cidr { network, len }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// As a [`Cidr`].
    pub fn cidr(&self) -> Cidr {
        // invariant: parsed from a valid Cidr or built from constants that are one.
        format!("{self}")
            .parse()
            .unwrap_or_else(|_| unreachable!("an Ipv4Cidr is a valid Cidr"))
    }
}

impl<const MIN: u8, const MAX: u8> std::str::FromStr for Ipv4Cidr<MIN, MAX> {
    type Err = PodCidrError;
    fn from_str(s: &str) -> Result<Self, PodCidrError> {
        let cidr: Cidr = s.parse()?;
        let IpAddr::V4(network) = cidr.network() else {
            return Err(PodCidrError::Ipv6(s.to_owned()));
        };
        let len = cidr.prefix_len();
        if !(MIN..=MAX).contains(&len) {
            return Err(PodCidrError::Prefix {
                text: s.to_owned(),
                min: MIN,
                max: MAX,
            });
        }
        Ok(Ipv4Cidr { network, len })
    }
}

impl<const MIN: u8, const MAX: u8> TryFrom<String> for Ipv4Cidr<MIN, MAX> {
    type Error = PodCidrError;
    fn try_from(s: String) -> Result<Self, PodCidrError> {
        s.parse()
    }
}

impl<const MIN: u8, const MAX: u8> From<Ipv4Cidr<MIN, MAX>> for String {
    fn from(c: Ipv4Cidr<MIN, MAX>) -> String {
        c.to_string()
    }
}

impl<const MIN: u8, const MAX: u8> fmt::Display for Ipv4Cidr<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// An IPv4 CIDR (the prefix range and host bits only the loader checks).
pub const IPV4_CIDR_PATTERN: &str = "^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$";

impl<const MIN: u8, const MAX: u8> JsonSchema for Ipv4Cidr<MIN, MAX> {
    fn schema_name() -> Cow<'static, str> {
        format!("Ipv4Cidr_{MIN}_{MAX}").into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "maxLength": 18, "pattern": IPV4_CIDR_PATTERN,
            "description": format!("An IPv4 network such as 198.18.0.0/16, prefix /{MIN} to /{MAX}.")})
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_with_their_bounds() {
        let net: PodNetwork = "10.20.0.0/16".parse().unwrap();
        assert_eq!(
            (net.network(), net.prefix_len()),
            ([10, 20, 0, 0].into(), 16)
        );
        assert!(matches!(
            "10.20.0.0/25".parse::<PodNetwork>(),
            Err(PodCidrError::Prefix {
                min: 8,
                max: 24,
                ..
            })
        ));
        assert!(matches!(
            "fd00::/64".parse::<PodNetwork>(),
            Err(PodCidrError::Ipv6(_))
        ));
        assert!(matches!(
            "10.20.0.1/16".parse::<PodNetwork>(),
            Err(PodCidrError::Cidr(_))
        ));
        assert_eq!(PodsSpec::default().network.to_string(), "198.18.0.0/16");
        assert_eq!(
            PodsSpec::default().virtual_addresses.to_string(),
            "198.19.0.0/16"
        );
        assert!(!PodsSpec::default().overlap());
    }
}
