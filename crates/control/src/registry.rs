//! The registry: resources, registered endpoints, the CA, and the snapshot they make.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use api::ResourceSet;
use api::contract::traffic::ServiceTraffic;
use api::contract::{
    Endpoint, EndpointRegistration, ServiceRoute, Snapshot, SvidRequest, SvidResponse,
};
use axum::http::StatusCode;
use bytes::Bytes;
use identity::TrustDomain;
use policy::PolicySet;
use tokio::sync::watch;

use crate::issuer::Issuer;
use crate::replica::ReplicaKey;
use crate::{ControlError, DEFAULT_SVID_TTL};

/// The control plane's state. Snapshots are published on a watch channel so
/// long polls wake as soon as anything changes.
pub struct Registry {
    issuer: Arc<Issuer>,
    trust_domain: TrustDomain,
    resources: ResourceSet,
    /// Each service's routes and knobs (`HTTPRoute`, `GRPCRoute`, `Service` `spec.traffic`),
    /// compiled; replaced live by [`Registry::replace_traffic`].
    traffic: Mutex<BTreeMap<String, ServiceTraffic>>,
    /// Each registered sidecar's inbound address, by workload replica.
    endpoints: Mutex<BTreeMap<ReplicaKey, SocketAddr>>,
    /// The policies published in snapshots; replaced live by [`Registry::replace_policies`].
    policies: Mutex<PolicySet>,
    snapshots: watch::Sender<Arc<PublishedSnapshot>>,
}

/// A published snapshot with its JSON, encoded once at publishing for every long poll it
/// answers: with N sidecars polling, a change used to be cloned and serialised N times
/// (measured with `bench/fanout`, docs/scale.md).
#[derive(Debug, Default)]
pub struct PublishedSnapshot {
    snapshot: Snapshot,
    json: Bytes,
}

impl PublishedSnapshot {
    fn new(snapshot: Snapshot) -> PublishedSnapshot {
        let json = api::contract::exchange::json_body(&snapshot);
        PublishedSnapshot { snapshot, json }
    }

    /// The snapshot as the contract's JSON (a cheap clone of shared bytes).
    pub fn json(&self) -> Bytes {
        self.json.clone()
    }
}

impl std::ops::Deref for PublishedSnapshot {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl Registry {
    /// Loads (or creates) the CA under `state_dir` and builds the first snapshot.
    pub fn open(state_dir: &Path, resources: ResourceSet) -> Result<Self, ControlError> {
        let mesh = resources.mesh().ok_or(ControlError::NoMesh)?;
        let trust_domain = mesh.spec.trust_domain.clone();
        let svid_ttl = mesh
            .spec
            .svid_ttl
            .map(|d| d.get())
            .unwrap_or(DEFAULT_SVID_TTL);
        let svid_ttl = time::Duration::try_from(svid_ttl).unwrap_or(identity::DEFAULT_SVID_TTL);
        let issuer = Arc::new(Issuer::open(state_dir, &trust_domain, svid_ttl)?);
        issuer.apply_resource_entries(&resources)?;
        let (snapshots, _) = watch::channel(Arc::new(PublishedSnapshot::default()));
        let endpoints = issuer.endpoints()?;
        let registry = Registry {
            issuer,
            trust_domain,
            policies: Mutex::new(resources.policy_set()),
            traffic: Mutex::new(resources.traffic()),
            resources,
            endpoints: Mutex::new(endpoints.clone()),
            snapshots,
        };
        registry.publish(&endpoints);
        Ok(registry)
    }

    /// Signs a workload's CSR with the identity the registry assigns it —
    /// never one the CSR asks for.
    pub fn sign(&self, req: &SvidRequest) -> Result<SvidResponse, ControlError> {
        let workload = self
            .resources
            .workload(&req.workload)
            .ok_or_else(|| ControlError::UnknownWorkload(req.workload.clone()))?;
        let id = workload.spiffe_id(&self.trust_domain);
        let response = self
            .issuer
            .sign(&req.csr_pem, &id)
            .map_err(|source| ControlError::Csr {
                workload: req.workload.clone(),
                source,
            })?;
        tracing::info!(workload = %req.workload, spiffe_id = %id, "issued SVID");
        Ok(response)
    }

