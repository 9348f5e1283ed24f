//! The names, addresses and commands of one `up`'s pods, computed before anything is run.
//!
//! A slot is one /24 of `Mesh` `spec.pods.network`: slot `n` is the bridge `mwbr<n>` (the
//! /24's `.1`) and the host table `inet meshwork_<n>`; pod `i` of the slot is the named
//! network namespace `mw<n>-<workload>-<replica>` with the address `.<i+2>`, joined to the
//! bridge by the veth pair `mw<n>p<i>` (host side) / `eth0` (pod side). Link names stay
//! within the kernel's 15 bytes for every slot a /8 has (`mw65535p252`).
//!
//! The steps of a pod are in an order that never lets traffic through unfiltered: IPv6 is
//! disabled and the pod's ruleset applied before its first link exists.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Where `ip netns exec` finds a namespace's own `/etc` files.
pub const ETC_NETNS_DIR: &str = "/etc/netns";
/// Pods of one slot: `.2` to `.254`.
pub const MAX_PODS: usize = 253;

/// One /24 of the pod network, taken by one `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Which /24 of the network, from 0.
    pub index: u32,
    /// The /24's network address.
    pub base: Ipv4Addr,
}

impl Slot {
    /// Slot `index` of `network` (None past the network's last /24).
    pub fn of(network: &api::mesh::pods::PodNetwork, index: u32) -> Option<Slot> {
        (index < slot_count(network)).then(|| Slot {
            index,
            base: Ipv4Addr::from_bits(network.network().to_bits() + (index << 8)),
        })
    }

    /// The bridge, in the host's namespace.
    pub fn bridge(&self) -> String {
        format!("mwbr{}", self.index)
    }

    /// The bridge's address, every pod's default route.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.base.to_bits() + 1)
    }

    /// The host's nftables table (family `inet`) that keeps pods off every other network.
    pub fn host_table(&self) -> String {
        format!("meshwork_{}", self.index)
    }

    /// The named namespace of `workload`'s replica.
    pub fn netns(&self, workload: &str, replica: u16) -> String {
        format!("mw{}-{workload}-{replica}", self.index)
    }

    /// The host side of pod `i`'s veth pair.
    pub fn host_veth(&self, i: usize) -> String {
        format!("mw{}p{i}", self.index)
    }

    /// Pod `i`'s address.
    pub fn pod_ip(&self, i: usize) -> Ipv4Addr {
        // invariant: i < MAX_PODS (checked by `pods::create`), so this stays inside the /24.
        Ipv4Addr::from_bits(self.base.to_bits() + 2 + i as u32)
    }
}

/// How many /24s `network` holds.
pub fn slot_count(network: &api::mesh::pods::PodNetwork) -> u32 {
    1 << (24 - u32::from(network.prefix_len()))
}

/// Something `up` creates in the kernel or on disk, as `pods.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Object {
    /// A bridge in the host namespace.
    Bridge(String),
    /// An nftables table (family `inet`) in the host namespace.
    HostTable(String),
    /// A named network namespace (`/run/netns/<name>`).
    Netns(String),
    /// The host side of a veth pair.
    HostVeth(String),
    /// A namespace's `/etc/netns/<name>` directory.
    EtcDir(PathBuf),
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Runs a command (`ip`, `nft`) with optional standard input.
    Run {
        /// argv.
        argv: Vec<String>,
        /// Written to its standard input.
        stdin: Option<String>,
    },
    /// Writes `resolv.conf` and `hosts` into an `/etc/netns/<ns>` directory.
    WriteEtc(PathBuf),
}

/// One step: what it creates (recorded before it runs) and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The object the step creates, if any.
    pub creates: Option<Object>,
    /// What it does.
    pub action: Action,
}

pub(super) fn run(creates: Option<Object>, argv: &[&str]) -> Step {
    Step {
        creates,
        action: Action::Run {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            stdin: None,
        },
    }
}

pub(super) fn nft(creates: Option<Object>, prefix: &[&str], ruleset: String) -> Step {
    let mut argv: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
    argv.extend(["nft".to_owned(), "-f".to_owned(), "-".to_owned()]);
    Step {
        creates,
        action: Action::Run {
            argv,
            stdin: Some(ruleset),
        },
    }
}

/// The host side of a slot once its bridge exists: its address, up, and the table that
/// drops anything forwarded into or out of it (pods are never routed off the machine).
pub fn slot_steps(slot: &Slot) -> Vec<Step> {
    let bridge = slot.bridge();
    let address = format!("{}/24", slot.gateway());
    let table = slot.host_table();
    let ruleset = format!(
        "table inet {table} {{\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    iifname \"{bridge}\" drop\n    oifname \"{bridge}\" drop\n  }}\n}}\n"
    );
    vec![
        run(None, &["ip", "addr", "add", &address, "dev", &bridge]),
        run(None, &["ip", "link", "set", &bridge, "up"]),
        nft(Some(Object::HostTable(table)), &[], ruleset),
    ]
}

