//! The snapshot-derived state both listeners read: the routing table (mesh service name →
//! endpoints, each with its [`EndpointSlot`], and the service's route rules, compiled by
//! [`rule`]) and the compiled policy engine, swapped atomically, together, whenever a newer
//! [`Snapshot`] arrives.
//!
//! Readers never block writers: a request loads the current `Arc<RouteTable>` once and
//! routes and authorizes against that version even if a new one is stored meanwhile, so a
//! policy update applies to the next request without restarting anything or touching open
//! connections. Because a table is only ever *replaced* by a newer snapshot, losing the
//! control plane leaves the last known table serving (static stability).

pub mod rule;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use api::contract::{ServiceRoute, Snapshot};
use arc_swap::ArcSwap;
use identity::SpiffeId;
use policy::Engine;

use crate::endpoint_slot::EndpointSlot;
use crate::resilience::EndpointKey;
use crate::resilience::budget::RetryBudget;
use crate::resilience::outlier::OutlierDetector;
use crate::resilience::rule_layers::RuleLayers;
use crate::route_classifier::RouteClassifier;
use rule::CompiledTraffic;

/// One version of the routing table and policies.
#[derive(Debug, Default)]
pub struct RouteTable {
    version: u64,
    /// In snapshot (name) order, the order of the classifier's indices.
    services: Vec<MeshService>,
    /// The services each identity serves: what an inbound request to that workload targets.
    backed_by: HashMap<SpiffeId, Vec<String>>,
    policies: Arc<Policies>,
    /// Request path → route template, for the `route` label of request metrics.
    classifier: RouteClassifier,
}

/// A snapshot's policies, compiled once per distinct policy hash.
#[derive(Debug)]
pub struct Policies {
    /// The snapshot's policy hash (names the policies in logs and tools).
    pub hash: String,
    /// The engine, or why the policies could not be compiled (then requests fail closed).
    pub engine: Result<Engine, String>,
}

impl Default for Policies {
    /// No policies: every inbound request is allowed, all egress is denied.
    fn default() -> Self {
        Policies {
            hash: String::new(),
            engine: Ok(Engine::default()),
        }
    }
}

impl RouteTable {
    /// Builds the table for `snapshot`. Service names are matched case-insensitively.
    pub fn new(snapshot: &Snapshot) -> Self {
        Self::next(snapshot, None)
    }

    /// Builds the table for `snapshot`, reusing `previous`'s compiled policies when the
    /// policy hash is unchanged (most snapshots only move endpoints).
    fn next(snapshot: &Snapshot, previous: Option<&RouteTable>) -> Self {
        let mut backed_by: HashMap<SpiffeId, Vec<String>> = HashMap::new();
        // Endpoints keep their load and ejection state across snapshots.
        let known: HashMap<&EndpointKey, &Arc<EndpointSlot>> = previous
            .into_iter()
            .flat_map(|p| &p.services)
            .flat_map(|s| &s.endpoints)
            .map(|slot| (slot.key(), slot))
            .collect();
        let classifier = RouteClassifier::compile(snapshot);
        let services = snapshot
            .services
            .iter()
            .map(|(name, route)| {
                let name = name.to_ascii_lowercase();
                for endpoint in &route.endpoints {
                    let names = backed_by.entry(endpoint.identity.clone()).or_default();
                    if !names.contains(&name) {
                        names.push(name.clone());
                    }
                }
                MeshService::new(name, route, previous, &known, &classifier)
            })
            .collect();
        RouteTable {
            version: snapshot.version,
            services,
            backed_by,
            policies: compile_policies(snapshot, previous.map(|p| &p.policies)),
            classifier,
        }
    }

    /// The snapshot version this table was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The mesh service `name` (compared case-insensitively), if it is one.
    #[cfg(test)]
    pub fn service(&self, name: &str) -> Option<&MeshService> {
        self.service_index(name).map(|i| &self.services[i])
    }