    /// Records a sidecar's inbound address (one per workload replica: a replica that
    /// registers again replaces its own entry) and publishes a new snapshot.
    pub fn register(&self, reg: EndpointRegistration) -> Result<(), ControlError> {
        let Some(workload) = self.resources.workload(&reg.workload) else {
            return Err(ControlError::UnknownWorkload(reg.workload));
        };
        let replicas = replicas(workload);
        if reg.replica >= replicas {
            return Err(ControlError::request(
                StatusCode::NOT_FOUND,
                "unknown_replica",
                format!(
                    "workload {:?} has {replicas} replica(s) (spec.replicas), numbered from 0; \
                     there is no replica {}",
                    reg.workload, reg.replica
                ),
            ));
        }
        let key = ReplicaKey::new(reg.workload, reg.replica);
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if endpoints.get(&key) == Some(&reg.inbound) {
            return Ok(()); // re-registration after a reconnect: nothing changed
        }
        tracing::info!(workload = %key.workload, replica = key.replica, inbound = %reg.inbound, "endpoint registered");
        // Durable before acknowledged: a restarted control plane routes to it at once.
        self.issuer.put_endpoint(&key, reg.inbound)?;
        endpoints.insert(key, reg.inbound);
        self.publish(&endpoints);
        Ok(())
    }

    /// Replaces the mesh's policies (their files changed) and publishes a new snapshot;
    /// returns `false`, publishing nothing, when they are unchanged.
    pub fn replace_policies(&self, policies: PolicySet) -> bool {
        // The endpoints lock serialises publishing, as in `register`.
        let endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut current = self.policies.lock().unwrap_or_else(|p| p.into_inner());
            if *current == policies {
                return false;
            }
            *current = policies;
        }
        self.publish(&endpoints);
        true
    }

    /// Replaces the services' routes and resiliency knobs (their files changed) and publishes
    /// a new snapshot; returns `false`, publishing nothing, when they are unchanged.
    pub fn replace_traffic(&self, traffic: BTreeMap<String, ServiceTraffic>) -> bool {
        let endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut current = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
            if *current == traffic {
                return false;
            }
            *current = traffic;
        }
        self.publish(&endpoints);
        true
    }

    /// The identity state (CA, entries, tokens) behind this registry.
    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    /// The issuer, and with it the state file, without the rest of the registry.
    pub(crate) fn into_issuer(self) -> Arc<Issuer> {
        self.issuer
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PublishedSnapshot>> {
        self.snapshots.subscribe()
    }

    fn publish(&self, endpoints: &BTreeMap<ReplicaKey, SocketAddr>) {
        // Persisted, so versions keep growing across control-plane restarts.
        let next = self.snapshots.borrow().version + 1;
        let version = match self.issuer.next_version() {
            Ok(v) => v.max(next),
            Err(error) => {
                tracing::warn!(%error, "cannot persist the snapshot version");
                next
            }
        };
        let traffic = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
        let services = self
            .resources
            .services
            .iter()
            .map(|s| {
                let name = s.resource.metadata.name.to_string();
                let endpoints = self
                    .resources
                    .backends(&s.resource.spec)
                    .flat_map(|w| self.replica_endpoints(w, endpoints))
                    .collect();
                let routes = s.resource.spec.routes.clone();
                let route = ServiceRoute {
                    name: name.clone(),
                    endpoints,
                    routes,
                    traffic: traffic.get(&name).cloned().unwrap_or_default(),
                };
                (name, route)
            })
            .collect();
        drop(traffic);
        let policies = self
            .policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.snapshots
            .send_replace(Arc::new(PublishedSnapshot::new(Snapshot {
                version,
                services,
                policy_hash: policies.hash().to_string(),
                policies,
            })));
    }

    /// `w`'s registered replicas as endpoints, in replica order. Replicas past
    /// `spec.replicas` (persisted by a run that had more) are left out.
    fn replica_endpoints<'a>(
        &'a self,
        w: &'a api::mesh::Workload,
        endpoints: &'a BTreeMap<ReplicaKey, SocketAddr>,
    ) -> impl Iterator<Item = Endpoint> + 'a {
        let identity = w.spiffe_id(&self.trust_domain);
        (0..replicas(w)).filter_map(move |replica| {
            let key = ReplicaKey::new(w.metadata.name.as_str(), replica);
            Some(Endpoint {
                addr: *endpoints.get(&key)?,
                identity: identity.clone(),
            })
        })
    }
}

