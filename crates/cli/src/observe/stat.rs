//! `meshwork stat [WORKLOAD|SERVICE] [--by route|peer] [--window 1m] [-o table|json]`:
//! success rate, requests per second and latency quantiles per workload (replicas summed),
//! route or peer, inbound and outbound, from every sidecar's `/stats`.

use std::path::PathBuf;
use std::process::ExitCode;

use api::contract::observe::{Direction, Stats};
use serde::Serialize;

use super::aggregate::{Aggregate, Group, GroupBy, GroupKey, aggregate};
use super::{Output, Unreachable, columns, fetch_stats, millis, percent};
use crate::sidecar_admin::Window;

/// Arguments of `meshwork stat`.
#[derive(clap::Args)]
pub struct StatArgs {
    /// Only this workload's sidecars and the rows naming this service.
    pub target: Option<String>,
    /// One row per route template or per peer instead of per workload.
    #[arg(long, value_enum, default_value = "workload")]
    pub by: GroupBy,
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

/// Prints the statistics once.
pub fn run(args: StatArgs) -> anyhow::Result<ExitCode> {
    let (stats, unreachable) = fetch_stats(&args.state_dir, args.window)?;
    let agg = aggregate(&stats, args.by, args.target.as_deref())?;
    match args.output {
        Output::Table if agg.groups.is_empty() => match &args.target {
            Some(name) => println!(
                "no requests in the last {}s by workload {name:?} or for service {name:?}",
                args.window.secs()
            ),
            None => println!("no requests in the last {}s", args.window.secs()),
        },
        Output::Table => print!("{}", table(&agg, args.by, &mut rows(&agg))),
        Output::Json => {
            let doc = StatJson::new(&args, &agg, &stats, unreachable);
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The groups with their keys, in key order.
pub fn rows(agg: &Aggregate) -> Vec<(&GroupKey, &Group)> {
    agg.groups.iter().collect()
}

/// The table of `rows` (in the order given), with a header line.
pub fn table(agg: &Aggregate, by: GroupBy, rows: &mut [(&GroupKey, &Group)]) -> String {
    let mut head = vec!["WORKLOAD", "DIRECTION"];
    match by {
        GroupBy::Workload => {}
        GroupBy::Route => head.extend(["SERVICE", "ROUTE"]),
        GroupBy::Peer => head.push("PEER"),
    }
    head.extend(["REQUESTS", "SUCCESS", "RPS", "P50", "P95", "P99"]);
    let mut cells = vec![head.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for (key, group) in rows.iter() {
        let mut row = vec![key.workload.clone(), direction(key.direction).to_owned()];
        match by {
            GroupBy::Workload => {}
            GroupBy::Route => {
                row.push(key.service.clone().unwrap_or_default());
                row.push(format!(
                    "{} {}",
                    key.method.as_deref().unwrap_or_default(),
                    key.route.as_deref().unwrap_or_default()
                ));
            }
            GroupBy::Peer => row.push(key.peer.clone().unwrap_or_default()),
        }
        row.push(group.requests.to_string());
        row.push(percent(group.success_rate()));
        row.push(format!("{:.2}", group.rps));
        for q in [0.5, 0.95, 0.99] {
            row.push(millis(agg.quantile_ms(group, q)));
        }
        cells.push(row);
    }
    if cells.len() == 1 {
        return "no requests in the window\n".to_owned();
    }
    columns(&cells)
}

fn direction(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// `meshwork stat -o json` (docs/observe.md).
#[derive(Serialize)]
struct StatJson {
    window_secs: u16,
    by: GroupBy,
    latency_quantiles: &'static str,
    rows: Vec<RowJson>,
    sidecars: Vec<SidecarJson>,
    unreachable: Vec<Unreachable>,
}

#[derive(Serialize)]
struct RowJson {
    #[serde(flatten)]
    key: GroupKey,
    replicas: usize,
    requests: u64,
    successes: u64,
    success_rate: Option<f64>,
    rps: f64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    mean_ms: Option<f64>,
}

#[derive(Serialize)]
struct SidecarJson {
    workload: String,
    replica: u16,
    spiffe_id: String,
    window_secs: f64,
}

impl StatJson {
    fn new(
        args: &StatArgs,
        agg: &Aggregate,
        stats: &[Stats],
        unreachable: Vec<Unreachable>,
    ) -> StatJson {
        StatJson {
            window_secs: args.window.secs(),
            by: args.by,
            latency_quantiles: "histogram_quantile: linear interpolation inside the bucket",
            rows: agg
                .groups
                .iter()
                .map(|(key, group)| RowJson {
                    key: key.clone(),
                    replicas: group.replicas.len(),
                    requests: group.requests,
                    successes: group.successes,
                    success_rate: group.success_rate(),
                    rps: group.rps,
                    p50_ms: agg.quantile_ms(group, 0.5),
                    p95_ms: agg.quantile_ms(group, 0.95),
                    p99_ms: agg.quantile_ms(group, 0.99),
                    mean_ms: (group.requests > 0)
                        .then(|| group.latency_sum_secs * 1000.0 / group.requests as f64),
                })
                .collect(),
            sidecars: stats
                .iter()
                .map(|s| SidecarJson {
                    workload: s.workload.clone(),
                    replica: s.replica,
                    spiffe_id: s.spiffe_id.clone(),
                    window_secs: s.window_secs,
                })
                .collect(),
            unreachable,
        }
    }
}
