//! The nftables ruleset of one pod: capture of the app's TCP, inbound only through mTLS.
//!
//! Installed inside the pod's network namespace (`nft -f -` run there), so it sees only
//! the pod's traffic and goes away with the namespace. What it does, in order:
//! - **prerouting (nat)**: TCP arriving from outside the pod, to any port, is redirected to
//!   the sidecar's mTLS listener ([`INBOUND_PORT`]): the app's own port is reachable only
//!   through the sidecar;
//! - **output (nat)**: TCP the pod opens to anything but loopback is redirected to the
//!   capture listener ([`CAPTURE_PORT`], on `127.0.0.1`), which reads the original
//!   destination (`SO_ORIGINAL_DST`); DNS (UDP and TCP port 53) to anywhere goes to the
//!   sidecar's resolver ([`DNS_PORT`]). The sidecar's own connections leave from the
//!   host's namespace, so they never pass here: nothing needs exempting by uid or mark;
//!   the sockets it opens inside the pod go to loopback (the app), which is not redirected;
//! - **input/output (filter)**: default drop; loopback, established flows and the mTLS
//!   port are let through. Nothing else (other UDP, ICMP to the outside, IPv6) leaves or
//!   enters the pod.
//!
//! The app must run without `CAP_NET_ADMIN` (meshwork runs it as an unprivileged user),
//! or it could delete these rules.

/// The sidecar's capture listener, on `127.0.0.1` inside the pod.
pub const CAPTURE_PORT: u16 = 4140;
/// The sidecar's mTLS listener, on the pod's address.
pub const INBOUND_PORT: u16 = 4143;
/// The sidecar's DNS resolver (UDP and TCP), on `127.0.0.1` inside the pod.
pub const DNS_PORT: u16 = 53;

/// The name of the nftables table inside every pod.
pub const TABLE: &str = "meshwork";

/// The parameters of a pod's ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRules {
    /// Where the app's outbound TCP is redirected to (on `127.0.0.1`).
    pub capture_port: u16,
    /// Where inbound TCP is redirected to (the mTLS listener).
    pub inbound_port: u16,
    /// Where DNS is redirected to (on `127.0.0.1`).
    pub dns_port: u16,
}

impl Default for PodRules {
    fn default() -> Self {
        PodRules {
            capture_port: CAPTURE_PORT,
            inbound_port: INBOUND_PORT,
            dns_port: DNS_PORT,
        }
    }
}

impl PodRules {
    /// The ruleset, as `nft -f -` reads it. It replaces any table of the same name
    /// (`add` then `flush` then the chains), so applying it twice is harmless.
    pub fn ruleset(&self) -> String {
        let PodRules {
            capture_port,
            inbound_port,
            dns_port,
        } = *self;
        format!(
            "add table inet {TABLE}
flush table inet {TABLE}
table inet {TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname != \"lo\" meta l4proto tcp redirect to :{inbound_port}
  }}
  chain output_nat {{
    type nat hook output priority -100; policy accept;
    ip daddr 127.0.0.0/8 return
    meta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns_port}
    meta l4proto tcp redirect to :{capture_port}
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    iifname \"lo\" accept
    ct state established,related accept
    meta nfproto ipv4 tcp dport {inbound_port} accept
  }}
  chain output {{
    type filter hook output priority filter; policy drop;
    ip daddr 127.0.0.0/8 accept
    ct state established,related accept
  }}
}}
"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_names_the_ports_it_is_given() {
        let text = PodRules {
            capture_port: 1,
            inbound_port: 2,
            dns_port: 3,
        }
        .ruleset();
        assert!(text.contains("tcp redirect to :1\n"), "{text}");
        assert!(
            text.contains("iifname != \"lo\" meta l4proto tcp redirect to :2"),
            "{text}"
        );
        assert!(text.contains("th dport 53 redirect to :3"), "{text}");
        assert!(text.contains("tcp dport 2 accept"), "{text}");
        assert!(text.starts_with("add table inet meshwork\nflush table inet meshwork\n"));
    }
}
