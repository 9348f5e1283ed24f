//! Adding up the sidecars' `/stats` answers: rows grouped per workload (replicas summed),
//! per route or per peer, with success rate, requests per second and latency quantiles from
//! the summed histograms.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;
use api::contract::observe::{Direction, Stats, StatsRow};
use serde::Serialize;

/// What one output row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One row per workload and direction (the default).
    Workload,
    /// One row per workload, direction, service, method and route template.
    Route,
    /// One row per workload, direction and peer (SPIFFE ID).
    Peer,
}

/// What rows of one group share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    /// The workload whose sidecars saw the requests.
    pub workload: String,
    /// The listener.
    pub direction: Direction,
    /// `--by route`: the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// `--by route`: the method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `--by route`: the route template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `--by peer`: the peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

impl GroupKey {
    fn of(workload: &str, row: &StatsRow, by: GroupBy) -> GroupKey {
        let route = by == GroupBy::Route;
        GroupKey {
            workload: workload.to_owned(),
            direction: row.direction,
            service: route.then(|| row.service.clone()),
            method: route.then(|| row.method.clone()),
            route: route.then(|| row.route.clone()),
            peer: (by == GroupBy::Peer).then(|| row.peer.clone()),
        }
    }
}

/// The requests of one group, summed over its sidecars.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// The sidecars (replicas) that saw some of them.
    pub replicas: BTreeSet<u16>,
    /// How many.
    pub requests: u64,
    /// How many got a status below 500.
    pub successes: u64,
    /// Requests per second: each sidecar's requests over the window it covered, summed.
    pub rps: f64,
    /// The summed latency histogram (not cumulative; the `+Inf` bucket last).
    pub buckets: Vec<u64>,
    /// Summed latencies, in seconds.
    pub latency_sum_secs: f64,
}

impl Group {
    /// Non-5xx over all; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.successes as f64 / self.requests as f64)
    }
}

/// Every group, and the bucket bounds their histograms share.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    /// Upper bounds of the latency buckets, in seconds (`+Inf` implicit).
    pub bounds: Vec<f64>,
    /// The groups, in key order.
    pub groups: BTreeMap<GroupKey, Group>,
}

impl Aggregate {
    /// Latency quantile `q` of `group`, in milliseconds (see [`quantile`]).
    pub fn quantile_ms(&self, group: &Group, q: f64) -> Option<f64> {
        quantile(q, &self.bounds, &group.buckets).map(|secs| secs * 1000.0)
    }
}

/// Sums `stats` into groups. `only` keeps the rows of that workload's sidecars and the rows
/// naming that service (its callers' outbound rows and its own inbound ones).
pub fn aggregate(stats: &[Stats], by: GroupBy, only: Option<&str>) -> anyhow::Result<Aggregate> {
    let mut aggregate = Aggregate::default();
    let Some(first) = stats.first() else {
        return Ok(aggregate);
    };
    aggregate.bounds.clone_from(&first.bucket_bounds_secs);
    for sidecar in stats {
        let name = format!("{} replica {}", sidecar.workload, sidecar.replica);
        if sidecar.bucket_bounds_secs != aggregate.bounds {
            bail!(
                "the sidecar of {name} uses other latency buckets than the sidecar of {} \
                 replica {}: are they different meshwork versions?",
                first.workload,
                first.replica
            );
        }
        for row in &sidecar.rows {
            if only.is_some_and(|o| o != sidecar.workload && o != row.service) {
                continue;
            }
            if row.buckets.len() != aggregate.bounds.len() + 1 {
                bail!(
                    "the sidecar of {name} sent a row with {} latency buckets for {} bounds",
                    row.buckets.len(),
                    aggregate.bounds.len()
                );
            }
            let group = aggregate
                .groups
                .entry(GroupKey::of(&sidecar.workload, row, by))
                .or_default();
            add(group, sidecar, row);
        }
    }
    Ok(aggregate)
}

fn add(group: &mut Group, sidecar: &Stats, row: &StatsRow) {
    group.replicas.insert(sidecar.replica);
    group.requests += row.requests;
    if row.status_code < 500 {
        group.successes += row.requests;
    }
    if sidecar.window_secs > 0.0 {
        group.rps += row.requests as f64 / sidecar.window_secs;
    }
    if group.buckets.len() < row.buckets.len() {
        group.buckets.resize(row.buckets.len(), 0);
    }
    for (sum, n) in group.buckets.iter_mut().zip(&row.buckets) {
        *sum += n;
    }
    group.latency_sum_secs += row.latency_sum_secs;
}

/// The `q`-quantile of a histogram, as Prometheus' `histogram_quantile` computes it: find
/// the bucket the `q × total`-th observation falls in and interpolate linearly between its
/// lower and upper bound (the lowest bucket starts at 0); an observation in the `+Inf`
/// bucket gives the highest finite bound. `buckets` are per-bucket counts (not
/// cumulative), `+Inf` last. `None` without observations or finite bounds.
pub fn quantile(q: f64, bounds: &[f64], buckets: &[u64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 || bounds.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        let Some(&upper) = bounds.get(i) else {
            // The +Inf bucket: nothing better than the highest finite bound.
            return bounds.last().copied();
        };
        if (below + count) as f64 >= rank && count > 0 {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            if i == 0 && upper <= 0.0 {
                return Some(upper);
            }
            return Some(lower + (upper - lower) * (rank - below as f64) / count as f64);
        }
        below += count;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests;
