//! The sidecars `up` starts, one per workload replica, and the node agent each gets its
//! SVIDs from (the machine's, or its simulated host's with `--hosts`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::instances::{self, Instance};
use super::supervisor::{Child, Supervisor};
use super::{Launch, Pending, hosts, isolation, node_agent, trace_flags};
use crate::pods::PodPlan;

/// The node agents and the pods their sidecars front.
pub(super) enum Agents {
    /// One agent for the machine, and pods (by instance name) in pod mode.
    One {
        socket: PathBuf,
        pods: std::collections::BTreeMap<String, PodPlan>,
    },
    /// An agent per simulated host (`--hosts`).
    Hosts(hosts::Network),
}

impl Agents {
    /// The pod of instance `name`, if it has one.
    pub(super) fn pod(&self, name: &str) -> Option<&PodPlan> {
        match self {
            Agents::One { pods, .. } => pods.get(name),
            Agents::Hosts(network) => network.pods.get(name),
        }
    }

    /// The Workload API socket for the sidecar of `pod` (or of no pod: a `hostNetwork`
    /// workload).
    pub(super) fn socket(&self, pod: Option<&PodPlan>) -> Option<&Path> {
        match self {
            Agents::One { socket, .. } => Some(socket),
            Agents::Hosts(network) => network.agent_socket(pod),
        }
    }

    /// The namespace `pod`'s sidecar dials peers from, on a simulated host.
    pub(super) fn host_netns(&self, pod: &PodPlan) -> Option<PathBuf> {
        match self {
            Agents::One { .. } => None,
            Agents::Hosts(network) => network.host_netns(pod),
        }
    }
}

/// One sidecar per workload replica, each registered with the agent as exactly that
/// process (all of a workload's replicas get its one identity).
pub(super) async fn start(
    sup: &mut Supervisor,
    l: &Launch<'_>,
    instances: &[Instance],
    agents: &Agents,
) -> anyhow::Result<Vec<Pending>> {
    let dns = instances::egress_dns(l.set, instances);
    let mesh_tracing = l.set.mesh().and_then(|m| m.spec.tracing.as_ref());
    let trace_args = mesh_tracing
        .map(trace_flags::proxy_args)
        .unwrap_or_default();
    let mut pending = Vec::new();
    for instance in instances {
        let Some(w) = l.set.workload(&instance.workload) else {
            continue;
        };
        let ready = l
            .state
            .replica_ready_file(&instance.workload, instance.replica);
        let _ = std::fs::remove_file(&ready);
        let pod = agents.pod(&instance.name).cloned();
        let agent_socket = agents
            .socket(pod.as_ref())
            .context("no node agent for a sidecar")?;
        let mut proxy = proxy_command(l, w, instance, &ready, agent_socket, dns, &trace_args);
        if let Some(pod) = &pod {
            proxy = proxy.args(isolation::sidecar_pod_args(pod, l.set, l.state.path()));
            if let Some(netns) = agents.host_netns(pod) {
                proxy = proxy.args(["--pod-host-netns".as_ref(), netns.as_os_str()]);
            }
        }
        let proc_name = format!("{}/proxy", instance.name);
        sup.spawn(&proc_name, proxy)?;
        let id = l
            .set
            .workload_id(&instance.workload)
            .context("workload without an identity")?;
        let entry = format!("up-{}", instance.name);
        node_agent::register(sup, l.state, &proc_name, &entry, id, l.timeout).await?;
        pending.push(Pending {
            instance: instance.clone(),
            ready,
            pod,
        });
    }
    Ok(pending)
}

/// The `meshwork proxy` command of `instance`'s sidecar.
fn proxy_command(
    l: &Launch<'_>,
    w: &api::mesh::Workload,
    instance: &Instance,
    ready: &Path,
    agent_socket: &Path,
    dns: Option<std::net::SocketAddr>,
    trace_args: &[String],
) -> Child {
    let mut proxy = Child::meshwork(&l.exe, "proxy")
        .args(["--workload", &instance.workload])
        .args(["--replica", &instance.replica.to_string()])
        .args(["--app", &format!("127.0.0.1:{}", instance.port)])
        .args(super::control_plane::socket_args(l))
        .args(["--ready-file".as_ref(), ready.as_os_str()])
        .args(["--admin", "127.0.0.1:0"])
        .args(["--workload-api".as_ref(), agent_socket.as_os_str()]);
    if w.spec.protocol == api::mesh::AppProtocol::Http2 {
        proxy = proxy.args(["--app-http2"]);
    }
    if let Some(dns) = dns {
        proxy = proxy.args(["--dns", &dns.to_string()]);
    }
    // The sidecar also inherits `up`'s environment, OTEL_* included: what the Mesh
    // leaves out of spec.tracing comes from there.
    proxy.args(trace_args)
}
