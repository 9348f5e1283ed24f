//! Pod mode's part of the configuration: which network namespace, the pod's address, the
//! range virtual addresses are handed out from, and the ports whose traffic is never sniffed.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;

use policy::Cidr;

/// The sidecar of a workload that runs in its own network namespace (a "pod").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConfig {
    /// The pod's network namespace (`/run/netns/<name>`).
    pub netns: PathBuf,
    /// The pod's address (its `eth0`): the mTLS listener binds there.
    pub ip: Ipv4Addr,
    /// Where the pod's resolver hands out one address per name.
    pub virtual_addresses: VirtualCidr,
    /// Destination ports whose connections are opaque TCP without detection: protocols
    /// where the server speaks first (SMTP, MySQL) would stall detection.
    pub opaque_ports: OpaquePorts,
    /// This workload's binding root (`<state>/bindings/<workload>`): connections to a
    /// claimed service's name are admitted by a binding there (`outbound::claim_binding`);
    /// `None`: every such connection is refused.
    pub claim_bindings: Option<PathBuf>,
    /// The network namespace of the simulated host the pod is on (`meshwork up --hosts`):
    /// connections to peer sidecars are opened there, so they leave from that host and cross
    /// to the peer's; loopback peers (`hostNetwork` workloads) are still dialed from the
    /// sidecar's own namespace. `None`: every peer is dialed from the sidecar's namespace.
    pub host_netns: Option<PathBuf>,
}

impl PodConfig {
    /// The pod at `netns` with address `ip`, default virtual addresses and opaque ports.
    pub fn new(netns: impl Into<PathBuf>, ip: Ipv4Addr) -> Self {
        PodConfig {
            netns: netns.into(),
            ip,
            virtual_addresses: VirtualCidr::default(),
            opaque_ports: OpaquePorts::default(),
            claim_bindings: None,
            host_netns: None,
        }
    }
}

/// An IPv4 network of at least 4 addresses (`/30` or wider), for virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualCidr {
    network: Ipv4Addr,
    len: u8,
}

/// Why a virtual-address range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtualCidrError {
    /// Not CIDR notation.
    #[error(transparent)]
    Cidr(#[from] policy::CidrError),
    /// IPv6, or narrower than `/30`.
    #[error("{0} is not an IPv4 network of /30 or wider (pods are IPv4 only)")]
    Unusable(String),
}

impl VirtualCidr {
    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length (at most 30).
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// How many addresses the network holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        ip.to_bits() & mask == self.network.to_bits()
    }
}

impl Default for VirtualCidr {
    /// `198.19.0.0/16`: inside 198.18.0.0/15, reserved for network testing (RFC 2544),
    /// so it cannot collide with a real destination; the pods themselves use 198.18.0.0/16.
    fn default() -> Self {
        VirtualCidr {
            network: Ipv4Addr::new(198, 19, 0, 0),
            len: 16,
        }
    }
}

impl FromStr for VirtualCidr {
    type Err = VirtualCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cidr: Cidr = s.parse()?;
        match cidr.network() {
            IpAddr::V4(network) if cidr.prefix_len() <= 30 => Ok(VirtualCidr {
                network,
                len: cidr.prefix_len(),
            }),
            _ => Err(VirtualCidrError::Unusable(s.to_owned())),
        }
    }
}

impl fmt::Display for VirtualCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// Destination ports treated as opaque TCP without protocol detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaquePorts(BTreeSet<u16>);

impl OpaquePorts {
    /// Linkerd's default `opaquePorts`: SMTP (25, 587), MySQL (3306, and 4444 of Galera),
    /// PostgreSQL (5432), Redis (6379), Elasticsearch transport (9300), memcached (11211).
    pub const DEFAULT: [u16; 8] = [25, 587, 3306, 4444, 5432, 6379, 9300, 11211];

    /// Exactly `ports`.
    pub fn new(ports: impl IntoIterator<Item = u16>) -> Self {
        OpaquePorts(ports.into_iter().collect())
    }

    /// Whether `port` is opaque.
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }
}

impl Default for OpaquePorts {
    fn default() -> Self {
        OpaquePorts::new(OpaquePorts::DEFAULT)
    }
}

impl FromStr for OpaquePorts {
    type Err = std::num::ParseIntError;

    /// `25,587,3306` (empty: none).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<BTreeSet<u16>, _>>()
            .map(OpaquePorts)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn virtual_ranges_are_ipv4_and_wide_enough() {
        let cidr: VirtualCidr = "10.9.0.0/24".parse().unwrap();
        assert_eq!(cidr.size(), 256);
        assert!(cidr.contains(Ipv4Addr::new(10, 9, 0, 7)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 9, 1, 7)));
        assert!("10.9.0.0/31".parse::<VirtualCidr>().is_err());
        assert!("fd00::/64".parse::<VirtualCidr>().is_err());
        assert!("10.9.0.1/24".parse::<VirtualCidr>().is_err());
        assert_eq!(VirtualCidr::default().to_string(), "198.19.0.0/16");
    }

    #[test]
    fn opaque_ports_parse_from_a_list() {
        let ports: OpaquePorts = "5432, 6379,".parse().unwrap();
        assert!(ports.contains(5432) && ports.contains(6379) && !ports.contains(80));
        assert!("x".parse::<OpaquePorts>().is_err());
        assert!(OpaquePorts::default().contains(3306));
    }
}