    /// The index of the mesh service `name` (compared case-insensitively), if it is one:
    /// what the outbound classification carries.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.classifier.index(name)
    }

    /// The mesh service at `index` (from [`RouteTable::service_index`] on this table).
    pub fn service_at(&self, index: usize) -> Option<&MeshService> {
        self.services.get(index)
    }

    /// The names of the mesh services (lower case, sorted).
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.services.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names
    }

    /// The mesh services (lower case) whose endpoints present `identity`: the services a
    /// request arriving at that workload's inbound listener can be for.
    pub fn services_of(&self, identity: &SpiffeId) -> &[String] {
        self.backed_by.get(identity).map_or(&[], Vec::as_slice)
    }

    /// The policies of this snapshot.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The route classifier of this snapshot (metric labels).
    pub fn classifier(&self) -> &RouteClassifier {
        &self.classifier
    }
}

/// The retry budget of service `name` in `previous`, when its configuration is unchanged:
/// a budget spans snapshots, or a failure storm with endpoint churn would reset it.
fn carried_budget(
    previous: Option<&RouteTable>,
    name: &str,
    policy: &api::contract::traffic::TrafficPolicy,
) -> Option<Arc<RetryBudget>> {
    let previous = previous?.service_at(previous?.service_index(name)?)?;
    (previous.traffic().policy().retry_budget == policy.retry_budget)
        .then(|| Arc::clone(&previous.retry_budget))
}

/// The outlier state of service `name` in `previous`, when its configuration is unchanged,
/// told the service's new endpoints (history is kept for those still there).
fn carried_outlier(
    previous: Option<&RouteTable>,
    name: &str,
    policy: &api::contract::traffic::TrafficPolicy,
    endpoints: &[Arc<EndpointSlot>],
) -> OnceLock<Arc<OutlierDetector>> {
    let carried = previous
        .and_then(|p| p.service_at(p.service_index(name)?))
        .filter(|p| p.traffic().policy().outlier_detection == policy.outlier_detection)
        .and_then(|p| p.outlier.get().cloned());
    let cell = OnceLock::new();
    if let Some(detector) = carried {
        detector.set_endpoints(endpoints.iter().map(|slot| slot.key()));
        let _ = cell.set(detector);
    }
    cell
}

/// Compiles the snapshot's policies, unless `previous` already holds the same hash. When they
/// do not compile (control validates them, so only a version skew can cause this) the previous
/// policies keep serving; without previous ones every request is refused.
fn compile_policies(snapshot: &Snapshot, previous: Option<&Arc<Policies>>) -> Arc<Policies> {
    if let Some(previous) = previous.filter(|p| p.hash == snapshot.policy_hash) {
        return Arc::clone(previous);
    }
    match Engine::compile(&snapshot.policies) {
        Ok(engine) => {
            tracing::info!(policy_hash = %snapshot.policy_hash, rules = engine.rule_count(), "policies applied");
            Arc::new(Policies {
                hash: snapshot.policy_hash.clone(),
                engine: Ok(engine),
            })
        }
        Err(error) => {
            tracing::error!(policy_hash = %snapshot.policy_hash, %error, "snapshot policies do not compile");
            previous.map(Arc::clone).unwrap_or_else(|| {
                Arc::new(Policies {
                    hash: snapshot.policy_hash.clone(),
                    engine: Err(error.to_string()),
                })
            })
        }
    }
}

/// A mesh service: its endpoints (with their balancing state) and its compiled routes.
pub struct MeshService {
    name: String,
    endpoints: Vec<Arc<EndpointSlot>>,
    traffic: CompiledTraffic,
    /// Shared by every route of the service (GEP-3388).
    retry_budget: Arc<RetryBudget>,
    /// Which endpoints are ejected; made by the balancer on first use (it holds the
    /// metrics), carried across snapshots.
    outlier: OnceLock<Arc<OutlierDetector>>,
    /// Per route rule, its timeouts and retry; made by the outbound stack on the rule's
    /// first request (they hold the metrics), for this snapshot only.
    rule_layers: Box<[OnceLock<Option<RuleLayers>>]>,
}

impl std::fmt::Debug for MeshService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshService")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .field("traffic", &self.traffic)
            .finish_non_exhaustive()
    }
}

