//! The routing table the outbound listener reads: mesh service name → endpoints,
//! swapped atomically whenever a newer [`Snapshot`] arrives.
//!
//! Readers never block writers: a request loads the current `Arc<RouteTable>` once and
//! routes against that version even if a new one is stored meanwhile. Because a table is
//! only ever *replaced* by a newer snapshot, losing the control plane leaves the last
//! known table serving (static stability).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use api::contract::{Endpoint, Snapshot};
use arc_swap::ArcSwap;

/// One version of the routing table.
#[derive(Debug, Default)]
pub struct RouteTable {
    version: u64,
    services: HashMap<String, ServiceEndpoints>,
}

impl RouteTable {
    /// Builds the table for `snapshot`. Service names are matched case-insensitively.
    pub fn new(snapshot: &Snapshot) -> Self {
        let services = snapshot
            .services
            .iter()
            .map(|(name, route)| {
                let endpoints = ServiceEndpoints {
                    endpoints: route.endpoints.clone(),
                    cursor: AtomicUsize::new(0),
                };
                (name.to_ascii_lowercase(), endpoints)
            })
            .collect();
        RouteTable {
            version: snapshot.version,
            services,
        }
    }

    /// The snapshot version this table was built from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The endpoints of the mesh service `name`, if it is one.
    pub fn service(&self, name: &str) -> Option<&ServiceEndpoints> {
        self.services.get(name)
    }
}

/// A mesh service's endpoints with a round-robin cursor.
#[derive(Debug)]
pub struct ServiceEndpoints {
    endpoints: Vec<Endpoint>,
    cursor: AtomicUsize,
}

impl ServiceEndpoints {
    /// Every endpoint once, starting at the next round-robin position: callers try them
    /// in order, so a dead endpoint costs one failed connect, not a failed request.
    pub fn round_robin(&self) -> impl Iterator<Item = &Endpoint> {
        let len = self.endpoints.len();
        // Relaxed: the cursor only spreads load; no other memory depends on it.
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len).map(move |i| &self.endpoints[(start + i) % len])
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
        if snapshot.version <= self.current.load().version {
            return false;
        }
        self.current.store(Arc::new(RouteTable::new(snapshot)));
        true
    }

    /// Replaces the table unconditionally (control restarted and its versions reset).
    pub fn replace(&self, snapshot: &Snapshot) {
        self.current.store(Arc::new(RouteTable::new(snapshot)));
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
            .map(|port| Endpoint {
                addr: ([127, 0, 0, 1], *port).into(),
                identity: "spiffe://meshwork.local/ns/default/sa/billing"
                    .parse()
                    .unwrap(),
            })
            .collect();
        let route = ServiceRoute {
            name: "Billing".to_owned(),
            endpoints,
        };
        Snapshot {
            version,
            services: [("Billing".to_owned(), route)].into(),
        }
    }

    #[test]
    fn round_robin_visits_every_endpoint_starting_at_the_cursor() {
        let table = RouteTable::new(&snapshot(1, &[1, 2, 3]));
        let billing = table.service("billing").unwrap();
        let order =
            |s: &ServiceEndpoints| -> Vec<u16> { s.round_robin().map(|e| e.addr.port()).collect() };
        assert_eq!(order(billing), [1, 2, 3]);
        assert_eq!(order(billing), [2, 3, 1]);
        assert_eq!(order(billing), [3, 1, 2]);
        assert!(table.service("reporting").is_none());
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
