//! The registry: resources, registered endpoints, the CA, and the snapshot they make.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use api::ResourceSet;
use api::contract::{Endpoint, EndpointRegistration, ServiceRoute, Snapshot, SvidRequest, SvidResponse};
use identity::{Ca, TrustDomain};
use tokio::sync::watch;

use crate::{ControlError, DEFAULT_SVID_TTL, ca_store};

/// The control plane's state. Snapshots are published on a watch channel so
/// long polls wake as soon as anything changes.
pub struct Registry {
    ca: Ca,
    trust_domain: TrustDomain,
    svid_ttl: time::Duration,
    resources: ResourceSet,
    endpoints: Mutex<BTreeMap<String, SocketAddr>>,
    snapshots: watch::Sender<Arc<Snapshot>>,
}

impl Registry {
    /// Loads (or creates) the CA under `state_dir` and builds the first snapshot.
    pub fn open(state_dir: &Path, resources: ResourceSet) -> Result<Self, ControlError> {
        let mesh = resources.mesh().ok_or(ControlError::NoMesh)?;
        let trust_domain = mesh.spec.trust_domain.clone();
        let svid_ttl = mesh.spec.svid_ttl.map(|d| d.get()).unwrap_or(DEFAULT_SVID_TTL);
        let svid_ttl = time::Duration::try_from(svid_ttl).unwrap_or(identity::DEFAULT_SVID_TTL);
        let ca = ca_store::load_or_create(state_dir, &trust_domain)?;
        let (snapshots, _) = watch::channel(Arc::new(Snapshot::default()));
        let registry = Registry {
            ca,
            trust_domain,
            svid_ttl,
            resources,
            endpoints: Mutex::new(BTreeMap::new()),
            snapshots,
        };
        registry.publish(&BTreeMap::new());
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
        let now = time::OffsetDateTime::now_utc();
        let cert = self
            .ca
            .sign_csr(&req.csr_pem, &id, self.svid_ttl, now)
            .map_err(|source| ControlError::Csr { workload: req.workload.clone(), source })?;
        tracing::info!(workload = %req.workload, spiffe_id = %id, "issued SVID");
        Ok(SvidResponse {
            spiffe_id: id,
            cert_chain_pem: cert.to_pem(),
            bundle_pem: self.ca.bundle().to_pem(),
            expires_at: cert.not_after().unix_timestamp(),
        })
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
        endpoints.insert(reg.workload, reg.inbound);
        self.publish(&endpoints);
        Ok(())
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    fn publish(&self, endpoints: &BTreeMap<String, SocketAddr>) {
        let version = self.snapshots.borrow().version + 1;
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
                        Some(Endpoint { addr, identity: w.spiffe_id(&self.trust_domain) })
                    })
                    .collect();
                (name.clone(), ServiceRoute { name, endpoints })
            })
            .collect();
        self.snapshots.send_replace(Arc::new(Snapshot { version, services }));
    }
}
