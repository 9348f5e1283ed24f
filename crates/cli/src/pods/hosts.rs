//! Simulated hosts (`meshwork up --hosts a,b`): the names, addresses and commands of a
//! network of hosts on one machine, computed before anything is run.
//!
//! One slot of the pod network is the *fabric*: its bridge `mwbr<f>` in the root namespace,
//! `.1` on it. Host `k` is the named network namespace `mw<f>-host-<name>` with `eth0` at the
//! fabric's `.<k+2>`, joined to the fabric by a veth whose root-namespace end is named after
//! the host's own slot `s`, `mwbr<s>` — so that, as a pod slot's bridge does, it holds the
//! slot's name in the root namespace and no other `up` takes the slot. Inside the host: the
//! bridge `mwbr<s>` with the slot's `.1`, the host's pods on it (as [`super::plan`] makes
//! them, their host-side veths in the host's namespace), a route to every other host's slot
//! via that host's fabric address (from this host's `.1`, so packets between hosts carry pod
//! subnet addresses), and forwarding only between the pod bridge and `eth0`. The root
//! namespace routes to each host's pods via the host, as it reaches pods without hosts.
//! Nothing routes off the machine: hosts have no default route and the root namespace
//! forwards nothing into or out of the fabric.
//!
//! What lives inside a host's namespace (its bridge, its pods' veth ends, its ruleset) goes
//! with the namespace, as a pod's `eth0` goes with the pod: `pods.json` records the host
//! namespace and its link on the fabric.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::plan::{NETNS_DIR, Object, Slot, Step, nft, run};

/// The longest host name: `mw65535-host-<name>` stays a short file name.
pub const MAX_HOST_NAME: usize = 16;

/// Why a host name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    /// Empty, too long, or not `[a-z0-9-]` starting with a letter or digit.
    #[error(
        "host name {0:?}: use 1 to {MAX_HOST_NAME} of a-z, 0-9 and '-', starting with a letter \
         or digit"
    )]
    Invalid(String),
}

/// Checks a `--hosts` name.
pub fn check_name(name: &str) -> Result<(), HostNameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_HOST_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(())
        .ok_or_else(|| HostNameError::Invalid(name.to_owned()))
}

/// One simulated host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    /// Its name (`--hosts`).
    pub name: String,
    /// Its network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// Its address on the fabric (`eth0` in its namespace).
    pub fabric_ip: Ipv4Addr,
    /// The slot of its pods (bridge `mwbr<index>` inside the host).
    pub slot: Slot,
}

impl HostPlan {
    /// Host `k` (from 0) of the fabric `fabric`, named `name`, its pods in `slot`.
    pub fn new(fabric: &Slot, k: usize, name: &str, slot: Slot) -> HostPlan {
        HostPlan {
            name: name.to_owned(),
            netns: netns(fabric, name),
            fabric_ip: fabric.pod_ip(k),
            slot,
        }
    }

    /// Its end of the fabric in the root namespace (named after its slot).
    pub fn link(&self) -> String {
        self.slot.bridge()
    }

    /// Its namespace's path (`meshwork proxy --pod-host-netns`).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.netns)
    }
}

/// The namespace of host `name` on `fabric`.
pub fn netns(fabric: &Slot, name: &str) -> String {
    format!("mw{}-host-{name}", fabric.index)
}

/// `nft -f -` with `ruleset`, inside `netns` if given.
fn nft_in(netns: Option<&str>, ruleset: String) -> Step {
    match netns {
        Some(ns) => nft(None, &["ip", "netns", "exec", ns], ruleset),
        None => nft(None, &[], ruleset),
    }
}

/// The fabric once its bridge exists: its address, up, and the root table that lets frames
/// between hosts across the bridge (seen by the forward hook where `br_netfilter` is loaded)
/// and drops anything routed into or out of it.
pub fn fabric_steps(fabric: &Slot) -> Vec<Step> {
    let bridge = fabric.bridge();
    let address = format!("{}/24", fabric.gateway());
    let table = fabric.host_table();
    let ruleset = format!(
        "table inet {table} {{\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    iifname \"{bridge}\" oifname \"{bridge}\" accept\n    iifname \"{bridge}\" drop\n    oifname \"{bridge}\" drop\n  }}\n}}\n"
    );
    let mut table_step = nft_in(None, ruleset);
    table_step.creates = Some(Object::HostTable(table));
    vec![
        run(None, &["ip", "addr", "add", &address, "dev", &bridge]),
        run(None, &["ip", "link", "set", &bridge, "up"]),
        table_step,
    ]
}

