//! [`PrometheusMetrics`]: the sidecar's request, connection and error metrics, recorded on
//! the data path with atomics and rendered on the admin `/metrics` (docs/telemetry.md).
//!
//! - `meshwork_requests_total{direction,service,route,method,status_code,peer}`
//! - `meshwork_request_duration_seconds{direction,service,route}` (histogram, [`BUCKETS`])
//! - `meshwork_connections_total{direction,protocol}`
//! - `meshwork_forward_errors_total{direction,side}`
//! - the resiliency counters (retries, budget exhaustion, timeouts, ejections, circuit-open
//!   refusals): [`resilience`]
//! - the trace export counters (spans exported, spans dropped by reason): [`spans`]
//!
//! Cost: a request is one read-locked lookup of a `Copy` key (interned labels, no strings
//! built) and two relaxed atomic adds; only the first request of a new label set takes the
//! write lock. No lock is held across an `.await` (there is none in here). Histograms are
//! kept per full label set and summed per route when scraped, so the data path touches one
//! series only.
//!
//! Why hand-written and not prometheus-client's `Family` (issue 13 item 5, measured with
//! `benches/record.rs`: 24 label sets in steady state, release build without LTO, callgrind
//! instructions per recorded request): this recorder ≈ 240; prometheus-client's
//! `Family<Labels, Counter>` + `Family<RouteLabels, Histogram>` ≈ 1,800 with `&'static str`
//! labels (its best case: its map hashes the label *strings* with SipHash, twice) and
//! ≈ 3,200 with the usual `String` labels. Wall time on the shared 2-core VM (criterion,
//! loaded): 70 ns vs 190 ns vs 314 ns. Every request is recorded on both sidecars of a hop,
//! so prometheus-client would add ~3,000–6,000 instructions to the pair's ~142,600 per
//! request (docs/telemetry.md): +2–4 %, more than the whole telemetry layer costs (+1.6 %).
//! Scraping is off the data path and not the reason. The exposition is one way only:
//! [`exposition`] writes everything on `/metrics` (the admin's identity gauges too), so there
//! is one set of escaping rules and no per-scrape registry; prometheus-client is used only
//! by the bench.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use http::StatusCode;
use identity::SpiffeId;

use crate::exposition::{self, Kind};
use crate::forward_error::{ForwardError, OverloadLimit, Side, TimeoutKind};
use crate::label::Label;
use crate::metrics::{
    BUCKETS, Direction, OpaqueOutcome, Protocol, ProxyMetrics, RequestRecord, RetryReason, SLOTS,
    SeriesKey, SeriesSample, SpanDrop,
};
use policy::hasher::FxBuildHasher as FxBuild;

const DIRECTIONS: [Direction; 2] = [Direction::Inbound, Direction::Outbound];
const PROTOCOLS: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];
const SIDES: [Side; 5] = [
    Side::Client,
    Side::Peer,
    Side::Upstream,
    Side::External,
    Side::Proxy,
];

/// The Prometheus recorder every sidecar uses (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct PrometheusMetrics {
    requests: RwLock<HashMap<SeriesKey, Series, FxBuild>>,
    /// By direction, then protocol.
    connections: [[AtomicU64; 2]; 2],
    /// By direction, then side.
    forward_errors: [[AtomicU64; 5]; 2],
    resilience: resilience::ResilienceCounters,
    spans: spans::SpanCounters,
}

/// The durations of one label set: non-cumulative bucket counts (their sum is the request
/// count) and the total in nanoseconds.
#[derive(Debug, Default)]
struct Series {
    slots: [AtomicU64; SLOTS],
    sum_nanos: AtomicU64,
}

