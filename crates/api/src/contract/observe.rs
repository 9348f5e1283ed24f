//! The sidecar admin listener's observation endpoints (issue 13): what `meshwork stat`,
//! `top`, `edges`, `tap`, `policy replay` and the dashboard read from every sidecar of a
//! running mesh. JSON (or NDJSON for the tap stream) over plain HTTP on the admin address a
//! sidecar writes to its ready file.
//!
//! - `GET /stats?window=SECS` — [`Stats`]: request counts and latency histograms by label set
//!   over the last `SECS` seconds (1–600; default 60), computed by the sidecar from a bounded
//!   ring of once-a-second samples of its own counters (nothing on the data path).
//! - `GET /tap[?direction=inbound|outbound][&service=S][&route=R][&denied=true][&limit=N]`
//!   `[&header=NAME]…` —
//!   a stream of [`TapEvent`]s, one JSON object per line, as requests finish; each line is
//!   flushed as it is written. Bounded: a reader that falls behind loses events (a
//!   [`TapEvent`] with `lost` set says how many), never slows the data path. Nothing is
//!   recorded while nobody taps.
//! - `GET /decisions?window=SECS` — [`DecisionRecord`]: the inbound authorization decisions
//!   of the window at route-template level (caller × method × route × decision × count; no
//!   raw paths), for `policy replay`.
//!
//! Stability: fields are only ever added (readers ignore unknown fields); `-o json` of the
//! CLI commands is built from these.

use serde::{Deserialize, Serialize};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a peer sidecar, to the local app.
    Inbound,
    /// From the local app, to a mesh service or an egress destination.
    Outbound,
}

/// `GET /stats`: one sidecar's traffic over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The workload the sidecar fronts.
    pub workload: String,
    /// Its replica (from 0).
    pub replica: u16,
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// The window actually covered, in seconds (shorter than asked right after start).
    pub window_secs: f64,
    /// Upper bounds of the latency buckets, in seconds, ascending; a last, implicit bucket
    /// is `+Inf`.
    pub bucket_bounds_secs: Vec<f64>,
    /// One row per label set that saw requests in the window.
    pub rows: Vec<StatsRow>,
}

/// Requests of one label set within the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    /// The listener.
    pub direction: Direction,
    /// The mesh service, `[egress]` or `[none]`.
    pub service: String,
    /// The route template, or `[unmatched]`.
    pub route: String,
    /// The method (`OTHER` for extension methods).
    pub method: String,
    /// Inbound: the verified caller's SPIFFE ID; outbound: the callee's (`[none]` for egress).
    pub peer: String,
    /// The HTTP status the caller got.
    pub status_code: u16,
    /// Requests in the window.
    pub requests: u64,
    /// How many of them a policy refused (the sidecar's own 403s, never the app's).
    #[serde(default)]
    pub denied: u64,
    /// Latency histogram of those requests: counts per bucket of
    /// [`Stats::bucket_bounds_secs`], plus the `+Inf` bucket last (so one longer).
    /// Not cumulative.
    pub buckets: Vec<u64>,
    /// Sum of their latencies, in seconds.
    pub latency_sum_secs: f64,
}

/// One finished request, as `GET /tap` streams it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TapEvent {
    /// When the response head was ready, RFC 3339 with fractional seconds.
    pub time: String,
    /// The listener.
    pub direction: Direction,
    /// The caller's SPIFFE ID (inbound: verified by mTLS; outbound: this workload).
    pub caller: String,
    /// The callee's SPIFFE ID when known (inbound: this workload; outbound: the peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee: Option<String>,
    /// The mesh service, `[egress]` or `[none]`.
    pub service: String,
    /// The method.
    pub method: String,
    /// The route template, or `[unmatched]` (never the raw path).
    pub route: String,
    /// The status the caller got.
    pub status_code: u16,
    /// From the request head to the response head, in milliseconds.
    pub latency_ms: f64,
    /// `deny` when a policy refused the request (inbound authorization or egress policy),
    /// else `allow`.
    pub decision: Decision,
    /// The decision id of a denial (as in the 403 body and the log line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The policy that refused it (`namespace/name`), when one did (absent for a default
    /// deny, and on the caller's side of a denial, which only saw the 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The rule of that policy, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// The trace id, when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Values of the request headers the tapper listed (`?header=NAME`, repeatable); none by
    /// default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Set on a marker line instead of a request: this many events were dropped because the
    /// reader fell behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
}

/// A policy outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Let through.
    Allow,
    /// Refused with a 403.
    Deny,
}

/// `GET /decisions`: one sidecar's inbound authorization decisions over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The workload the sidecar fronts.
    pub workload: String,
    /// The window actually covered, in seconds.
    pub window_secs: f64,
    /// One row per distinct decision.
    pub rows: Vec<DecisionRow>,
}

/// Requests with the same service, caller, method, route template and decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DecisionRow {
    /// The target service the request was decided for.
    pub service: String,
    /// The verified caller.
    pub caller: String,
    /// The method.
    pub method: String,
    /// The route template, or `[unmatched]`.
    pub route: String,
    /// What was decided.
    pub decision: Decision,
    /// How many requests.
    pub count: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tap_events_leave_out_what_they_do_not_have() {
        let event = TapEvent {
            time: "2026-12-05T19:00:00.000Z".to_owned(),
            direction: Direction::Inbound,
            caller: "spiffe://meshwork.local/ns/default/sa/store".to_owned(),
            callee: None,
            service: "billing".to_owned(),
            method: "POST".to_owned(),
            route: "/charges".to_owned(),
            status_code: 201,
            latency_ms: 1.5,
            decision: Decision::Allow,
            decision_id: None,
            policy: None,
            rule: None,
            trace_id: None,
            headers: Vec::new(),
            lost: None,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["direction"], "inbound");
        assert_eq!(json["decision"], "allow");
        assert!(json.get("decision_id").is_none() && json.get("lost").is_none());
        assert_eq!(serde_json::from_value::<TapEvent>(json).unwrap(), event);
    }
}
