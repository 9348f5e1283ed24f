//! The sidecars' `/stats` of one window, added up into what the dashboard shows: the
//! service graph (caller → callee edges, from the callers' outbound rows: what the caller
//! got, denials included) and golden metrics per service and route (from the callees'
//! inbound rows, every replica added).
//!
//! Success rate is the share of answers that are not 5xx (a policy's 403 is the mesh
//! working as told: it is counted apart, as `denied`). Latency quantiles are estimated from
//! the merged histograms like Prometheus' `histogram_quantile` (linear within a bucket; the
//! `+Inf` bucket reports the last finite bound).

use std::collections::BTreeMap;

use api::contract::observe::{Direction, Stats, StatsRow};
use serde::Serialize;

use crate::observe::aggregate::quantile;
use crate::sidecar_admin::Sidecar;

/// Outbound rows of these pseudo-services name no mesh service.
const NO_SERVICE: &str = "[none]";
/// Outbound rows to destinations outside the mesh.
const EGRESS: &str = "[egress]";

/// Requests added up over rows (and sidecars) of one window.
#[derive(Debug, Clone, Default)]
struct Tally {
    requests: u64,
    server_errors: u64,
    denied: u64,
    rps: f64,
    bounds: Vec<f64>,
    buckets: Vec<u64>,
    /// Some rows came with other bucket bounds: no quantiles.
    mixed_bounds: bool,
}

impl Tally {
    fn add(&mut self, row: &StatsRow, stats: &Stats) {
        self.requests += row.requests;
        if row.status_code >= 500 {
            self.server_errors += row.requests;
        }
        // A policy's refusals, as the sidecar counted them: never the app's own 403s.
        self.denied += row.denied;
        if stats.window_secs > 0.0 {
            self.rps += row.requests as f64 / stats.window_secs;
        }
        if self.buckets.is_empty() && !self.mixed_bounds {
            self.bounds = stats.bucket_bounds_secs.clone();
            self.buckets = vec![0; self.bounds.len() + 1];
        }
        if self.bounds != stats.bucket_bounds_secs || row.buckets.len() != self.buckets.len() {
            self.mixed_bounds = true;
            return;
        }
        for (sum, n) in self.buckets.iter_mut().zip(&row.buckets) {
            *sum += n;
        }
    }

    fn golden(&self) -> Golden {
        let quantile = |q| (!self.mixed_bounds).then(|| quantile(q, &self.bounds, &self.buckets));
        let ms = |q| quantile(q).flatten().map(|secs| secs * 1000.0);
        Golden {
            requests: self.requests,
            rps: self.rps,
            success_rate: (self.requests > 0)
                .then(|| (self.requests - self.server_errors) as f64 / self.requests as f64),
            denied: self.denied,
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }
    }
}

/// Success rate, traffic and latency of a set of requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Golden {
    /// Requests in the window.
    pub requests: u64,
    /// Requests per second over the window.
    pub rps: f64,
    /// Share of answers that were not 5xx (`None` without requests).
    pub success_rate: Option<f64>,
    /// Requests a policy refused (`StatsRow::denied`: the app's own 403s are not counted).
    pub denied: u64,
    /// Latency quantiles, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

/// A node of the service graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// A workload's or service's name, or `egress`.
    pub name: String,
    /// `workload` (runs sidecars), `service` (only called), or `egress`.
    pub kind: &'static str,
    /// How many sidecars serve it.
    pub replicas: usize,
}

/// Calls from one workload to one service (or out of the mesh), as the caller saw them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// The calling workload.
    pub from: String,
    /// The called service, or `egress`.
    pub to: String,
    /// Their metrics.
    #[serde(flatten)]
    pub metrics: Golden,
}

/// `/api/graph`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    /// Workloads and called services, sorted by name.
    pub nodes: Vec<Node>,
    /// Caller → callee, sorted.
    pub edges: Vec<Edge>,
}

