//! Seeing the running mesh (issue 13): `meshwork stat`, `top`, `edges` and `tap`, read from
//! every sidecar's admin listener (`api::contract::observe`, through `sidecar_admin`).
//! Columns and the `-o json` shapes are documented in docs/observe.md.

pub mod aggregate;
pub mod edges;
pub mod stat;
pub mod tap;
pub mod top;

pub use crate::columns::columns;

use std::path::Path;

use anyhow::bail;
use api::contract::observe::Stats;
use serde::Serialize;

use crate::sidecar_admin::{self, Sidecar, Skipped, Window};

/// How a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document (`tap`: one JSON object per line), shapes in docs/observe.md.
    Json,
}

/// A sidecar that did not answer, as `-o json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Unreachable {
    /// Its workload.
    pub workload: String,
    /// Its replica.
    pub replica: u16,
    /// Why.
    pub error: String,
}

/// What every sidecar of the mesh in `state_dir` says about `window`: the answers, and
/// the sidecars that did not answer (also warned about on stderr, as are the ready files
/// that name no sidecar to ask). An error when none answered.
pub fn fetch_stats(
    state_dir: &Path,
    window: Window,
) -> anyhow::Result<(Vec<Stats>, Vec<Unreachable>)> {
    let (stats, unreachable, skipped) = fetch_stats_quietly(state_dir, window)?;
    for s in &skipped {
        eprintln!("meshwork: workloads/{}: {}; skipped", s.file, s.why);
    }
    for u in &unreachable {
        eprintln!("meshwork: warning: {}", u.error);
    }
    Ok((stats, unreachable))
}

/// [`fetch_stats`] printing nothing: the answers, the sidecars that did not answer, and
/// the ready files that name no sidecar to ask.
pub fn fetch_stats_quietly(
    state_dir: &Path,
    window: Window,
) -> anyhow::Result<(Vec<Stats>, Vec<Unreachable>, Vec<Skipped>)> {
    let (sidecars, skipped) = sidecar_admin::discover_quietly(state_dir)?;
    let target = format!("/stats?window={}", window.secs());
    let answers =
        sidecar_admin::runtime()?.block_on(sidecar_admin::gather::<Stats>(&sidecars, &target));
    let (stats, unreachable) = split(answers)?;
    Ok((stats, unreachable, skipped))
}

/// Separates the answers from the failures; an error when nothing answered.
fn split<T>(
    answers: Vec<(Sidecar, anyhow::Result<T>)>,
) -> anyhow::Result<(Vec<T>, Vec<Unreachable>)> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (sidecar, answer) in answers {
        match answer {
            Ok(value) => ok.push(value),
            Err(e) => {
                failed.push(Unreachable {
                    workload: sidecar.workload,
                    replica: sidecar.replica,
                    error: format!("{e:#}"),
                });
            }
        }
    }
    if ok.is_empty() {
        bail!("no sidecar answered ({} asked)", failed.len());
    }
    Ok((ok, failed))
}

/// `98.50%`, or `-`.
pub fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

/// `12.3ms`, or `-`.
pub fn millis(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.2}ms"),
        Some(ms) => format!("{ms:.1}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_latencies_print_short() {
        assert_eq!(percent(Some(0.985)), "98.50%");
        assert_eq!(millis(Some(1.234)), "1.23ms");
        assert_eq!(millis(None), "-");
    }
}