/// A host's namespace, before its slot is claimed: created, IPv6 off.
pub fn netns_steps(netns: &str) -> Vec<Step> {
    vec![
        run(
            Some(Object::Netns(netns.to_owned())),
            &["ip", "netns", "add", netns],
        ),
        run(
            None,
            &[
                "ip",
                "netns",
                "exec",
                netns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        ),
    ]
}

/// The command that claims `slot` for the host in `netns`: its veth on the fabric, named
/// `mwbr<slot>` in the root namespace (EEXIST: the slot is another `up`'s), `eth0` inside.
pub fn claim_argv(slot: &Slot, netns: &str) -> Vec<String> {
    let link = slot.bridge();
    [
        "ip", "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", netns,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The host's ruleset: forwarding only between its pod bridge and the fabric.
pub fn host_ruleset(host: &HostPlan) -> String {
    let bridge = host.slot.bridge();
    format!(
        "table inet meshwork_host {{\n  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    iifname \"{bridge}\" oifname \"eth0\" accept\n    iifname \"eth0\" oifname \"{bridge}\" accept\n  }}\n}}\n"
    )
}

/// A host once its slot is claimed: its ruleset, then forwarding on, its link on the fabric
/// up, `eth0`'s address, and its pod bridge.
pub fn host_steps(fabric: &Slot, host: &HostPlan) -> Vec<Step> {
    let ns = host.netns.as_str();
    let link = host.link();
    let eth0 = format!("{}/24", host.fabric_ip);
    let bridge = host.slot.bridge();
    let gateway = format!("{}/24", host.slot.gateway());
    vec![
        nft_in(Some(ns), host_ruleset(host)),
        run(
            None,
            &[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ],
        ),
        run(
            None,
            &["ip", "link", "set", &link, "master", &fabric.bridge(), "up"],
        ),
        run(None, &["ip", "-n", ns, "addr", "add", &eth0, "dev", "eth0"]),
        run(None, &["ip", "-n", ns, "link", "set", "lo", "up"]),
        run(None, &["ip", "-n", ns, "link", "set", "eth0", "up"]),
        run(
            None,
            &["ip", "-n", ns, "link", "add", &bridge, "type", "bridge"],
        ),
        run(
            None,
            &["ip", "-n", ns, "addr", "add", &gateway, "dev", &bridge],
        ),
        run(None, &["ip", "-n", ns, "link", "set", &bridge, "up"]),
    ]
}

/// In every host, a route to every other host's pods via that host's fabric address, from
/// this host's pod bridge address; and in the root namespace a route to each host's pods
/// via the host, so that the machine reaches pods as it does without hosts (and a packet
/// for a pod never takes the machine's default route). Each route goes with its link.
pub fn route_steps(hosts: &[HostPlan]) -> Vec<Step> {
    let mut steps = Vec::new();
    for host in hosts {
        let to = format!("{}/24", host.slot.base);
        let via = host.fabric_ip.to_string();
        steps.push(run(None, &["ip", "route", "add", &to, "via", &via]));
    }
    for host in hosts {
        let src = host.slot.gateway().to_string();
        for other in hosts.iter().filter(|h| h.name != host.name) {
            let to = format!("{}/24", other.slot.base);
            let via = other.fabric_ip.to_string();
            let argv = [
                "ip",
                "-n",
                &host.netns,
                "route",
                "add",
                &to,
                "via",
                &via,
                "src",
                &src,
            ];
            steps.push(run(None, &argv));
        }
    }
    steps
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pods::plan::Action;

    fn line(step: &Step) -> String {
        match &step.action {
            Action::Run { argv, .. } => argv.join(" "),
            Action::WriteEtc(dir) => format!("write {}", dir.display()),
        }
    }

    fn two_hosts() -> (Slot, Vec<HostPlan>) {
        let net = "198.18.0.0/16".parse().unwrap();
        let fabric = Slot::of(&net, 4).unwrap();
        let a = HostPlan::new(&fabric, 0, "a", Slot::of(&net, 5).unwrap());
        let b = HostPlan::new(&fabric, 1, "b", Slot::of(&net, 7).unwrap());
        (fabric, vec![a, b])
    }

    #[test]
    fn hosts_are_named_and_addressed_from_the_fabric_and_their_slot() {
        let (_, hosts) = two_hosts();
        let b = &hosts[1];
        assert_eq!(b.netns, "mw4-host-b");
        assert_eq!(b.fabric_ip, Ipv4Addr::new(198, 18, 4, 3));
        assert_eq!(b.link(), "mwbr7");
        assert_eq!(b.netns_path(), PathBuf::from("/run/netns/mw4-host-b"));
        assert_eq!(hosts[0].fabric_ip, Ipv4Addr::new(198, 18, 4, 2));
        for good in ["a", "host-1", "0b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "abcdefghijklmnopq"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_fabric_forwards_between_hosts_and_nowhere_else() {
        let (fabric, _) = two_hosts();
        let steps = fabric_steps(&fabric);
        assert_eq!(line(&steps[0]), "ip addr add 198.18.4.1/24 dev mwbr4");
        let Action::Run {
            stdin: Some(rules), ..
        } = &steps[2].action
        else {
            panic!("{steps:?}");
        };
        let accept = rules
            .find("iifname \"mwbr4\" oifname \"mwbr4\" accept")
            .unwrap();
        let drop = rules.find("iifname \"mwbr4\" drop").unwrap();
        assert!(accept < drop, "{rules}");
        assert!(rules.contains("oifname \"mwbr4\" drop"), "{rules}");
        assert_eq!(
            steps[2].creates,
            Some(Object::HostTable("meshwork_4".into()))
        );
    }

    #[test]
    fn a_host_forwards_only_between_its_pods_and_the_fabric_once_its_rules_are_in() {
        let (fabric, hosts) = two_hosts();
        let b = &hosts[1];
        let steps: Vec<String> = host_steps(&fabric, b).iter().map(line).collect();
        let at = |needle: &str| {
            steps
                .iter()
                .position(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("no step {needle:?} in {steps:#?}"))
        };
        let rules = at("ip netns exec mw4-host-b nft -f -");
        assert!(rules < at("net.ipv4.ip_forward=1"), "{steps:#?}");
        assert!(
            rules < at("ip link set mwbr7 master mwbr4 up"),
            "{steps:#?}"
        );
        assert!(
            rules < at("ip -n mw4-host-b link set eth0 up"),
            "{steps:#?}"
        );
        at("ip -n mw4-host-b addr add 198.18.4.3/24 dev eth0");
        at("ip -n mw4-host-b link add mwbr7 type bridge");
        at("ip -n mw4-host-b addr add 198.18.7.1/24 dev mwbr7");
        let ruleset = host_ruleset(b);
        assert!(ruleset.contains("policy drop"), "{ruleset}");
        assert!(
            ruleset.contains("iifname \"mwbr7\" oifname \"eth0\" accept"),
            "{ruleset}"
        );
        assert!(
            ruleset.contains("iifname \"eth0\" oifname \"mwbr7\" accept"),
            "{ruleset}"
        );
        // Nothing in a host's steps leaves anything the host's namespace does not hold.
        assert!(host_steps(&fabric, b).iter().all(|s| s.creates.is_none()));
        let made: Vec<_> = netns_steps("mw4-host-b")
            .into_iter()
            .filter_map(|s| s.creates)
            .collect();
        assert_eq!(made, [Object::Netns("mw4-host-b".into())]);
        assert_eq!(
            claim_argv(&b.slot, &b.netns).join(" "),
            "ip link add mwbr7 type veth peer name eth0 netns mw4-host-b"
        );
    }

    #[test]
    fn each_host_routes_to_the_others_pods_via_their_fabric_address() {
        let (_, hosts) = two_hosts();
        let routes: Vec<String> = route_steps(&hosts).iter().map(line).collect();
        assert_eq!(
            routes,
            [
                "ip route add 198.18.5.0/24 via 198.18.4.2",
                "ip route add 198.18.7.0/24 via 198.18.4.3",
                "ip -n mw4-host-a route add 198.18.7.0/24 via 198.18.4.3 src 198.18.5.1",
                "ip -n mw4-host-b route add 198.18.5.0/24 via 198.18.4.2 src 198.18.7.1",
            ]
        );
    }
}
