use std::net::SocketAddr;
use std::sync::Mutex as StdMutex;

use super::*;

#[derive(Default)]
struct Recorded(StdMutex<Vec<(Label, SocketAddr)>>);

impl ProxyMetrics for Recorded {
    fn ejection(&self, service: Label, endpoint: SocketAddr) {
        self.0.lock().unwrap().push((service, endpoint));
    }
}

fn endpoint(port: u16) -> EndpointKey {
    EndpointKey {
        addr: ([127, 0, 0, 1], port).into(),
        identity: "spiffe://meshwork.local/ns/default/sa/billing"
            .parse()
            .unwrap(),
    }
}

const SECOND: Duration = Duration::from_secs(1);

fn config(consecutive_failures: u32, max_ejected_percent: u32) -> OutlierDetection {
    OutlierDetection {
        consecutive_failures,
        base_ejection_ms: 10_000,
        max_ejection_ms: 30_000,
        max_ejected_percent,
    }
}

fn build(
    config: &OutlierDetection,
    ports: &[u16],
) -> (OutlierDetector, Arc<Recorded>, Vec<EndpointKey>) {
    let metrics = Arc::new(Recorded::default());
    let dyn_metrics: Arc<dyn ProxyMetrics> = Arc::clone(&metrics) as _;
    let detector = OutlierDetector::new(Label::intern("billing"), config, dyn_metrics);
    let endpoints: Vec<EndpointKey> = ports.iter().map(|p| endpoint(*p)).collect();
    detector.set_endpoints(&endpoints);
    (detector, metrics, endpoints)
}

/// Records `n` failures (all of them); true if any ejected the endpoint.
fn fail_times(detector: &OutlierDetector, endpoint: &EndpointKey, n: u32, now: Instant) -> bool {
    let mut ejected = false;
    for _ in 0..n {
        ejected |= detector.record(endpoint, Outcome::Failure, now);
    }
    ejected
}

#[test]
fn consecutive_failures_eject_for_the_base_time_then_the_endpoint_returns() {
    let (detector, metrics, endpoints) = build(&config(3, 50), &[4001, 4002, 4003]);
    let (a, b) = (&endpoints[0], &endpoints[1]);
    let t0 = Instant::now();
    assert!(!fail_times(&detector, a, 2, t0));
    assert!(detector.is_available(a, t0));
    assert!(
        detector.record(a, Outcome::Failure, t0),
        "the third failure ejects"
    );
    assert!(!detector.is_available(a, t0));
    assert!(detector.is_available(b, t0), "only the failing one");
    assert_eq!(detector.next_return(t0), Some(t0 + 10 * SECOND));
    assert!(!detector.is_available(a, t0 + 10 * SECOND - Duration::from_millis(1)));
    assert!(detector.is_available(a, t0 + 10 * SECOND));
    assert_eq!(detector.next_return(t0 + 10 * SECOND), None);
    let counted = metrics.0.lock().unwrap().clone();
    assert_eq!(counted, [(Label::intern("billing"), a.addr)]);
}

#[test]
fn a_success_resets_the_count() {
    let (detector, _, endpoints) = build(&config(3, 50), &[4001, 4002]);
    let t0 = Instant::now();
    assert!(!fail_times(&detector, &endpoints[0], 2, t0));
    assert!(!detector.record(&endpoints[0], Outcome::Success, t0));
    assert!(!fail_times(&detector, &endpoints[0], 2, t0));
    assert!(detector.is_available(&endpoints[0], t0));
    assert!(detector.record(&endpoints[0], Outcome::Failure, t0));
}

#[test]
fn ejections_grow_exponentially_up_to_the_max_and_a_long_healthy_stretch_forgets() {
    let (detector, _, endpoints) = build(&config(1, 50), &[4001, 4002]);
    let a = &endpoints[0];
    let mut now = Instant::now();
    let mut periods = Vec::new();
    for _ in 0..4 {
        assert!(detector.record(a, Outcome::Failure, now));
        let back = detector.next_return(now).unwrap();
        periods.push((back - now).as_secs());
        now = back;
    }
    assert_eq!(periods, [10, 20, 30, 30]);
    // In again and healthy for the longest ejection: the next one is short again.
    assert!(detector.record(a, Outcome::Failure, now + 30 * SECOND));
    let back = detector.next_return(now + 30 * SECOND).unwrap();
    assert_eq!(back - (now + 30 * SECOND), 10 * SECOND);
}

