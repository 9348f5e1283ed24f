//! IP networks in CIDR notation, for the explicit `cidr` egress rules.
//!
//! `10.0.0.0/8` or `2001:db8::/32`. The address must be the network address (host bits
//! zero): `10.0.0.1/8` is refused rather than silently widened, because it usually means the
//! author thought of one host. IPv4-mapped IPv6 addresses are matched as IPv4.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use thiserror::Error;

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    /// No `/len` part.
    #[error("{0:?} has no prefix length; write e.g. 10.0.0.0/8 (or /32 for one host)")]
    MissingPrefixLength(String),
    /// The address part is not an IP address.
    #[error("{0:?} is not an IP address")]
    InvalidAddress(String),
    /// The length is not a number in range.
    #[error("prefix length {found:?} is not a number from 0 to {max}")]
    InvalidPrefixLength {
        /// What was written.
        found: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// The address has bits set beyond the prefix.
    #[error("{written} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// What was written.
        written: String,
        /// The network it would cover.
        network: String,
    },
}

/// An IP network: address with zero host bits, plus prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    len: u8,
}

impl Cidr {
    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies inside the network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip.to_bits(), self.len) == net.to_bits(),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip.to_bits(), self.len) == net.to_bits(),
            _ => false,
        }
    }
}

/// `bits` with everything after the first `len` bits cleared.
pub(crate) fn mask_v4(bits: u32, len: u8) -> u32 {
    bits & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// `bits` with everything after the first `len` bits cleared.
pub(crate) fn mask_v6(bits: u128, len: u8) -> u128 {
    bits & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingPrefixLength(s.to_owned()))?;
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::InvalidAddress(addr.to_owned()))?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|&l| l <= max && !len.starts_with('+'))
            .ok_or_else(|| CidrError::InvalidPrefixLength {
                found: len.to_owned(),
                max,
            })?;
        let network = match ip {
            IpAddr::V4(v4) => IpAddr::V4(mask_v4(v4.to_bits(), len).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask_v6(v6.to_bits(), len).into()),
        };
        if network != ip {
            return Err(CidrError::HostBitsSet {
                written: s.to_owned(),
                network: Cidr { network, len }.to_string(),
            });
        }
        Ok(Cidr { network, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn contains() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.255.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(cidr("192.0.2.7/32").contains(ip("192.0.2.7")));
        assert!(!cidr("192.0.2.7/32").contains(ip("192.0.2.8")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:1::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::MissingPrefixLength(_))
        ));
        assert!(matches!(
            "x/8".parse::<Cidr>(),
            Err(CidrError::InvalidAddress(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::InvalidPrefixLength { max: 32, .. })
        ));
        assert!(matches!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(CidrError::InvalidPrefixLength { .. })
        ));
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBitsSet {
                written: "10.0.0.1/8".into(),
                network: "10.0.0.0/8".into()
            })
        );
    }
}
