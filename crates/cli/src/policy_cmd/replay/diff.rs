//! The replay itself: every recorded (service, caller, method, route template) decided again
//! by the candidate engine, exactly as the sidecar's inbound authorization builds
//! `policy::Request`, and compared with what was decided then.
//!
//! Limits, stated in docs/observe.md: the record keeps route templates, never raw paths, so
//! a `{param}` segment is decided as the placeholder segment [`PLACEHOLDER`] (a policy
//! naming a specific id is judged on the placeholder); the record keeps no headers, so
//! header matchers see none; `[unmatched]` routes and `OTHER` methods cannot be decided
//! again and are reported as unknown.

use std::collections::BTreeMap;

use api::contract::observe::{Decision as Recorded, DecisionRecord};
use identity::SpiffeId;
use policy::{DecisionReason, Engine, NoHeaders, NormalizedPath, RouteTemplate, TemplateSegment};
use serde::Serialize;

/// The segment a `{param}` (or `{rest...}`) of a route template is decided as.
pub const PLACEHOLDER: &str = "_param_";

/// The route label of requests no template matched.
const UNMATCHED: &str = "[unmatched]";

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

/// A row the candidate decides otherwise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The requests.
    #[serde(flatten)]
    pub row: Row,
    /// How many.
    pub count: u64,
    /// What was decided then.
    pub was: Recorded,
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
    /// What was decided then.
    pub was: Recorded,
    /// Why it cannot be replayed.
    pub why: &'static str,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Replay {
    /// Allowed then, denied by the candidate.
    pub newly_denied: Vec<Change>,
    /// Denied then, allowed by the candidate.
    pub newly_allowed: Vec<Change>,
    /// Not decided again.
    pub unknown: Vec<Unknown>,
    /// Rows (after merging) decided as before.
    pub unchanged_rows: usize,
    /// Their requests.
    pub unchanged_requests: u64,
}

/// Replays `records` against `engine`.
pub fn replay(engine: &Engine, records: &[DecisionRecord]) -> Replay {
    let mut merged: BTreeMap<(Row, Recorded), u64> = BTreeMap::new();
    for row in records.iter().flat_map(|r| &r.rows) {
        let key = Row {
            service: row.service.clone(),
            caller: row.caller.clone(),
            method: row.method.clone(),
            route: row.route.clone(),
        };
        *merged.entry((key, row.decision)).or_default() += row.count;
    }
    let mut out = Replay::default();
    for ((row, was), count) in merged {
        let path = match (row.route.as_str(), row.method.as_str()) {
            (UNMATCHED, _) => Err("no route template matched: the raw path was not recorded"),
            (_, "OTHER") => Err("an extension method, recorded as OTHER"),
            (route, _) => placeholder_path(route).ok_or("not a route template"),
        };
        let path = match path {
            Ok(path) => path,
            Err(why) => {
                out.unknown.push(Unknown {
                    row,
                    count,
                    was,
                    why,
                });
                continue;
            }
        };
        let caller: Option<SpiffeId> = row.caller.parse().ok();
        let decision = engine.authorize(&policy::Request {
            target_service: &row.service,
            caller: caller.as_ref(),
            method: &row.method,
            path: &path,
            headers: &NoHeaders,
        });
        let change = |candidate| Change {
            row: row.clone(),
            count,
            was,
            candidate,
        };
        match (was, decision.allowed) {
            (Recorded::Allow, false) => out.newly_denied.push(change(decision.reason)),
            (Recorded::Deny, true) => out.newly_allowed.push(change(decision.reason)),
            _ => {
                out.unchanged_rows += 1;
                out.unchanged_requests += count;
            }
        }
    }
    out
}

/// `route` with every parameter replaced by [`PLACEHOLDER`], as a normalised path; `None`
/// when `route` is no route template.
pub fn placeholder_path(route: &str) -> Option<NormalizedPath> {
    let template: RouteTemplate = route.parse().ok()?;
    let mut path = String::new();
    for segment in template.segments() {
        path.push('/');
        path += match segment {
            TemplateSegment::Literal(literal) => literal,
            TemplateSegment::Param(_) | TemplateSegment::Rest(_) => PLACEHOLDER,
        };
    }
    if path.is_empty() {
        path.push('/');
    }
    NormalizedPath::parse(&path).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