/// The service graph of one window: a node per workload of `sidecars` (whether or not it
/// answered), edges from every sidecar's stats.
pub fn graph(sidecars: &[Sidecar], stats: &[Stats]) -> Graph {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for s in sidecars {
        nodes
            .entry(s.workload.clone())
            .or_insert_with(|| Node {
                name: s.workload.clone(),
                kind: "workload",
                replicas: 0,
            })
            .replicas += 1;
    }
    let mut edges: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for s in stats {
        for row in s.rows.iter().filter(|r| r.direction == Direction::Outbound) {
            let to = match row.service.as_str() {
                NO_SERVICE => continue,
                EGRESS => "egress".to_owned(),
                service => service.to_owned(),
            };
            edges
                .entry((s.workload.clone(), to))
                .or_default()
                .add(row, s);
        }
    }
    for (_, to) in edges.keys() {
        nodes.entry(to.clone()).or_insert_with(|| Node {
            name: to.clone(),
            kind: if to == "egress" { "egress" } else { "service" },
            replicas: 0,
        });
    }
    Graph {
        nodes: nodes.into_values().collect(),
        edges: edges
            .into_iter()
            .map(|((from, to), tally)| Edge {
                from,
                to,
                metrics: tally.golden(),
            })
            .collect(),
    }
}

/// One route of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteMetrics {
    /// The method.
    pub method: String,
    /// The route template, or `[unmatched]`.
    pub route: String,
    /// Its metrics.
    #[serde(flatten)]
    pub metrics: Golden,
}

/// `/api/services`: one service as its sidecars served it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceMetrics {
    /// The service.
    pub service: String,
    /// All its inbound requests.
    #[serde(flatten)]
    pub metrics: Golden,
    /// By method and route, sorted.
    pub routes: Vec<RouteMetrics>,
}

/// A service's requests by method and route template.
type ByRoute = BTreeMap<(String, String), Tally>;