impl MeshService {
    /// Service `name` (lower case) of `route`, keeping what `previous` (through `known`, its
    /// endpoints by key) knew about it: endpoint state, retry budget, outlier state.
    fn new(
        name: String,
        route: &ServiceRoute,
        previous: Option<&RouteTable>,
        known: &HashMap<&EndpointKey, &Arc<EndpointSlot>>,
        classifier: &RouteClassifier,
    ) -> MeshService {
        let endpoints: Vec<Arc<EndpointSlot>> = route
            .endpoints
            .iter()
            .map(|endpoint| {
                let key = EndpointKey {
                    addr: endpoint.addr,
                    identity: endpoint.identity.clone(),
                };
                match known.get(&key) {
                    Some(slot) => Arc::clone(slot),
                    None => Arc::new(EndpointSlot::new(key)),
                }
            })
            .collect();
        let traffic = CompiledTraffic::compile(&name, &route.traffic, classifier);
        let policy = &route.traffic.policy;
        let retry_budget = carried_budget(previous, &name, policy)
            .unwrap_or_else(|| Arc::new(RetryBudget::new(&policy.retry_budget)));
        let outlier = carried_outlier(previous, &name, policy, &endpoints);
        let rule_layers = (0..traffic.rule_count()).map(|_| OnceLock::new()).collect();
        MeshService {
            name,
            endpoints,
            traffic,
            retry_budget,
            outlier,
            rule_layers,
        }
    }

    /// The lower-case service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoints, in snapshot order; their state survives snapshots that keep them.
    pub fn endpoints(&self) -> &[Arc<EndpointSlot>] {
        &self.endpoints
    }

    /// The service's route rules and resiliency knobs, compiled.
    pub fn traffic(&self) -> &CompiledTraffic {
        &self.traffic
    }

    /// The service's outlier state, made with `make` the first time it is needed.
    pub fn outlier(&self, make: impl FnOnce() -> OutlierDetector) -> &OutlierDetector {
        self.outlier.get_or_init(|| {
            let detector = make();
            detector.set_endpoints(self.endpoints.iter().map(|slot| slot.key()));
            Arc::new(detector)
        })
    }

    /// The service's retry budget.
    pub fn retry_budget(&self) -> &Arc<RetryBudget> {
        &self.retry_budget
    }

    /// Rule `index`'s timeouts and retry, made with `make` on the rule's first request;
    /// `None` when the rule configures none (or there is no such rule).
    pub(crate) fn rule_layers(
        &self,
        index: usize,
        make: impl FnOnce() -> Option<RuleLayers>,
    ) -> Option<&RuleLayers> {
        self.rule_layers.get(index)?.get_or_init(make).as_ref()
    }

    /// Whether the service currently has no endpoints.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

/// The shared, atomically swapped current [`RouteTable`].
#[derive(Debug, Clone, Default)]
pub struct Routes {
    current: Arc<ArcSwap<RouteTable>>,
}

impl Routes {
    /// Routes serving `snapshot`.
    pub fn new(snapshot: &Snapshot) -> Self {
        Routes {
            current: Arc::new(ArcSwap::from_pointee(RouteTable::new(snapshot))),
        }
    }

