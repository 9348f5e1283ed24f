//! The data-path cost of recording one request (issue 13 item 5): today's recorder
//! ([`PrometheusMetrics::request`]: a read-locked FxHash lookup of a key of interned labels,
//! hashed as pointers, then relaxed atomic adds) against prometheus-client's
//! `Family<Labels, Counter>` + `Family<Labels, Histogram>` (what moving the request metrics to
//! prometheus-client's types would mean: two lookups whose keys hash the label *strings*
//! with std's SipHash), once with borrowed `&'static str` labels (its best case: nothing
//! allocated) and once with owned `String` labels (the usual `EncodeLabelSet` struct).
//!
//! 24 label sets (3 routes × 2 statuses × 2 peers × 2 directions), cycled, all present
//! after the first round: the steady state of a running sidecar.
//!
//! `cargo bench -p meshwork-proxy --bench record -- --quick`

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use proxy::{
    BUCKETS, Direction, Label, MethodLabel, PrometheusMetrics, ProxyMetrics, RequestRecord,
};

fn records() -> Vec<RequestRecord> {
    let mut records = Vec::new();
    for direction in [Direction::Inbound, Direction::Outbound] {
        for route in ["/charges", "/charges/{id}", "[unmatched]"] {
            for status in [200, 503] {
                for peer in ["store", "reporting"] {
                    records.push(RequestRecord {
                        direction,
                        service: Label::intern("billing"),
                        route: Label::intern(route),
                        method: MethodLabel::Get,
                        status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                        peer: Label::intern(&format!(
                            "spiffe://meshwork.local/ns/default/sa/{peer}"
                        )),
                        elapsed: Duration::from_micros(700),
                        denied: false,
                    });
                }
            }
        }
    }
    records
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Borrowed {
    direction: &'static str,
    service: &'static str,
    route: &'static str,
    method: &'static str,
    status_code: u16,
    peer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BorrowedRoute {
    direction: &'static str,
    service: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Owned {
    direction: String,
    service: String,
    route: String,
    method: String,
    status_code: u16,
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnedRoute {
    direction: String,
    service: String,
    route: String,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS.iter().map(|(_, nanos)| *nanos as f64 / 1e9))
}

fn main() {
    let records = records();
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("record_request");

    let hand_written = PrometheusMetrics::default();
    let mut i = 0;
    group.bench_function("hand_written_interned_fxhash", |b| {
        b.iter(|| {
            i = (i + 1) % records.len();
            hand_written.request(black_box(&records[i]));
        })
    });

    let counters = Family::<Borrowed, Counter>::default();
    let durations =
        Family::<BorrowedRoute, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
    let mut i = 0;
    group.bench_function("prometheus_client_static_str_labels", |b| {
        b.iter(|| {
            i = (i + 1) % records.len();
            let r = black_box(&records[i]);
            counters
                .get_or_create(&Borrowed {
                    direction: r.direction.as_str(),
                    service: r.service.as_str(),
                    route: r.route.as_str(),
                    method: r.method.as_str(),
                    status_code: r.status.as_u16(),
                    peer: r.peer.as_str(),
                })
                .inc();
            durations
                .get_or_create(&BorrowedRoute {
                    direction: r.direction.as_str(),
                    service: r.service.as_str(),
                    route: r.route.as_str(),
                })
                .observe(r.elapsed.as_secs_f64());
        })
    });

    let counters = Family::<Owned, Counter>::default();
    let durations =
        Family::<OwnedRoute, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
    let mut i = 0;
    group.bench_function("prometheus_client_string_labels", |b| {
        b.iter(|| {
            i = (i + 1) % records.len();
            let r = black_box(&records[i]);
            counters
                .get_or_create(&Owned {
                    direction: r.direction.as_str().to_owned(),
                    service: r.service.as_str().to_owned(),
                    route: r.route.as_str().to_owned(),
                    method: r.method.as_str().to_owned(),
                    status_code: r.status.as_u16(),
                    peer: r.peer.as_str().to_owned(),
                })
                .inc();
            durations
                .get_or_create(&OwnedRoute {
                    direction: r.direction.as_str().to_owned(),
                    service: r.service.as_str().to_owned(),
                    route: r.route.as_str().to_owned(),
                })
                .observe(r.elapsed.as_secs_f64());
        })
    });
    group.finish();
    c.final_summary();
}