/// How many replicas `w` runs (`spec.replicas`, 1 when unset).
fn replicas(w: &api::mesh::Workload) -> u16 {
    w.spec.replicas.map_or(1, |r| r.get())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::Table;
    use crate::store::redb::RedbStore;

    const MESH: &str = "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\n\
        spec:\n  trustDomain: meshwork.local\n---\n\
        apiVersion: meshwork.dev/v1alpha1\nkind: Service\nmetadata:\n  name: billing\n\
        spec:\n  selector:\n    app: billing\n---\n\
        apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: billing\n  \
        labels:\n    app: billing\nspec:\n  command: [x]\n";

    /// A registry over resources where billing runs `replicas` copies (`None`: unset).
    fn open_registry(state: &Path, replicas: Option<u16>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let spec = replicas.map_or(String::new(), |n| format!("  replicas: {n}\n"));
        std::fs::write(dir.path().join("mesh.yaml"), format!("{MESH}{spec}")).unwrap();
        Registry::open(state, api::load_dir(dir.path()).unwrap()).unwrap()
    }

    fn register(registry: &Registry, replica: u16, port: u16) -> Result<(), ControlError> {
        registry.register(EndpointRegistration {
            workload: "billing".into(),
            inbound: SocketAddr::from(([127, 0, 0, 1], port)),
            replica,
        })
    }

    #[test]
    fn a_published_snapshot_is_served_as_its_json_encoded_once() {
        let snapshot = Snapshot {
            version: 7,
            policy_hash: "h".to_owned(),
            ..Snapshot::default()
        };
        let published = PublishedSnapshot::new(snapshot.clone());
        let served: Snapshot = serde_json::from_slice(&published.json()).unwrap();
        assert_eq!((served, published.version), (snapshot, 7));
        assert_eq!(
            published.json().as_ptr(),
            published.json().as_ptr(),
            "shared, not re-encoded"
        );
    }

    fn billing_ports(registry: &Registry) -> Vec<u16> {
        let snapshot = registry.subscribe().borrow().clone();
        let endpoints = &snapshot.services["billing"].endpoints;
        endpoints.iter().map(|e| e.addr.port()).collect()
    }

    #[test]
    fn each_replica_is_an_endpoint_and_a_restarted_one_replaces_its_own() {
        let state = tempfile::tempdir().unwrap();
        let registry = open_registry(state.path(), Some(2));
        register(&registry, 1, 4002).unwrap();
        register(&registry, 0, 4001).unwrap();
        assert_eq!(billing_ports(&registry), [4001, 4002]);
        register(&registry, 1, 4003).unwrap();
        assert_eq!(billing_ports(&registry), [4001, 4003]);
        // Persisted by replica: a restarted control plane publishes both at once.
        drop(registry);
        let registry = open_registry(state.path(), Some(2));
        assert_eq!(billing_ports(&registry), [4001, 4003]);
    }

    #[test]
    fn a_replica_the_workload_does_not_have_is_refused() {
        let state = tempfile::tempdir().unwrap();
        let registry = open_registry(state.path(), Some(2));
        let error = register(&registry, 2, 4001).unwrap_err();
        assert!(error.to_string().contains("has 2 replica(s)"), "{error}");
        let single = tempfile::tempdir().unwrap();
        let registry = open_registry(single.path(), None);
        assert!(register(&registry, 1, 4001).is_err());
        register(&registry, 0, 4001).unwrap();
        assert_eq!(billing_ports(&registry), [4001]);
    }

    #[test]
    fn an_older_state_file_reads_as_replica_0_and_fewer_replicas_drop_the_rest() {
        let state = tempfile::tempdir().unwrap();
        {
            // What a control plane from before replicas wrote: the bare workload name.
            let store = RedbStore::open(state.path()).unwrap();
            let addr = SocketAddr::from(([127, 0, 0, 1], 4001));
            store.put_now(Table::Endpoints, "billing", &addr).unwrap();
            store.put_now(Table::Endpoints, "billing.2", &addr).unwrap();
        }
        let registry = open_registry(state.path(), Some(2));
        assert_eq!(
            billing_ports(&registry),
            [4001],
            "replica 2 is past spec.replicas"
        );
    }

    #[test]
    fn an_unreadable_endpoint_key_is_reported_not_dropped() {
        let state = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(state.path()).unwrap();
            let addr = SocketAddr::from(([127, 0, 0, 1], 4001));
            store.put_now(Table::Endpoints, "billing.x", &addr).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), MESH).unwrap();
        let error = Registry::open(state.path(), api::load_dir(dir.path()).unwrap())
            .err()
            .expect("refused");
        let text = error.to_string();
        assert!(text.contains("endpoints/\"billing.x\""), "{text}");
    }
}
