//! The registry: resources, registered endpoints, the CA, and the snapshot they make.
//!
//! The snapshot is made from this replica's start resources (services, workloads: they
//! change with a restart) and two things in the store: the registered endpoints and the
//! live resources (`resources/live`: policies and traffic, written by the leader as the
//! resource source changes). Its version is the revision of the snapshot marker
//! ([`crate::versions`]), so every replica serves the same version for the same state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::issuer::Issuer;
use crate::replica::ReplicaKey;
use crate::store::typed::encode;
use crate::store::{Backend, Commit, Expect, Op, StoreError, Table};
use crate::versions::View;
use crate::{ControlError, DEFAULT_SVID_TTL};

/// The key of the live resources in [`Table::Resources`].
const LIVE: &str = "live";

/// The resources that apply without a restart, as the store holds them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveResources {
    /// The mesh's policies.
    pub policies: PolicySet,
    /// Each service's routes and knobs (`HTTPRoute`, `GRPCRoute`, `Service` `spec.traffic`).
    pub traffic: BTreeMap<String, ServiceTraffic>,
}

impl LiveResources {
    /// The live part of `set`.
    pub fn of(set: &ResourceSet) -> LiveResources {
        LiveResources {
            policies: set.policy_set(),
            traffic: set.traffic(),
        }
    }
}

/// What writing new live resources changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveChange {
    /// Nothing: they are what the store holds.
    Same,
    /// The policies (and maybe the traffic).
    Policies,
    /// Only the traffic.
    Traffic,
    /// Not written: the fence failed (this replica no longer leads).
    Fenced,
}

/// Whose start resources become the live ones when the registry opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartResources {
    /// This replica's, replacing what is stored (the only writer: redb).
    Replace,
    /// This replica's only if the store has none yet (replicas: the leader keeps them
    /// current from its resource source).
    IfAbsent,
}