/// A pod to create: who it runs and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// The workload's name.
    pub workload: String,
    /// Its replica.
    pub replica: u16,
    /// The namespace's name (`/run/netns/<netns>`).
    pub netns: String,
    /// The pod's address on the bridge.
    pub ip: Ipv4Addr,
    /// The host side of its veth pair.
    pub host_veth: String,
    /// The simulated host it is on (`up --hosts`); `None`: the machine's root namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl PodPlan {
    /// Pod `i` of `slot`, for `workload`'s `replica`.
    pub fn new(slot: &Slot, i: usize, workload: &str, replica: u16) -> PodPlan {
        PodPlan {
            workload: workload.to_owned(),
            replica,
            netns: slot.netns(workload, replica),
            ip: slot.pod_ip(i),
            host_veth: slot.host_veth(i),
            host: None,
        }
    }

    /// The same pod, on simulated host `host`.
    pub fn on_host(self, host: &str) -> PodPlan {
        PodPlan {
            host: Some(host.to_owned()),
            ..self
        }
    }

    /// The namespace's path, as `meshwork proxy --pod` takes it.
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }
}

/// Every step of one pod, in order: its `/etc`, the namespace, IPv6 off, the pod's
/// ruleset (`ruleset`), then the veth pair, addresses, links up and the default route.
/// With `host` (a simulated host's namespace, `hosts.rs`) the pod's bridge and the host
/// side of its veth are in that namespace, and the veth goes with it (not recorded).
pub fn pod_steps(slot: &Slot, pod: &PodPlan, ruleset: &str, host: Option<&str>) -> Vec<Step> {
    let ns = pod.netns.as_str();
    let veth = pod.host_veth.as_str();
    let bridge = slot.bridge();
    let in_host = |argv: &[&str]| -> Vec<String> {
        let prefix = host.map(|h| ["-n", h]);
        std::iter::once("ip")
            .chain(prefix.iter().flatten().copied())
            .chain(argv.iter().copied())
            .map(str::to_owned)
            .collect()
    };
    let veth_object = match host {
        None => Some(Object::HostVeth(veth.to_owned())),
        Some(_) => None,
    };
    let link = |creates, argv: &[&str]| Step {
        creates,
        action: Action::Run {
            argv: in_host(argv),
            stdin: None,
        },
    };
    let address = format!("{}/24", pod.ip);
    let gateway = slot.gateway().to_string();
    let etc = Path::new(ETC_NETNS_DIR).join(ns);
    vec![
        Step {
            creates: Some(Object::EtcDir(etc.clone())),
            action: Action::WriteEtc(etc),
        },
        run(
            Some(Object::Netns(ns.to_owned())),
            &["ip", "netns", "add", ns],
        ),
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
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        ),
        nft(None, &["ip", "netns", "exec", ns], ruleset.to_owned()),
        link(
            veth_object,
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        ),
        link(None, &["link", "set", veth, "master", &bridge, "up"]),
        run(
            None,
            &["ip", "-n", ns, "addr", "add", &address, "dev", "eth0"],
        ),
        run(None, &["ip", "-n", ns, "link", "set", "lo", "up"]),
        run(None, &["ip", "-n", ns, "link", "set", "eth0", "up"]),
        run(
            None,
            &["ip", "-n", ns, "route", "add", "default", "via", &gateway],
        ),
    ]
}

