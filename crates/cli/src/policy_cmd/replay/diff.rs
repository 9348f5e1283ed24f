//! The replay itself: every recorded (service, caller, method, route template) decided by
//! the baseline (the policies the sidecars enforce now, or `--baseline DIR`) and by the
//! candidate, both through [`decide_template`]; only rows the two decide differently are
//! changes. The decision recorded at the time is not compared with: it may have depended on
//! what the record does not keep (headers, exact ids, raw paths), which would report changes
//! for an unchanged candidate.
//!
//! Limits, stated in docs/observe.md: see [`crate::policy_cmd::template`]; inbound
//! authorization only (egress policies are not recorded, so not replayed).

use std::collections::BTreeMap;

use api::contract::observe::DecisionRecord;
use policy::{DecisionReason, Engine};
use serde::Serialize;

use crate::policy_cmd::template::{TemplateRequest, decide_template};

/// What the record's rows have in common once merged over sidecars and replicas.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Row {
    /// The target service.
    pub service: String,
    /// The verified caller (not a SPIFFE ID: a caller without identity).
    pub caller: String,
    /// The method.
    pub method: String,
    /// The route template.
    pub route: String,
}

/// A row the candidate decides otherwise than the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The requests.
    #[serde(flatten)]
    pub row: Row,
    /// How many.
    pub count: u64,
    /// What the baseline decides, and by which policy, rule and matcher.
    pub baseline: DecisionReason,
    /// What the candidate decides, and by which policy, rule and matcher.
    pub candidate: DecisionReason,
}

/// A row that cannot be decided again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unknown {
    /// The requests.
    #[serde(flatten)]
    pub row: Row,
    /// How many.
    pub count: u64,
    /// Why it cannot be replayed.
    pub why: &'static str,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Replay {
    /// Allowed by the baseline, denied by the candidate.
    pub newly_denied: Vec<Change>,
    /// Denied by the baseline, allowed by the candidate.
    pub newly_allowed: Vec<Change>,
    /// Not decided again.
    pub unknown: Vec<Unknown>,
    /// Rows (after merging) both decide alike.
    pub unchanged_rows: usize,
    /// Their requests.
    pub unchanged_requests: u64,
}

/// The record's rows merged over sidecars, replicas and recorded decisions, with counts.
fn merge(records: &[DecisionRecord]) -> BTreeMap<Row, u64> {
    let mut merged: BTreeMap<Row, u64> = BTreeMap::new();
    for row in records.iter().flat_map(|r| &r.rows) {
        let key = Row {
            service: row.service.clone(),
            caller: row.caller.clone(),
            method: row.method.clone(),
            route: row.route.clone(),
        };
        *merged.entry(key).or_default() += row.count;
    }
    merged
}

/// Replays `records` against `baseline` and `candidate`.
pub fn replay(baseline: &Engine, candidate: &Engine, records: &[DecisionRecord]) -> Replay {
    let mut out = Replay::default();
    for (row, count) in merge(records) {
        let request = TemplateRequest {
            service: &row.service,
            caller: &row.caller,
            method: &row.method,
            route: &row.route,
        };
        let decided = decide_template(baseline, request)
            .and_then(|before| Ok((before, decide_template(candidate, request)?)));
        let (before, after) = match decided {
            Ok(both) => both,
            Err(why) => {
                out.unknown.push(Unknown { row, count, why });
                continue;
            }
        };
        let change = Change {
            row,
            count,
            baseline: before.reason,
            candidate: after.reason,
        };
        match (before.allowed, after.allowed) {
            (true, false) => out.newly_denied.push(change),
            (false, true) => out.newly_allowed.push(change),
            _ => {
                out.unchanged_rows += 1;
                out.unchanged_requests += count;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
