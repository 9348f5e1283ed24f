//! The copies of each workload `up` runs (`Workload` `spec.replicas`), and their ports.
//!
//! Each replica is one application process with its own sidecar: its own `PORT`, inbound,
//! outbound and admin listeners, ready file and registration entry, all with the
//! workload's one SPIFFE identity. Its sidecar registers its inbound address as that
//! replica (`meshwork proxy --replica N`), so callers see one endpoint per replica.
//! A workload that runs one copy is named as before (`billing`); several are
//! `billing-0`, `billing-1`… in logs, in the supervisor and in registration entries.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use api::ResourceSet;

use super::ports;

/// One copy of a workload's application and its sidecar.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The workload's `metadata.name`.
    pub workload: String,
    /// Which replica, from 0.
    pub replica: u16,
    /// How `up` names it: the workload's name for a single copy, `<workload>-<replica>`
    /// when the workload runs several.
    pub name: String,
    /// Its application's port (`PORT`): `spec.port`, or a free one per replica.
    pub port: u16,
    /// Whether the workload runs several copies: then a replica's application that dies
    /// is restarted while the others serve, rather than stopping `up`.
    pub replicated: bool,
}

/// Every replica of every workload, in resource order, each with its application port.
pub fn plan(set: &ResourceSet) -> anyhow::Result<Vec<Instance>> {
    let mut instances = Vec::new();
    for w in &set.workloads {
        let w = &w.resource;
        let workload = w.metadata.name.to_string();
        let replicas = w.spec.replicas.map_or(1, |r| r.get());
        for replica in 0..replicas {
            // The loader refuses spec.port with replicas above 1 (file:line:field).
            let port = match w.spec.port {
                Some(p) => p.get(),
                None => ports::free_port().context("allocating an application port")?,
            };
            let name = match replicas {
                1 => workload.clone(),
                _ => format!("{workload}-{replica}"),
            };
            instances.push(Instance {
                workload: workload.clone(),
                replica,
                name,
                port,
                replicated: replicas > 1,
            });
        }
    }
    check_names(set, &instances)?;
    Ok(instances)
}

/// A replica named like another workload (`billing-1` next to a workload `billing-1`)
/// would share its log prefix and supervisor name.
fn check_names(set: &ResourceSet, instances: &[Instance]) -> anyhow::Result<()> {
    let workloads: BTreeSet<&str> = set
        .workloads
        .iter()
        .map(|w| w.resource.metadata.name.as_str())
        .collect();
    for i in instances.iter().filter(|i| i.replicated) {
        if workloads.contains(i.name.as_str()) {
            bail!(
                "Workload/{}: its replica {} would be named {:?}, like Workload/{}; \
                 rename one of them",
                i.workload,
                i.replica,
                i.name,
                i.name
            );
        }
    }
    Ok(())
}

/// The first replica's application port of `workload`.
pub fn first_port(instances: &[Instance], workload: &str) -> Option<u16> {
    instances
        .iter()
        .find(|i| i.workload == workload)
        .map(|i| i.port)
}

/// The DNS server sidecars resolve egress names with (`Mesh` `spec.dns`), if any; a
/// workload serving DNS is reached at its first replica.
pub fn egress_dns(set: &ResourceSet, instances: &[Instance]) -> Option<std::net::SocketAddr> {
    match set.mesh()?.spec.dns.as_ref()? {
        api::mesh::DnsSpec::Server(addr) => Some(*addr),
        api::mesh::DnsSpec::Workload(name) => {
            let port = first_port(instances, name.as_str())?;
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MESH: &str = "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\n\
        spec:\n  trustDomain: meshwork.local\n";

    fn set(workloads: &[(&str, &str)]) -> ResourceSet {
        let dir = tempfile::tempdir().unwrap();
        let mut text = MESH.to_owned();
        for (name, spec) in workloads {
            text.push_str(&format!(
                "---\napiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata:\n  \
                 name: {name}\nspec:\n  command: [x]\n{spec}"
            ));
        }
        std::fs::write(dir.path().join("mesh.yaml"), text).unwrap();
        api::load_dir(dir.path()).unwrap()
    }

    #[test]
    fn replicas_get_numbered_names_and_ports_of_their_own() {
        let set = set(&[("billing", "  replicas: 3\n"), ("store", "  port: 8080\n")]);
        let plan = plan(&set).unwrap();
        let names: Vec<&str> = plan.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["billing-0", "billing-1", "billing-2", "store"]);
        let ports: BTreeSet<u16> = plan[..3].iter().map(|i| i.port).collect();
        assert_eq!(ports.len(), 3, "each replica has its own port");
        assert_eq!((plan[3].port, plan[3].replicated), (8080, false));
        assert!(
            plan[..3]
                .iter()
                .all(|i| i.replicated && i.workload == "billing")
        );
        assert_eq!(first_port(&plan, "billing"), Some(plan[0].port));
    }

    #[test]
    fn a_replica_name_clashing_with_a_workload_is_refused() {
        let error = plan(&set(&[("b", "  replicas: 2\n"), ("b-1", "")])).unwrap_err();
        assert!(error.to_string().contains("Workload/b-1"), "{error}");
    }
}
