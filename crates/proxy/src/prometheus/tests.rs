use super::*;
use crate::label::{EGRESS, MethodLabel, NONE, UNMATCHED};

const STORE: &str = "spiffe://meshwork.local/ns/default/sa/store";

fn record(route: Label, status: u16, millis: u64) -> RequestRecord {
    RequestRecord {
        direction: Direction::Inbound,
        service: Label::intern("billing"),
        route,
        method: MethodLabel::Get,
        status: StatusCode::from_u16(status).unwrap(),
        peer: Label::intern(STORE),
        elapsed: Duration::from_millis(millis),
        denied: false,
    }
}

fn encoded(metrics: &PrometheusMetrics) -> String {
    let mut out = String::new();
    metrics.encode_text(&mut out);
    out
}

fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn requests_are_counted_per_label_set_in_label_order() {
    let metrics = PrometheusMetrics::default();
    let by_id = Label::intern("/charges/{id}");
    metrics.request(&record(by_id, 200, 3));
    metrics.request(&record(UNMATCHED, 404, 1));
    metrics.request(&record(by_id, 200, 7));
    metrics.request(&RequestRecord {
        direction: Direction::Outbound,
        service: EGRESS,
        peer: NONE,
        method: MethodLabel::Other,
        ..record(UNMATCHED, 403, 0)
    });
    let text = encoded(&metrics);
    assert_eq!(
        lines_starting(&text, "meshwork_requests_total"),
        [
            format!(
                "meshwork_requests_total{{direction=\"inbound\",service=\"billing\",route=\"/charges/{{id}}\",method=\"GET\",status_code=\"200\",peer=\"{STORE}\"}} 2"
            ),
            format!(
                "meshwork_requests_total{{direction=\"inbound\",service=\"billing\",route=\"[unmatched]\",method=\"GET\",status_code=\"404\",peer=\"{STORE}\"}} 1"
            ),
            "meshwork_requests_total{direction=\"outbound\",service=\"[egress]\",route=\"[unmatched]\",method=\"OTHER\",status_code=\"403\",peer=\"[none]\"} 1".to_owned(),
        ]
    );
    assert!(
        text.contains("# HELP meshwork_requests Requests answered"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE meshwork_requests counter\n"),
        "{text}"
    );
}

#[test]
fn durations_are_one_cumulative_histogram_per_route() {
    let metrics = PrometheusMetrics::default();
    let by_id = Label::intern("/charges/{id}");
    // Same route, different status and peer: one histogram.
    metrics.request(&record(by_id, 200, 3));
    metrics.request(&RequestRecord {
        peer: NONE,
        ..record(by_id, 502, 30)
    });
    metrics.request(&record(by_id, 200, 20_000));
    let text = encoded(&metrics);
    assert!(
        text.contains("# TYPE meshwork_request_duration_seconds histogram\n"),
        "{text}"
    );
    let base = "direction=\"inbound\",service=\"billing\",route=\"/charges/{id}\"";
    let bucket =
        |le: &str| format!("meshwork_request_duration_seconds_bucket{{{base},le=\"{le}\"}} ");
    for (le, count) in [
        ("0.0025", 0),
        ("0.005", 1),
        ("0.025", 1),
        ("0.05", 2),
        ("10.0", 2),
        ("+Inf", 3),
    ] {
        let line = format!("{}{count}\n", bucket(le));
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    assert_eq!(
        lines_starting(&text, "meshwork_request_duration_seconds_bucket").len(),
        BUCKETS.len() + 1
    );
    assert!(
        text.contains(&format!(
            "meshwork_request_duration_seconds_sum{{{base}}} 20.033\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "meshwork_request_duration_seconds_count{{{base}}} 3\n"
        )),
        "{text}"
    );
}

#[test]
fn a_bucket_bound_is_inclusive() {
    let series = Series::default();
    series.observe(Duration::from_micros(500));
    series.observe(Duration::from_nanos(500_001));
    let (slots, sum) = series.read();
    assert_eq!(slots[0], 1, "0.0005 s is in le=0.0005");
    assert_eq!(slots[1], 1);
    assert_eq!(sum, 1_000_001);
}

#[test]
fn label_values_are_escaped() {
    let metrics = PrometheusMetrics::default();
    metrics.request(&record(Label::intern("/odd/\"quoted\"\\path\n"), 200, 1));
    let text = encoded(&metrics);
    assert!(
        text.contains(r#"route="/odd/\"quoted\"\\path\n""#),
        "{text}"
    );
    assert!(
        !text.contains("path\n\""),
        "a raw newline would split the sample: {text}"
    );
}

#[test]
fn connections_and_forward_errors_are_counted() {
    let metrics = PrometheusMetrics::default();
    let peer: SpiffeId = STORE.parse().unwrap();
    metrics.inbound_connection(&peer, Protocol::Http2);
    metrics.inbound_connection(&peer, Protocol::Http2);
    metrics.outbound_connection(&peer, ([127, 0, 0, 1], 1).into(), Protocol::Http1);
    let error = ForwardError::PeerUnavailable {
        service: "ghost".to_owned(),
        reason: "no endpoints".to_owned(),
    };
    metrics.forward_error(Direction::Outbound, &error);
    let text = encoded(&metrics);
    for line in [
        "meshwork_connections_total{direction=\"inbound\",protocol=\"http2\"} 2\n",
        "meshwork_connections_total{direction=\"inbound\",protocol=\"http1\"} 0\n",
        "meshwork_connections_total{direction=\"outbound\",protocol=\"http1\"} 1\n",
        "meshwork_forward_errors_total{direction=\"outbound\",side=\"peer\"} 1\n",
        "meshwork_forward_errors_total{direction=\"inbound\",side=\"peer\"} 0\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn resiliency_events_are_counted_per_service_reason_kind_and_endpoint() {
    let metrics = PrometheusMetrics::default();
    let billing = Label::intern("billing");
    let replica: std::net::SocketAddr = ([127, 0, 0, 1], 4001).into();
    metrics.retry(billing, RetryReason::Status);
    metrics.retry(billing, RetryReason::Status);
    metrics.retry(billing, RetryReason::Connect);
    metrics.retry(Label::intern("audit"), RetryReason::Timeout);
    metrics.retry_budget_exhausted(billing);
    metrics.timeout(billing, TimeoutKind::Try);
    metrics.timeout(billing, TimeoutKind::Request);
    metrics.ejection(billing, replica);
    metrics.circuit_open(billing, replica, OverloadLimit::Pending);
    let text = encoded(&metrics);
    assert_eq!(
        lines_starting(&text, "meshwork_retries_total"),
        [
            "meshwork_retries_total{service=\"audit\",reason=\"timeout\"} 1",
            "meshwork_retries_total{service=\"billing\",reason=\"connect\"} 1",
            "meshwork_retries_total{service=\"billing\",reason=\"status\"} 2",
        ]
    );
    for line in [
        "# TYPE meshwork_retries counter\n",
        "meshwork_retry_budget_exhausted_total{service=\"billing\"} 1\n",
        "meshwork_timeouts_total{service=\"billing\",kind=\"request\"} 1\n",
        "meshwork_timeouts_total{service=\"billing\",kind=\"try\"} 1\n",
        "meshwork_ejections_total{service=\"billing\",endpoint=\"127.0.0.1:4001\"} 1\n",
        "meshwork_circuit_open_total{service=\"billing\",endpoint=\"127.0.0.1:4001\",limit=\"pending\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn resiliency_families_are_described_before_any_event() {
    let text = encoded(&PrometheusMetrics::default());
    for family in [
        "meshwork_retries",
        "meshwork_retry_budget_exhausted",
        "meshwork_timeouts",
        "meshwork_ejections",
        "meshwork_circuit_open",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} counter\n")),
            "{family} missing from\n{text}"
        );
    }
}

#[test]
fn denials_are_sampled_apart_but_exposed_with_the_other_403s() {
    let metrics = PrometheusMetrics::default();
    let route = Label::intern("/charges/{id}");
    metrics.request(&record(route, 403, 1));
    metrics.request(&RequestRecord {
        denied: true,
        ..record(route, 403, 1)
    });
    metrics.request(&RequestRecord {
        denied: true,
        ..record(route, 403, 2)
    });
    let mut sampled: Vec<(bool, u64)> = metrics
        .sample()
        .unwrap()
        .iter()
        .map(|s| (s.key.denied, s.requests()))
        .collect();
    sampled.sort_unstable();
    assert_eq!(sampled, [(false, 1), (true, 2)]);
    let text = encoded(&metrics);
    assert_eq!(
        lines_starting(&text, "meshwork_requests_total"),
        [format!(
            "meshwork_requests_total{{direction=\"inbound\",service=\"billing\",route=\"/charges/{{id}}\",method=\"GET\",status_code=\"403\",peer=\"{STORE}\"}} 3"
        )]
    );
}