impl Series {
    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = BUCKETS.partition_point(|&(_, bound)| bound < nanos);
        // Relaxed: independent counters; a scrape may see one add before the other.
        self.slots[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn read(&self) -> ([u64; SLOTS], u64) {
        let slots = std::array::from_fn(|i| self.slots[i].load(Ordering::Relaxed));
        (slots, self.sum_nanos.load(Ordering::Relaxed))
    }
}

fn direction_index(direction: Direction) -> usize {
    match direction {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

impl ProxyMetrics for PrometheusMetrics {
    fn inbound_connection(&self, _peer: &SpiffeId, protocol: Protocol) {
        self.count_connection(Direction::Inbound, protocol);
    }

    fn outbound_connection(&self, _peer: &SpiffeId, _addr: SocketAddr, protocol: Protocol) {
        self.count_connection(Direction::Outbound, protocol);
    }

    fn forward_error(&self, direction: Direction, error: &ForwardError) {
        let side = SIDES.iter().position(|s| *s == error.side()).unwrap_or(0);
        self.forward_errors[direction_index(direction)][side].fetch_add(1, Ordering::Relaxed);
    }

    fn request(&self, record: &RequestRecord) {
        let key = SeriesKey::of(record);
        {
            let series = self.requests.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = series.get(&key) {
                series.observe(record.elapsed);
                return;
            }
        }
        let mut series = self
            .requests
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        series.entry(key).or_default().observe(record.elapsed);
    }

    fn sample(&self) -> Option<Vec<SeriesSample>> {
        let series = self.requests.read().unwrap_or_else(PoisonError::into_inner);
        let samples = series
            .iter()
            .map(|(key, s)| {
                let (slots, sum_nanos) = s.read();
                SeriesSample {
                    key: *key,
                    slots,
                    sum_nanos,
                }
            })
            .collect();
        Some(samples)
    }

    fn encode_text(&self, out: &mut String) {
        // Denials are kept apart from other 403s for `/decisions`; the exposition has no
        // such label, so a denial and an app's own 403 of one label set are one series.
        let mut merged: BTreeMap<LabelOrder, ([u64; SLOTS], u64)> = BTreeMap::new();
        for sample in self.sample().unwrap_or_default() {
            let (slots, sum) = merged
                .entry(sort_key(&sample.key))
                .or_insert(([0; SLOTS], 0));
            for (into, add) in slots.iter_mut().zip(sample.slots) {
                *into += add;
            }
            *sum += sample.sum_nanos;
        }
        let requests: Vec<(LabelOrder, [u64; SLOTS], u64)> = merged
            .into_iter()
            .map(|(key, (slots, sum))| (key, slots, sum))
            .collect();
        encode_requests(&requests, out);
        encode_durations(&requests, out);
        self.encode_counters(out);
        self.resilience.encode(out);
        self.spans.encode(out);
    }

    fn spans_exported(&self, count: u64) {
        self.spans.exported(count);
    }

    fn spans_dropped(&self, reason: SpanDrop, count: u64) {
        self.spans.dropped(reason, count);
    }

    fn retry(&self, service: Label, reason: RetryReason) {
        self.resilience.retries.add((service, reason));
    }

    fn retry_budget_exhausted(&self, service: Label) {
        self.resilience.budget_exhausted.add(service);
    }

    fn timeout(&self, service: Label, kind: TimeoutKind) {
        self.resilience.timeouts.add((service, kind));
    }

    fn ejection(&self, service: Label, endpoint: SocketAddr) {
        self.resilience.ejections.add((service, endpoint));
    }

    fn circuit_open(&self, service: Label, endpoint: SocketAddr, limit: OverloadLimit) {
        self.resilience.circuit_open.add((service, endpoint, limit));
    }

    fn opaque_connection(&self, direction: Direction, service: Label, outcome: OpaqueOutcome) {
        self.resilience.opaque.add((direction, service, outcome));
    }
}

impl PrometheusMetrics {
    fn count_connection(&self, direction: Direction, protocol: Protocol) {
        let protocol = usize::from(protocol == Protocol::Http2);
        self.connections[direction_index(direction)][protocol].fetch_add(1, Ordering::Relaxed);
    }

    fn encode_counters(&self, out: &mut String) {
        exposition::family(
            out,
            "meshwork_connections",
            Kind::Counter,
            "Connections: inbound mTLS handshakes accepted, outbound connections opened to peer sidecars",
        );
        for direction in DIRECTIONS {
            for protocol in PROTOCOLS {
                let count = self.connections[direction_index(direction)]
                    [usize::from(protocol == Protocol::Http2)]
                .load(Ordering::Relaxed);
                let labels = [
                    ("direction", direction.as_str()),
                    ("protocol", protocol.as_str()),
                ];
                exposition::sample(out, "meshwork_connections_total", &labels, count);
            }
        }
        exposition::family(
            out,
            "meshwork_forward_errors",
            Kind::Counter,
            "Requests the proxy failed to forward, by the side at fault",
        );
        for direction in DIRECTIONS {
            for (i, side) in SIDES.iter().enumerate() {
                let count =
                    self.forward_errors[direction_index(direction)][i].load(Ordering::Relaxed);
                let labels = [("direction", direction.as_str()), ("side", side.as_str())];
                exposition::sample(out, "meshwork_forward_errors_total", &labels, count);
            }
        }
    }
}

/// The exposed labels of a series (direction, service, route, method, status, peer), in
/// the order scrapes list series, whatever order they were first seen in.
type LabelOrder = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    StatusCode,
    &'static str,
);

fn sort_key(key: &SeriesKey) -> LabelOrder {
    (
        key.direction.as_str(),
        key.service.as_str(),
        key.route.as_str(),
        key.method.as_str(),
        key.status,
        key.peer.as_str(),
    )
}

fn encode_requests(requests: &[(LabelOrder, [u64; SLOTS], u64)], out: &mut String) {
    exposition::family(
        out,
        "meshwork_requests",
        Kind::Counter,
        "Requests answered, by direction, service, route template, method, status code and peer identity",
    );
    for ((direction, service, route, method, status, peer), slots, _) in requests {
        let labels = [
            ("direction", *direction),
            ("service", *service),
            ("route", *route),
            ("method", *method),
            ("status_code", status.as_str()),
            ("peer", *peer),
        ];
        exposition::sample(
            out,
            "meshwork_requests_total",
            &labels,
            slots.iter().sum::<u64>(),
        );
    }
}

/// Sums the series of each direction/service/route and writes them as one histogram each.
fn encode_durations(requests: &[(LabelOrder, [u64; SLOTS], u64)], out: &mut String) {
    exposition::family(
        out,
        "meshwork_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's head to its response head, by direction, service and route template",
    );
    let mut routes: BTreeMap<(&str, &str, &str), ([u64; SLOTS], u64)> = BTreeMap::new();
    for ((direction, service, route, ..), slots, sum) in requests {
        let route = (*direction, *service, *route);
        let total = routes.entry(route).or_insert(([0; SLOTS], 0));
        for (into, add) in total.0.iter_mut().zip(slots) {
            *into += add;
        }
        total.1 += sum;
    }
    for ((direction, service, route), (slots, sum_nanos)) in routes {
        let base = [
            ("direction", direction),
            ("service", service),
            ("route", route),
        ];
        let mut cumulative = 0;
        for (i, (le, _)) in BUCKETS.iter().enumerate() {
            cumulative += slots[i];
            let labels = [base[0], base[1], base[2], ("le", le)];
            exposition::sample(
                out,
                "meshwork_request_duration_seconds_bucket",
                &labels,
                cumulative,
            );
        }
        let count = cumulative + slots[BUCKETS.len()];
        let labels = [base[0], base[1], base[2], ("le", "+Inf")];
        exposition::sample(
            out,
            "meshwork_request_duration_seconds_bucket",
            &labels,
            count,
        );
        // Display of f64 never uses exponents, so this is a plain decimal.
        let seconds = Duration::from_nanos(sum_nanos).as_secs_f64();
        exposition::sample(out, "meshwork_request_duration_seconds_sum", &base, seconds);
        exposition::sample(out, "meshwork_request_duration_seconds_count", &base, count);
    }
}

mod resilience;
mod spans;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