/// The control plane's state. Snapshots are published on a watch channel so
/// long polls wake as soon as anything changes.
pub struct Registry {
    issuer: Arc<Issuer>,
    trust_domain: TrustDomain,
    resources: ResourceSet,
    snapshots: watch::Sender<Arc<PublishedSnapshot>>,
    /// Serialises rebuilding, so snapshots are published in version order.
    refreshing: Mutex<()>,
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

/// The SVID lifetime the Mesh asks for.
pub fn svid_ttl(resources: &ResourceSet) -> Result<(TrustDomain, time::Duration), ControlError> {
    let mesh = resources.mesh().ok_or(ControlError::NoMesh)?;
    let ttl = mesh
        .spec
        .svid_ttl
        .map(|d| d.get())
        .unwrap_or(DEFAULT_SVID_TTL);
    let ttl = time::Duration::try_from(ttl).unwrap_or(identity::DEFAULT_SVID_TTL);
    Ok((mesh.spec.trust_domain.clone(), ttl))
}

impl Registry {
    /// Applies the `RegistrationEntry` resources and the start resources as `start` says,
    /// and builds the first snapshot.
    pub async fn open(
        issuer: Arc<Issuer>,
        resources: ResourceSet,
        start: StartResources,
    ) -> Result<Self, ControlError> {
        let trust_domain = issuer.trust_domain().clone();
        // The only writer applies its directory's entries at once; replicas leave it to
        // the leader (`crate::duties`), so one started with an older directory cannot
        // delete what the others' still declare.
        if start == StartResources::Replace {
            issuer.apply_resource_entries(&resources, None).await?;
        }
        let registry = Registry {
            issuer,
            trust_domain,
            snapshots: watch::channel(Arc::new(PublishedSnapshot::default())).0,
            refreshing: Mutex::new(()),
            resources,
        };
        let live = LiveResources::of(&registry.resources);
        let stored = registry.live()?;
        let expect = match (stored, start) {
            (None, _) => Some(Expect::Absent),
            (Some(s), StartResources::Replace) if s != live => Some(Expect::Any),
            _ => None,
        };
        if let Some(expect) = expect {
            if !registry.commit_live(&live, expect, None).await? {
                // Another replica stored its start resources first: read them.
                let latest = crate::issuer::latest_change(
                    registry.issuer.store(),
                    &[Table::Resources, Table::Versions],
                );
                registry.issuer.settle(latest.await?).await;
            }
        } else if View::Snapshot.version(registry.issuer.cache()) == 0 {
            let marked = registry
                .issuer
                .store()
                .commit(vec![View::Snapshot.mark_first()])
                .await?;
            if let Commit::Applied(r) = marked {
                registry.issuer.settle(r).await;
            }
        }
        registry.build()?;
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
    pub async fn register(&self, reg: EndpointRegistration) -> Result<(), ControlError> {
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
        if self.issuer.endpoints()?.get(&key) == Some(&reg.inbound) {
            return Ok(()); // re-registration after a reconnect: nothing changed
        }
        tracing::info!(workload = %key.workload, replica = key.replica, inbound = %reg.inbound, "endpoint registered");
        // Durable before acknowledged: a restarted control plane routes to it at once.
        let op = Op::Put {
            table: Table::Endpoints,
            key: key.to_string(),
            value: encode(&reg.inbound),
            expect: Expect::Any,
        };
        self.issuer.commit(vec![op], View::Snapshot).await?;
        self.refresh();
        Ok(())
    }

    /// Stores new live resources (a leader's duty; `fence` guards the commit) unless they
    /// are what the store holds, and publishes them.
    pub async fn write_live(
        &self,
        live: &LiveResources,
        fence: Option<Op>,
    ) -> Result<LiveChange, ControlError> {
        let stored = self.live()?.unwrap_or_default();
        if stored == *live {
            return Ok(LiveChange::Same);
        }
        if !self.commit_live(live, Expect::Any, fence).await? {
            return Ok(LiveChange::Fenced);
        }
        Ok(if stored.policies != live.policies {
            LiveChange::Policies
        } else {
            LiveChange::Traffic
        })
    }

    /// Whether it applied (a failed fence or expectation: not).
    async fn commit_live(
        &self,
        live: &LiveResources,
        expect: Expect,
        fence: Option<Op>,
    ) -> Result<bool, ControlError> {
        let mut ops = vec![Op::Put {
            table: Table::Resources,
            key: LIVE.to_owned(),
            value: encode(live),
            expect,
        }];
        ops.extend(fence);
        let commit = self.issuer.commit(ops, View::Snapshot).await?;
        self.refresh();
        Ok(matches!(commit, Commit::Applied(_)))
    }

    /// The live resources the store holds (`None` before the first write).
    fn live(&self) -> Result<Option<LiveResources>, StoreError> {
        let Some(rec) = self.issuer.cache().get(Table::Resources, LIVE) else {
            return Ok(None);
        };
        serde_json::from_slice(&rec.value)
            .map(Some)
            .map_err(|e| StoreError::Record {
                store: self.issuer.store().describe(),
                table: Table::Resources.name(),
                key: LIVE.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The resources this replica started with.
    pub fn resources(&self) -> &ResourceSet {
        &self.resources
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

    /// Rebuilds and publishes the snapshot if its version marker moved (called by the
    /// publisher on every cache change, and after this replica's own writes). A store
    /// that no longer decodes keeps the previous snapshot serving.
    pub(crate) fn refresh(&self) {
        if View::Snapshot.version(self.issuer.cache()) <= self.snapshots.borrow().version {
            return;
        }
        if let Err(error) = self.build() {
            tracing::error!(%error, "the stored endpoints or live resources do not load; serving the previous snapshot");
        }
    }

    fn build(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        let version = View::Snapshot.version(self.issuer.cache());
        if version <= self.snapshots.borrow().version && version != 0 {
            return Ok(());
        }
        let endpoints = self.issuer.endpoints()?;
        let live = self
            .live()?
            .unwrap_or_else(|| LiveResources::of(&self.resources));
        let services = self
            .resources
            .services
            .iter()
            .map(|s| {
                let name = s.resource.metadata.name.to_string();
                let endpoints = self
                    .resources
                    .backends(&s.resource.spec)
                    .flat_map(|w| self.replica_endpoints(w, &endpoints))
                    .collect();
                let route = ServiceRoute {
                    name: name.clone(),
                    endpoints,
                    routes: s.resource.spec.routes.clone(),
                    traffic: live.traffic.get(&name).cloned().unwrap_or_default(),
                };
                (name, route)
            })
            .collect();
        self.snapshots
            .send_replace(Arc::new(PublishedSnapshot::new(Snapshot {
                version,
                services,
                policy_hash: live.policies.hash().to_string(),
                policies: live.policies,
            })));
        Ok(())
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
mod local;
#[cfg(test)]
pub(crate) use local::Local;
#[cfg(test)]
mod tests;