    /// The current table.
    pub fn load(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    /// Replaces the table if `snapshot` is newer; returns whether it was.
    pub fn update(&self, snapshot: &Snapshot) -> bool {
        let current = self.current.load();
        if snapshot.version <= current.version {
            return false;
        }
        self.current
            .store(Arc::new(RouteTable::next(snapshot, Some(&current))));
        true
    }

    /// Replaces the table unconditionally (control restarted and its versions reset).
    pub fn replace(&self, snapshot: &Snapshot) {
        let current = self.current.load();
        self.current
            .store(Arc::new(RouteTable::next(snapshot, Some(&current))));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use api::contract::ServiceRoute;

    fn snapshot(version: u64, ports: &[u16]) -> Snapshot {
        let endpoints = ports
            .iter()
            .map(|port| api::contract::Endpoint {
                addr: ([127, 0, 0, 1], *port).into(),
                identity: "spiffe://meshwork.local/ns/default/sa/billing"
                    .parse()
                    .unwrap(),
            })
            .collect();
        let route = ServiceRoute {
            name: "Billing".to_owned(),
            endpoints,
            routes: Vec::new(),
            traffic: Default::default(),
        };
        Snapshot {
            version,
            services: [("Billing".to_owned(), route)].into(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn endpoints_keep_their_state_across_snapshots_that_keep_them() {
        let routes = Routes::new(&snapshot(1, &[1, 2]));
        let first = routes.load();
        let billing = first.service("BILLING").unwrap();
        assert_eq!(billing.name(), "billing");
        assert!(routes.update(&snapshot(2, &[2, 3])));
        let second = routes.load();
        let kept = &second.service("billing").unwrap().endpoints;
        assert!(Arc::ptr_eq(&kept[0], &billing.endpoints[1]), "port 2 kept");
        assert_eq!(kept[1].key().addr.port(), 3);
        assert!(second.service("reporting").is_none());
    }

    fn with_policies(version: u64, policies: serde_json::Value) -> Snapshot {
        let policies: policy::PolicySet = serde_json::from_value(policies).unwrap();
        Snapshot {
            policy_hash: policies.hash().to_string(),
            policies,
            ..snapshot(version, &[1])
        }
    }

    #[test]
    fn policies_are_compiled_once_per_hash_and_broken_ones_never_replace_good_ones() {
        let egress = |ports: &[u16]| serde_json::json!({"egress": {"default/e": {"to": [{"host": "example.com", "ports": ports}]}}});
        let routes = Routes::new(&with_policies(1, egress(&[443])));
        let first = Arc::clone(&routes.load().policies);
        assert_eq!(first.engine.as_ref().unwrap().rule_count(), 1);
        assert!(routes.update(&with_policies(2, egress(&[443]))));
        assert!(
            Arc::ptr_eq(&first, &routes.load().policies),
            "same hash: not recompiled"
        );
        assert!(routes.update(&with_policies(3, egress(&[443, 8443]))));
        let second = Arc::clone(&routes.load().policies);
        assert_ne!(second.hash, first.hash);

        let broken = with_policies(4, egress(&[0]));
        assert!(routes.update(&broken));
        assert!(
            Arc::ptr_eq(&second, &routes.load().policies),
            "previous policies keep serving"
        );
        assert!(
            RouteTable::new(&broken).policies().engine.is_err(),
            "no previous: fail closed"
        );
    }

    #[test]
    fn services_are_found_by_the_identity_of_their_endpoints() {
        let table = RouteTable::new(&snapshot(1, &[1, 2]));
        let billing = "spiffe://meshwork.local/ns/default/sa/billing"
            .parse()
            .unwrap();
        assert_eq!(table.services_of(&billing), ["billing"]);
        let store = "spiffe://meshwork.local/ns/default/sa/store"
            .parse()
            .unwrap();
        assert!(table.services_of(&store).is_empty());
    }

    #[test]
    fn a_rule_s_layers_are_made_once_per_snapshot() {
        let with_rule = |version| {
            let mut snapshot = snapshot(version, &[1]);
            let billing = snapshot.services.get_mut("Billing").unwrap();
            let rule = api::contract::traffic::RouteRule::default();
            billing.traffic.rules = vec![rule];
            snapshot
        };
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            None
        };
        let routes = Routes::new(&with_rule(1));
        let first = routes.load();
        let billing = first.service("billing").unwrap();
        assert!(billing.rule_layers(0, make).is_none());
        assert!(billing.rule_layers(0, make).is_none());
        assert_eq!(made.get(), 1, "made on the first request, then kept");
        assert!(billing.rule_layers(1, make).is_none(), "no rule 1");
        assert_eq!(made.get(), 1);
        assert!(routes.update(&with_rule(2)));
        let second = routes.load();
        second.service("billing").unwrap().rule_layers(0, make);
        assert_eq!(made.get(), 2, "a new snapshot's rule gets its own layers");
    }

    #[test]
    fn only_newer_snapshots_replace_the_table() {
        let routes = Routes::new(&snapshot(2, &[1]));
        assert!(!routes.update(&snapshot(2, &[])));
        assert!(!routes.update(&snapshot(1, &[])));
        assert!(!routes.load().service("billing").unwrap().is_empty());
        assert!(routes.update(&snapshot(3, &[])));
        assert!(routes.load().service("billing").unwrap().is_empty());
        assert_eq!(routes.load().version(), 3);
    }
}
