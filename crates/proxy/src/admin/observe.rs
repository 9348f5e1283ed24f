//! `GET /stats` and `GET /decisions`: the request series of a window
//! ([`crate::sample_ring`]) in the contract's shapes ([`api::contract::observe`]).
//!
//! `/stats` has one row per label set (direction, service, route, method, peer, status)
//! that saw requests in the window: denials and other `403`s of one label set are one row,
//! as in `/metrics`, whose `denied` counts the policy denials among them (the sidecar's
//! own, or outbound a mesh peer's; never the app's `403`s). `/decisions` has the inbound
//! requests only, by service, caller (the verified peer), method, route template and
//! decision (deny: this sidecar's authorization refused it; everything else allow) — at most services × callers × methods ×
//! routes × 2 rows, all interned labels.

use std::collections::BTreeMap;
use std::time::Duration;

use api::contract::observe::{self, Decision, DecisionRecord, DecisionRow, Stats, StatsRow};

use crate::metrics::{BUCKETS, Direction, SLOTS, SeriesKey};
use crate::sample_ring::Windowed;

/// Who the sidecar is, for the answers' headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The workload it fronts.
    pub name: String,
    /// Its replica.
    pub replica: u16,
}

fn direction(direction: Direction) -> observe::Direction {
    match direction {
        Direction::Inbound => observe::Direction::Inbound,
        Direction::Outbound => observe::Direction::Outbound,
    }
}

/// The labels of a `/stats` row, in row order.
type RowKey = (
    observe::Direction,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u16,
);

fn row_key(key: &SeriesKey) -> RowKey {
    (
        direction(key.direction),
        key.service.as_str(),
        key.route.as_str(),
        key.method.as_str(),
        key.peer.as_str(),
        key.status.as_u16(),
    )
}

/// `/stats` for `windowed`.
pub fn stats(workload: &Workload, spiffe_id: String, windowed: &Windowed) -> Stats {
    let mut rows: BTreeMap<RowKey, ([u64; SLOTS], u64, u64)> = BTreeMap::new();
    for sample in &windowed.series {
        let entry = rows.entry(row_key(&sample.key));
        let (slots, sum, denied) = entry.or_insert(([0; SLOTS], 0, 0));
        for (into, add) in slots.iter_mut().zip(sample.slots) {
            *into += add;
        }
        *sum += sample.sum_nanos;
        if sample.key.denied {
            *denied += sample.requests();
        }
    }
    let rows = rows
        .into_iter()
        .map(
            |((direction, service, route, method, peer, status_code), (slots, sum, denied))| {
                StatsRow {
                    direction,
                    service: service.to_owned(),
                    route: route.to_owned(),
                    method: method.to_owned(),
                    peer: peer.to_owned(),
                    status_code,
                    requests: slots.iter().sum(),
                    denied,
                    buckets: slots.to_vec(),
                    latency_sum_secs: Duration::from_nanos(sum).as_secs_f64(),
                }
            },
        )
        .collect();
    Stats {
        workload: workload.name.clone(),
        replica: workload.replica,
        spiffe_id,
        window_secs: windowed.covered.as_secs_f64(),
        // The bounds as written in `le`; 500_000 ns / 1e9 is the same nearest double.
        bucket_bounds_secs: BUCKETS
            .iter()
            .map(|(_, nanos)| Duration::from_nanos(*nanos).as_secs_f64())
            .collect(),
        rows,
    }
}

/// `/decisions` for `windowed`.
pub fn decisions(workload: &Workload, windowed: &Windowed) -> DecisionRecord {
    let mut counts: BTreeMap<(&str, &str, &str, &str, Decision), u64> = BTreeMap::new();
    for sample in &windowed.series {
        let key = sample.key;
        if key.direction != Direction::Inbound {
            continue;
        }
        let decision = if key.denied {
            Decision::Deny
        } else {
            Decision::Allow
        };
        let row = (
            key.service.as_str(),
            key.peer.as_str(),
            key.method.as_str(),
            key.route.as_str(),
            decision,
        );
        *counts.entry(row).or_default() += sample.requests();
    }
    DecisionRecord {
        workload: workload.name.clone(),
        window_secs: windowed.covered.as_secs_f64(),
        rows: counts
            .into_iter()
            .map(
                |((service, caller, method, route, decision), count)| DecisionRow {
                    service: service.to_owned(),
                    caller: caller.to_owned(),
                    method: method.to_owned(),
                    route: route.to_owned(),
                    decision,
                    count,
                },
            )
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::label::{Label, MethodLabel};
    use crate::metrics::SeriesSample;

    fn sample(status: u16, denied: bool, requests: u64, direction: Direction) -> SeriesSample {
        let mut slots = [0; SLOTS];
        slots[1] = requests;
        SeriesSample {
            key: SeriesKey {
                direction,
                service: Label::intern("billing"),
                route: Label::intern("/charges/{id}"),
                method: MethodLabel::Post,
                status: StatusCode::from_u16(status).unwrap(),
                peer: Label::intern("spiffe://meshwork.local/ns/default/sa/store"),
                denied,
            },
            slots,
            sum_nanos: requests * 800_000,
        }
    }

    #[test]
    fn denials_are_decisions_and_one_stats_row_with_other_403s() {
        let windowed = Windowed {
            covered: Duration::from_secs(30),
            series: vec![
                sample(403, true, 2, Direction::Inbound),
                sample(403, false, 1, Direction::Inbound),
                sample(201, false, 4, Direction::Inbound),
                sample(403, true, 7, Direction::Outbound),
            ],
        };
        let workload = Workload {
            name: "billing".to_owned(),
            replica: 0,
        };
        let stats = stats(&workload, "id".to_owned(), &windowed);
        assert_eq!(stats.window_secs, 30.0);
        assert_eq!(stats.bucket_bounds_secs[0], 0.0005);
        assert_eq!(
            stats.bucket_bounds_secs.len() + 1,
            stats.rows[0].buckets.len()
        );
        let forbidden: Vec<_> = stats.rows.iter().filter(|r| r.status_code == 403).collect();
        assert_eq!(forbidden.len(), 2, "one per direction: {stats:?}");
        assert_eq!(forbidden[0].requests, 3);
        assert_eq!(forbidden[0].denied, 2, "the app's own 403 is no denial");
        assert_eq!(forbidden[1].denied, 7);
        assert!(
            stats
                .rows
                .iter()
                .all(|r| r.status_code == 403 || r.denied == 0)
        );
        assert_eq!(forbidden[0].buckets[1], 3);
        assert!((forbidden[0].latency_sum_secs - 0.0024).abs() < 1e-12);

        let decided = decisions(&workload, &windowed);
        let counts: Vec<_> = decided.rows.iter().map(|r| (r.decision, r.count)).collect();
        assert_eq!(counts, [(Decision::Allow, 5), (Decision::Deny, 2)]);
        assert_eq!(decided.rows[0].route, "/charges/{id}");
        assert_eq!(
            decided.rows[0].caller,
            "spiffe://meshwork.local/ns/default/sa/store"
        );
    }
}
