//! `meshwork edges [-o json]`: who calls whom. Outbound rows name the caller (the sidecar's
//! own SPIFFE ID) and the callee (the peer, or `[egress]`); inbound rows name the caller
//! the sidecar verified by mTLS and the callee (itself). Both views of one edge are merged:
//! counts come from the caller's side when its sidecar reports the edge (what the caller
//! experienced, retries and local refusals included), else from the callee's.
//!
//! Requests to a mesh service that no replica answered (the caller's sidecar answered 503
//! itself: its outbound rows name no peer) are an edge to `SERVICE [no answer]`, so the
//! caller's failures are not dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use api::contract::observe::{Direction, Stats, StatsRow};
use serde::Serialize;

use super::{Output, Unreachable, columns, fetch_stats, percent};
use crate::sidecar_admin::Window;

/// What the stats rows call an egress destination (outside the mesh).
const EGRESS: &str = "[egress]";
/// What the stats rows call no service, or no peer.
const NONE: &str = "[none]";

/// Arguments of `meshwork edges`.
#[derive(clap::Args)]
pub struct EdgesArgs {
    /// How far back: whole seconds from 1s to 10m.
    #[arg(long, default_value = "1m")]
    pub window: Window,
    /// `table` or `json` (docs/observe.md).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// The state directory of the running `meshwork up`.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
}

/// Which sidecar's counts an edge reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeenBy {
    /// The caller's (outbound rows).
    Caller,
    /// The callee's (inbound rows), when the caller's sidecar did not report the edge.
    Callee,
}

/// One caller → callee edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// The caller's SPIFFE ID.
    pub caller: String,
    /// The callee's SPIFFE ID, or `[egress]`.
    pub callee: String,
    /// Whether the traffic was mesh mTLS (both ends SPIFFE IDs).
    pub mtls: bool,
    /// Requests in the window.
    pub requests: u64,
    /// Those with a status below 500.
    pub successes: u64,
    /// `successes / requests`.
    pub success_rate: f64,
    /// Whose counts these are.
    pub seen_by: SeenBy,
}

#[derive(Default)]
struct Views {
    outbound: (u64, u64),
    inbound: (u64, u64),
}

/// The edges the `stats` rows show, sorted by caller and callee.
pub fn edges(stats: &[Stats]) -> Vec<Edge> {
    let mut views: BTreeMap<(String, String), Views> = BTreeMap::new();
    for sidecar in stats {
        for row in &sidecar.rows {
            let Some((pair, direction)) = edge_of(sidecar, row) else {
                continue;
            };
            let view = views.entry(pair).or_default();
            let counts = match direction {
                Direction::Outbound => &mut view.outbound,
                Direction::Inbound => &mut view.inbound,
            };
            counts.0 += row.requests;
            if row.status_code < 500 {
                counts.1 += row.requests;
            }
        }
    }
    views
        .into_iter()
        .map(|((caller, callee), view)| {
            let (seen_by, (requests, successes)) = match view.outbound.0 {
                0 => (SeenBy::Callee, view.inbound),
                _ => (SeenBy::Caller, view.outbound),
            };
            Edge {
                mtls: is_spiffe(&caller) && is_spiffe(&callee),
                caller,
                callee,
                requests,
                successes,
                success_rate: successes as f64 / requests.max(1) as f64,
                seen_by,
            }
        })
        .filter(|e| e.requests > 0)
        .collect()
}

/// The (caller, callee) `row` of `sidecar` counts for, and whose view it is; `None` for an
/// outbound row to no service (`[none]`: an unknown service, refused before any peer).
fn edge_of(sidecar: &Stats, row: &StatsRow) -> Option<((String, String), Direction)> {
    let own = sidecar.spiffe_id.clone();
    match row.direction {
        Direction::Inbound => Some(((row.peer.clone(), own), Direction::Inbound)),
        Direction::Outbound if row.service == EGRESS => {
            Some(((own, EGRESS.to_owned()), Direction::Outbound))
        }
        Direction::Outbound if row.service == NONE => None,
        Direction::Outbound if row.peer == NONE => Some((
            (own, format!("{} [no answer]", row.service)),
            Direction::Outbound,
        )),
        Direction::Outbound => Some(((own, row.peer.clone()), Direction::Outbound)),
    }
}