#[test]
fn late_answers_from_before_an_ejection_do_not_extend_it() {
    // Room to eject it again, were late answers counted.
    let (detector, metrics, endpoints) = build(&config(2, 100), &[4001, 4002, 4003]);
    let t0 = Instant::now();
    assert!(fail_times(&detector, &endpoints[0], 2, t0));
    assert!(!fail_times(&detector, &endpoints[0], 5, t0 + SECOND));
    assert_eq!(detector.next_return(t0 + SECOND), Some(t0 + 10 * SECOND));
    // Back with a clean count: one failure is not enough.
    assert!(!detector.record(&endpoints[0], Outcome::Failure, t0 + 10 * SECOND));
    assert_eq!(metrics.0.lock().unwrap().len(), 1);
}

#[test]
fn at_most_the_max_share_is_ejected_and_never_the_last_endpoint() {
    let t0 = Instant::now();
    // Two endpoints, 100 %: one may go, the last stays.
    let (detector, _, endpoints) = build(&config(1, 100), &[4001, 4002]);
    assert!(detector.record(&endpoints[0], Outcome::Failure, t0));
    assert!(!detector.record(&endpoints[1], Outcome::Failure, t0));
    assert!(detector.is_available(&endpoints[1], t0));
    // Once the first returns, the second (still failing) can go.
    let later = t0 + 10 * SECOND;
    assert!(detector.record(&endpoints[1], Outcome::Failure, later));
    assert!(!detector.is_available(&endpoints[1], later));
    assert!(detector.is_available(&endpoints[0], later));

    // Five endpoints, 50 %: two out at most (rounded down).
    let (detector, _, endpoints) = build(&config(1, 50), &[1, 2, 3, 4, 5]);
    let ejected = endpoints
        .iter()
        .filter(|e| detector.record(e, Outcome::Failure, t0))
        .count();
    assert_eq!(ejected, 2);

    // A lone endpoint is never ejected.
    let (detector, _, endpoints) = build(&config(1, 100), &[4001]);
    assert!(!fail_times(&detector, &endpoints[0], 10, t0));
}

#[test]
fn the_share_counts_the_current_endpoints_and_history_follows_them() {
    let t0 = Instant::now();
    let (detector, _, endpoints) = build(&config(1, 50), &[4001, 4002]);
    assert!(detector.record(&endpoints[0], Outcome::Failure, t0));
    // 4002 leaves; 4001 stays ejected, and a newcomer 4003 joins.
    detector.set_endpoints(&[endpoints[0].clone(), endpoint(4003)]);
    assert!(!detector.is_available(&endpoints[0], t0));
    assert!(
        !detector.record(&endpoint(4003), Outcome::Failure, t0),
        "50 % of 2 is out"
    );
    // The same address with another identity is another endpoint.
    let replaced = EndpointKey {
        identity: "spiffe://meshwork.local/ns/default/sa/other"
            .parse()
            .unwrap(),
        ..endpoints[0].clone()
    };
    assert!(detector.is_available(&replaced, t0));
}

#[test]
fn zero_consecutive_failures_disables_ejection() {
    let (detector, _, endpoints) = build(&config(0, 100), &[4001, 4002]);
    assert!(!fail_times(&detector, &endpoints[0], 100, Instant::now()));
}

#[test]
fn an_endpoint_a_snapshot_removed_is_not_counted_or_put_back() {
    let (detector, _, endpoints) = build(&config(1, 100), &[4001, 4002]);
    let (kept, removed) = (&endpoints[0], &endpoints[1]);
    detector.set_endpoints([kept]);
    let now = Instant::now();
    // A try that began before the snapshot dropped `removed` ends afterwards.
    assert!(!detector.record(removed, Outcome::Failure, now));
    // `kept` is the only endpoint left: never ejected, even at 100 %.
    assert!(!detector.record(kept, Outcome::Failure, now));
    assert!(detector.is_available(kept, now));
}