/// `/etc/netns/<ns>/resolv.conf`: the pod's resolver is its sidecar's, on loopback.
pub const RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions edns0\n";
/// `/etc/netns/<ns>/hosts`.
pub const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn argv(step: &Step) -> String {
        match &step.action {
            Action::Run { argv, .. } => argv.join(" "),
            Action::WriteEtc(dir) => format!("write {}", dir.display()),
        }
    }

    #[test]
    fn slots_are_named_and_addressed_by_their_index() {
        let net = "198.18.0.0/16".parse().unwrap();
        assert_eq!(slot_count(&net), 256);
        let slot = Slot::of(&net, 7).unwrap();
        assert_eq!(slot.bridge(), "mwbr7");
        assert_eq!(slot.gateway(), Ipv4Addr::new(198, 18, 7, 1));
        assert_eq!(slot.host_table(), "meshwork_7");
        assert_eq!(slot.netns("billing", 1), "mw7-billing-1");
        assert_eq!(slot.host_veth(3), "mw7p3");
        assert_eq!(slot.pod_ip(0), Ipv4Addr::new(198, 18, 7, 2));
        assert_eq!(slot.pod_ip(MAX_PODS - 1), Ipv4Addr::new(198, 18, 7, 254));
        assert!(Slot::of(&net, 256).is_none());
        let wide: api::mesh::pods::PodNetwork = "10.0.0.0/8".parse().unwrap();
        let last = Slot::of(&wide, slot_count(&wide) - 1).unwrap();
        assert_eq!(last.base, Ipv4Addr::new(10, 255, 255, 0));
        assert!(last.host_veth(MAX_PODS - 1).len() <= 15, "IFNAMSIZ");
        let one: api::mesh::pods::PodNetwork = "10.1.2.0/24".parse().unwrap();
        assert_eq!(slot_count(&one), 1);
    }

    #[test]
    fn the_ruleset_is_in_place_before_the_pod_has_a_link() {
        let slot = Slot::of(&"198.18.0.0/16".parse().unwrap(), 2).unwrap();
        let pod = PodPlan::new(&slot, 0, "store", 0);
        let steps: Vec<String> = pod_steps(&slot, &pod, "RULES", None)
            .iter()
            .map(argv)
            .collect();
        let at = |needle: &str| {
            steps
                .iter()
                .position(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("no step {needle:?} in {steps:#?}"))
        };
        let netns = at("ip netns add mw2-store-0");
        let ipv6 = at("disable_ipv6=1");
        let rules = at("ip netns exec mw2-store-0 nft -f -");
        let veth = at("ip link add mw2p0 type veth peer name eth0 netns mw2-store-0");
        assert!(netns < ipv6 && ipv6 < rules && rules < veth, "{steps:#?}");
        for up in [
            "link set mw2p0 master mwbr2 up",
            "link set eth0 up",
            "link set lo up",
        ] {
            assert!(rules < at(up), "{steps:#?}");
        }
        assert!(at("addr add 198.18.2.2/24 dev eth0") < at("route add default via 198.18.2.1"));
        let with_rules = pod_steps(&slot, &pod, "RULES", None);
        assert!(
            matches!(&with_rules[rules].action, Action::Run { stdin: Some(r), .. } if r == "RULES")
        );
        // Everything that leaves something behind says so before it runs.
        let created: Vec<_> = with_rules
            .iter()
            .filter_map(|s| s.creates.clone())
            .collect();
        assert_eq!(
            created,
            [
                Object::EtcDir("/etc/netns/mw2-store-0".into()),
                Object::Netns("mw2-store-0".into()),
                Object::HostVeth("mw2p0".into()),
            ]
        );
    }

    #[test]
    fn a_pod_on_a_simulated_host_hangs_off_the_hosts_bridge() {
        let slot = Slot::of(&"198.18.0.0/16".parse().unwrap(), 7).unwrap();
        let pod = PodPlan::new(&slot, 1, "billing", 0).on_host("b");
        assert_eq!(pod.host.as_deref(), Some("b"));
        let steps = pod_steps(&slot, &pod, "RULES", Some("mw4-host-b"));
        let lines: Vec<String> = steps.iter().map(argv).collect();
        assert!(
            lines.contains(
                &"ip -n mw4-host-b link add mw7p1 type veth peer name eth0 netns mw7-billing-0"
                    .to_owned()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"ip -n mw4-host-b link set mw7p1 master mwbr7 up".to_owned()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"ip -n mw7-billing-0 route add default via 198.18.7.1".to_owned()),
            "{lines:#?}"
        );
        // The veth's host end is in the host's namespace and goes with it: not recorded.
        let created: Vec<_> = steps.iter().filter_map(|s| s.creates.clone()).collect();
        assert_eq!(
            created,
            [
                Object::EtcDir("/etc/netns/mw7-billing-0".into()),
                Object::Netns("mw7-billing-0".into()),
            ]
        );
    }

    #[test]
    fn the_host_table_drops_what_is_forwarded_through_the_bridge() {
        let slot = Slot::of(&"198.18.0.0/16".parse().unwrap(), 4).unwrap();
        let steps = slot_steps(&slot);
        let Action::Run {
            stdin: Some(rules), ..
        } = &steps[2].action
        else {
            panic!("{steps:?}");
        };
        assert!(rules.contains("table inet meshwork_4"), "{rules}");
        assert!(rules.contains("iifname \"mwbr4\" drop"), "{rules}");
        assert!(rules.contains("oifname \"mwbr4\" drop"), "{rules}");
        assert_eq!(argv(&steps[0]), "ip addr add 198.18.4.1/24 dev mwbr4");
    }
}
