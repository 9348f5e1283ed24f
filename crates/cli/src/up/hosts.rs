//! `up --hosts a,b --place billing=b`: workloads on several simulated hosts (issue 15).
//!
//! Each host is a network namespace on a fabric bridge with its own pod subnet
//! (`pods/hosts.rs`) and its own node agent, run inside it, which joins the control plane
//! over the fabric (the node API listens on the fabric's `.1`). The sidecars of a host's
//! pods get their SVIDs from that host's agent and dial peer sidecars from the host's
//! namespace (`meshwork proxy --pod-host-netns`), so a request from a pod on one host to a
//! pod on another crosses the fabric as mTLS. Sidecars themselves, like `up`, run in the
//! root namespace: the control socket, egress, claimed databases and `hostNetwork`
//! workloads (which are on no host) are reached from there.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use api::ResourceSet;

use super::instances::Instance;
use super::node_agent::{self, AgentPlace};
use super::supervisor::Supervisor;
use crate::pods::{self, PodPlan, hosts::HostPlan};
use crate::state::StateDir;

/// Which host each workload is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The hosts, in `--hosts` order (the first takes unplaced workloads).
    pub hosts: Vec<String>,
    /// `--place W=H`, by workload.
    pub placed: BTreeMap<String, String>,
}

impl Placement {
    /// `--hosts` and `--place` checked against `set`: `None` without `--hosts`.
    pub fn from_args(
        set: &ResourceSet,
        hosts: &[String],
        place: &[String],
    ) -> anyhow::Result<Option<Placement>> {
        if hosts.is_empty() {
            return Ok(None);
        }
        for (i, name) in hosts.iter().enumerate() {
            pods::hosts::check_name(name).context("--hosts")?;
            if hosts[..i].contains(name) {
                bail!("--hosts: {name} is named twice");
            }
        }
        let mut placed = BTreeMap::new();
        for p in place {
            let Some((workload, host)) = p.split_once('=') else {
                bail!("--place {p}: expected WORKLOAD=HOST");
            };
            let Some(w) = set.workload(workload) else {
                bail!("--place {p}: no workload {workload} in the resource directory");
            };
            if w.spec.host_network {
                bail!("--place {p}: {workload} has hostNetwork: true and runs on no host");
            }
            if !hosts.iter().any(|h| h == host) {
                bail!(
                    "--place {p}: {host} is not one of --hosts {}",
                    hosts.join(",")
                );
            }
            if placed
                .insert(workload.to_owned(), host.to_owned())
                .is_some()
            {
                bail!("--place: {workload} is placed twice");
            }
        }
        Ok(Some(Placement {
            hosts: hosts.to_vec(),
            placed,
        }))
    }

    /// The host of `workload`.
    pub fn host_of(&self, workload: &str) -> &str {
        match self.placed.get(workload) {
            Some(host) => host,
            // invariant: `from_args` returns a placement only with at least one host.
            None => self.hosts.first().map_or("", String::as_str),
        }
    }

    /// Each host with the `(workload, replica)`s whose pods it holds.
    pub fn members(&self, pod_members: &[(String, u16)]) -> Vec<(String, Vec<(String, u16)>)> {
        self.hosts
            .iter()
            .map(|host| {
                let on: Vec<(String, u16)> = pod_members
                    .iter()
                    .filter(|(w, _)| self.host_of(w) == host)
                    .cloned()
                    .collect();
                (host.clone(), on)
            })
            .collect()
    }
}

/// The simulated hosts once made: their plans and pods, then their agents' sockets.
pub struct Network {
    /// The fabric's `.1`, where the control plane's node API listens.
    pub fabric_gateway: Ipv4Addr,
    /// The hosts.
    pub hosts: Vec<HostPlan>,
    /// The pods, by instance name.
    pub pods: BTreeMap<String, PodPlan>,
    /// Each host's Workload API socket, by host name, once its agent serves.
    pub agents: BTreeMap<String, PathBuf>,
}

impl Network {
    /// The namespace `pod`'s sidecar dials peers from.
    pub fn host_netns(&self, pod: &PodPlan) -> Option<PathBuf> {
        let host = pod.host.as_deref()?;
        let plan = self.hosts.iter().find(|h| h.name == host)?;
        Some(plan.netns_path())
    }

    /// The Workload API socket for `pod`'s sidecar: its host's agent; a sidecar with no pod
    /// (`hostNetwork`) uses the first host's.
    pub fn agent_socket(&self, pod: Option<&PodPlan>) -> Option<&Path> {
        let first = self.hosts.first().map(|h| h.name.as_str());
        let host = pod.and_then(|p| p.host.as_deref()).or(first)?;
        self.agents.get(host).map(PathBuf::as_path)
    }
}