fn is_spiffe(id: &str) -> bool {
    id.starts_with("spiffe://")
}

/// Prints the edges of the window.
pub fn run(args: EdgesArgs) -> anyhow::Result<ExitCode> {
    let (stats, unreachable) = fetch_stats(&args.state_dir, args.window)?;
    let edges = edges(&stats);
    match args.output {
        Output::Json => {
            let doc = EdgesJson {
                window_secs: args.window.secs(),
                edges,
                unreachable,
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Table if edges.is_empty() => println!("no requests in the window"),
        Output::Table => {
            let mut cells = vec![
                ["CALLER", "CALLEE", "MTLS", "REQUESTS", "SUCCESS"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for e in &edges {
                cells.push(vec![
                    e.caller.clone(),
                    e.callee.clone(),
                    if e.mtls { "yes" } else { "no" }.to_owned(),
                    e.requests.to_string(),
                    percent(Some(e.success_rate)),
                ]);
            }
            print!("{}", columns(&cells));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `meshwork edges -o json` (docs/observe.md).
#[derive(Serialize)]
struct EdgesJson {
    window_secs: u16,
    edges: Vec<Edge>,
    unreachable: Vec<Unreachable>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "spiffe://meshwork.local/ns/default/sa";

    fn row(direction: Direction, service: &str, peer: &str, status: u16, n: u64) -> StatsRow {
        StatsRow {
            direction,
            service: service.to_owned(),
            route: "/charges".to_owned(),
            method: "POST".to_owned(),
            peer: peer.to_owned(),
            status_code: status,
            requests: n,
            denied: 0,
            buckets: vec![n],
            latency_sum_secs: 0.0,
        }
    }

    fn sidecar(workload: &str, rows: Vec<StatsRow>) -> Stats {
        Stats {
            workload: workload.to_owned(),
            replica: 0,
            spiffe_id: format!("{TD}/{workload}"),
            window_secs: 60.0,
            bucket_bounds_secs: Vec::new(),
            rows,
        }
    }

    #[test]
    fn both_views_merge_into_one_edge_counted_by_the_caller() {
        let (store, billing, reporting) = (
            format!("{TD}/store"),
            format!("{TD}/billing"),
            format!("{TD}/reporting"),
        );
        let stats = [
            sidecar(
                "store",
                vec![
                    row(Direction::Outbound, "billing", &billing, 201, 4),
                    row(Direction::Outbound, "billing", &billing, 503, 1),
                    row(Direction::Outbound, "[none]", "[none]", 404, 2),
                    // No replica of billing answered: the local sidecar's 503s.
                    row(Direction::Outbound, "billing", "[none]", 503, 3),
                ],
            ),
            sidecar(
                "billing",
                vec![
                    row(Direction::Inbound, "billing", &store, 201, 4),
                    row(Direction::Inbound, "billing", &reporting, 403, 2),
                    row(Direction::Outbound, EGRESS, "[none]", 200, 3),
                ],
            ),
        ];
        let edges = edges(&stats);
        let summary: Vec<(&str, &str, bool, u64, u64, SeenBy)> = edges
            .iter()
            .map(|e| {
                let (caller, callee) = (e.caller.as_str(), e.callee.as_str());
                (caller, callee, e.mtls, e.requests, e.successes, e.seen_by)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (billing.as_str(), EGRESS, false, 3, 3, SeenBy::Caller),
                (
                    reporting.as_str(),
                    billing.as_str(),
                    true,
                    2,
                    2,
                    SeenBy::Callee
                ),
                (
                    store.as_str(),
                    "billing [no answer]",
                    false,
                    3,
                    0,
                    SeenBy::Caller
                ),
                (store.as_str(), billing.as_str(), true, 5, 4, SeenBy::Caller),
            ]
        );
        assert!((edges[3].success_rate - 0.8).abs() < 1e-12);
    }
}