/// Golden metrics per service and route, from every sidecar's inbound rows.
pub fn services(stats: &[Stats]) -> Vec<ServiceMetrics> {
    let mut by_service: BTreeMap<String, (Tally, ByRoute)> = BTreeMap::new();
    for s in stats {
        for row in s.rows.iter().filter(|r| r.direction == Direction::Inbound) {
            let (all, routes) = by_service.entry(row.service.clone()).or_default();
            all.add(row, s);
            routes
                .entry((row.method.clone(), row.route.clone()))
                .or_default()
                .add(row, s);
        }
    }
    by_service
        .into_iter()
        .map(|(service, (all, routes))| ServiceMetrics {
            service,
            metrics: all.golden(),
            routes: routes
                .into_iter()
                .map(|((method, route), t)| RouteMetrics {
                    method,
                    route,
                    metrics: t.golden(),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.005, 0.05, 0.5];

    pub fn row(
        dir: Direction,
        service: &str,
        route: &str,
        status: u16,
        buckets: [u64; 4],
    ) -> StatsRow {
        StatsRow {
            direction: dir,
            service: service.to_owned(),
            route: route.to_owned(),
            method: "POST".to_owned(),
            peer: "spiffe://meshwork.local/ns/default/sa/x".to_owned(),
            status_code: status,
            requests: buckets.iter().sum(),
            denied: 0,
            buckets: buckets.to_vec(),
            latency_sum_secs: 0.0,
        }
    }

    pub fn stats(workload: &str, replica: u16, rows: Vec<StatsRow>) -> Stats {
        Stats {
            workload: workload.to_owned(),
            replica,
            spiffe_id: format!("spiffe://meshwork.local/ns/default/sa/{workload}"),
            window_secs: 10.0,
            bucket_bounds_secs: BOUNDS.to_vec(),
            rows,
        }
    }

    #[test]
    fn edges_come_from_callers_outbound_rows() {
        use Direction::{Inbound, Outbound};
        let all = [
            stats(
                "store",
                0,
                vec![
                    row(Outbound, "billing", "/charges", 201, [8, 0, 0, 0]),
                    row(Outbound, "billing", "/charges", 503, [0, 2, 0, 0]),
                    row(Outbound, "[none]", "[unmatched]", 404, [1, 0, 0, 0]),
                ],
            ),
            stats(
                "reporting",
                0,
                vec![
                    StatsRow {
                        denied: 5,
                        ..row(Outbound, "billing", "/charges", 403, [5, 0, 0, 0])
                    },
                    // billing's own 403s (a charge of someone else's): no denial.
                    row(Outbound, "billing", "/charges/{id}", 403, [2, 0, 0, 0]),
                ],
            ),
            stats(
                "billing",
                0,
                vec![row(Inbound, "billing", "/charges", 201, [4, 0, 0, 0])],
            ),
            stats(
                "billing",
                1,
                vec![row(Outbound, "[egress]", "[none]", 200, [0, 0, 1, 0])],
            ),
        ];
        let sidecars: Vec<Sidecar> = all
            .iter()
            .map(|s| Sidecar {
                workload: s.workload.clone(),
                replica: s.replica,
                spiffe_id: s.spiffe_id.clone(),
                admin: "127.0.0.1:1".parse().unwrap(),
                label: s.workload.clone(),
            })
            .collect();
        let g = graph(&sidecars, &all);
        let names: Vec<(&str, &str, usize)> = g
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.kind, n.replicas))
            .collect();
        assert_eq!(
            names,
            [
                ("billing", "workload", 2),
                ("egress", "egress", 0),
                ("reporting", "workload", 1),
                ("store", "workload", 1)
            ]
        );
        let edge = |from: &str, to: &str| {
            g.edges
                .iter()
                .find(|e| e.from == from && e.to == to)
                .unwrap()
                .metrics
                .clone()
        };
        let store = edge("store", "billing");
        assert_eq!((store.requests, store.denied), (10, 0));
        assert_eq!(store.success_rate, Some(0.8));
        assert!((store.rps - 1.0).abs() < 1e-9);
        let reporting = edge("reporting", "billing");
        assert_eq!(
            (reporting.success_rate, reporting.requests, reporting.denied),
            (Some(1.0), 7, 5)
        );
        assert_eq!(edge("billing", "egress").requests, 1);
        assert_eq!(g.edges.len(), 3, "no edge to [none]: {:?}", g.edges);
    }

    #[test]
    fn services_add_up_replicas_by_route() {
        use Direction::Inbound;
        let all = [
            stats(
                "billing",
                0,
                vec![row(Inbound, "billing", "/charges", 201, [3, 1, 0, 0])],
            ),
            stats(
                "billing",
                1,
                vec![
                    row(Inbound, "billing", "/charges", 201, [2, 0, 0, 0]),
                    row(Inbound, "billing", "/healthz", 200, [1, 0, 0, 0]),
                ],
            ),
        ];
        let s = services(&all);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].metrics.requests, 7);
        let routes: Vec<(&str, u64)> = s[0]
            .routes
            .iter()
            .map(|r| (r.route.as_str(), r.metrics.requests))
            .collect();
        assert_eq!(routes, [("/charges", 6), ("/healthz", 1)]);
        assert!((s[0].metrics.rps - 0.7).abs() < 1e-9);
    }

    #[test]
    fn different_bucket_bounds_give_no_quantiles_but_still_count() {
        use Direction::Inbound;
        let mut other = stats(
            "billing",
            1,
            vec![row(Inbound, "billing", "/charges", 201, [1, 0, 0, 0])],
        );
        other.bucket_bounds_secs = vec![0.001, 0.01, 0.1];
        let all = [
            stats(
                "billing",
                0,
                vec![row(Inbound, "billing", "/charges", 201, [1, 0, 0, 0])],
            ),
            other,
        ];
        let s = services(&all);
        assert_eq!((s[0].metrics.requests, s[0].metrics.p50_ms), (2, None));
    }
}