/// Makes the fabric, the hosts and their pods (recorded in `<state>/pods.json` as pods are).
pub fn create(
    set: &ResourceSet,
    state_dir: &Path,
    instances: &[Instance],
    placement: &Placement,
) -> anyhow::Result<Network> {
    let spec = set.mesh().map(|m| m.spec.pods()).unwrap_or_default();
    let members = placement.members(&super::isolation::members(set, instances));
    let record = pods::create_hosts(state_dir, &spec.network, 0, &members)
        .context("creating the simulated hosts")?;
    // invariant: `create_hosts` returns a record with the fabric's slot.
    let fabric = record.slot.context("the hosts' record has no fabric")?;
    println!(
        "[up] fabric {} ({}/24): {} host(s)",
        fabric.bridge(),
        fabric.base,
        record.hosts.len()
    );
    for host in &record.hosts {
        let on: Vec<String> = record
            .pods
            .iter()
            .filter(|p| p.host.as_deref() == Some(host.name.as_str()))
            .map(|p| format!("{}={}", p.netns, p.ip))
            .collect();
        println!(
            "[up] host {}: {} at {}, pods on {} ({}/24): {}",
            host.name,
            host.netns,
            host.fabric_ip,
            host.slot.bridge(),
            host.slot.base,
            on.join(" ")
        );
    }
    let mut pods = BTreeMap::new();
    for i in instances {
        if let Some(pod) = record.pod(&i.workload, i.replica) {
            pods.insert(i.name.clone(), pod.clone());
        }
    }
    Ok(Network {
        fabric_gateway: fabric.gateway(),
        hosts: record.hosts,
        pods,
        agents: BTreeMap::new(),
    })
}

/// `<state>/hosts/<name>`: a host's agent socket, data and admin address.
pub fn host_dir(state: &StateDir, host: &str) -> PathBuf {
    state.path().join("hosts").join(host)
}

/// One agent per host, in the host's namespace, joining the node API at `node_api` over
/// the fabric.
pub async fn start_agents(
    sup: &mut Supervisor,
    exe: &Path,
    state: &StateDir,
    network: &mut Network,
    node_apis: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let node_api = node_apis.join(", ");
    for host in &network.hosts {
        let dir = host_dir(state, &host.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let place = AgentPlace {
            name: format!("agent@{}", host.name),
            netns: Some(host.netns.clone()),
            socket: dir.join("agent.sock"),
            data_dir: Some(dir.join("agent")),
            control: node_apis.to_vec(),
            admin_file: dir.join("agent-admin.addr"),
        };
        let socket = node_agent::start(sup, exe, state, place, timeout).await?;
        println!(
            "[up] host {}: node agent {} (joined {node_api} over the fabric)",
            host.name,
            socket.display()
        );
        network.agents.insert(host.name.clone(), socket);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set() -> ResourceSet {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing");
        api::load_dir(&dir).unwrap()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn unplaced_workloads_go_on_the_first_host() {
        let set = set();
        let p = Placement::from_args(&set, &strings(&["a", "b"]), &strings(&["billing=b"]))
            .unwrap()
            .unwrap();
        assert_eq!(p.host_of("billing"), "b");
        assert_eq!(p.host_of("store"), "a");
        let members = p.members(&[
            ("store".into(), 0),
            ("billing".into(), 0),
            ("billing".into(), 1),
            ("reporting".into(), 0),
        ]);
        assert_eq!(
            members,
            [
                (
                    "a".to_owned(),
                    vec![("store".to_owned(), 0), ("reporting".to_owned(), 0)]
                ),
                (
                    "b".to_owned(),
                    vec![("billing".to_owned(), 0), ("billing".to_owned(), 1)]
                ),
            ]
        );
        assert_eq!(Placement::from_args(&set, &[], &[]).unwrap(), None);
    }

    #[test]
    fn a_bad_placement_is_refused_naming_what_is_wrong() {
        let set = set();
        let hosts = strings(&["a", "b"]);
        for (place, says) in [
            ("billing", "expected WORKLOAD=HOST"),
            ("nobody=a", "no workload nobody"),
            ("billing=c", "c is not one of --hosts a,b"),
            ("stripe=a", "hostNetwork"),
        ] {
            let error = Placement::from_args(&set, &hosts, &strings(&[place])).unwrap_err();
            assert!(format!("{error:#}").contains(says), "{place}: {error:#}");
        }
        let twice = strings(&["billing=a", "billing=b"]);
        let error = Placement::from_args(&set, &hosts, &twice).unwrap_err();
        assert!(error.to_string().contains("placed twice"), "{error}");
        let error = Placement::from_args(&set, &strings(&["a", "a"]), &[]).unwrap_err();
        assert!(error.to_string().contains("named twice"), "{error}");
        let error = Placement::from_args(&set, &strings(&["A"]), &[]).unwrap_err();
        assert!(
            format!("{error:#}").contains("host name \"A\""),
            "{error:#}"
        );
    }
}
