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
use identity::TrustDomain;
use policy::PolicySet;
use tokio::sync::watch;

use crate::issuer::Issuer;
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
    endpoints: Mutex<BTreeMap<String, SocketAddr>>,
    /// The policies published in snapshots; replaced live by [`Registry::replace_policies`].
    policies: Mutex<PolicySet>,
    snapshots: watch::Sender<Arc<Snapshot>>,
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
        let (snapshots, _) = watch::channel(Arc::new(Snapshot::default()));
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

    /// Records a sidecar's inbound address and publishes a new snapshot.
    pub fn register(&self, reg: EndpointRegistration) -> Result<(), ControlError> {
        if self.resources.workload(&reg.workload).is_none() {
            return Err(ControlError::UnknownWorkload(reg.workload));
        }
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if endpoints.get(&reg.workload) == Some(&reg.inbound) {
            return Ok(()); // re-registration after a reconnect: nothing changed
        }
        tracing::info!(workload = %reg.workload, inbound = %reg.inbound, "endpoint registered");
        // Durable before acknowledged: a restarted control plane routes to it at once.
        self.issuer.put_endpoint(&reg.workload, reg.inbound)?;
        endpoints.insert(reg.workload, reg.inbound);
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

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    fn publish(&self, endpoints: &BTreeMap<String, SocketAddr>) {
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
                    .filter_map(|w| {
                        let addr = *endpoints.get(w.metadata.name.as_str())?;
                        Some(Endpoint {
                            addr,
                            identity: w.spiffe_id(&self.trust_domain),
                        })
                    })
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
        self.snapshots.send_replace(Arc::new(Snapshot {
            version,
            services,
            policy_hash: policies.hash().to_string(),
            policies,
        }));
    }
}
