use super::*;

const STORE: &str = "spiffe://meshwork.local/ns/default/sa/store";
const REPORTING: &str = "spiffe://meshwork.local/ns/default/sa/reporting";

fn row(direction: Direction, route: &str, peer: &str, status: u16, buckets: [u64; 4]) -> StatsRow {
    StatsRow {
        direction,
        service: "billing".to_owned(),
        route: route.to_owned(),
        method: "POST".to_owned(),
        peer: peer.to_owned(),
        status_code: status,
        requests: buckets.iter().sum(),
        denied: 0,
        buckets: buckets.to_vec(),
        latency_sum_secs: 0.5,
    }
}

fn billing(replica: u16, window_secs: f64, rows: Vec<StatsRow>) -> Stats {
    Stats {
        workload: "billing".to_owned(),
        replica,
        spiffe_id: "spiffe://meshwork.local/ns/default/sa/billing".to_owned(),
        window_secs,
        bucket_bounds_secs: vec![0.01, 0.1, 1.0],
        rows,
    }
}

fn two_replicas() -> Vec<Stats> {
    let inbound = Direction::Inbound;
    vec![
        billing(
            0,
            60.0,
            vec![
                row(inbound, "/charges", STORE, 201, [4, 2, 0, 0]),
                row(inbound, "/charges", REPORTING, 403, [3, 0, 0, 0]),
            ],
        ),
        billing(
            1,
            30.0,
            vec![
                row(inbound, "/charges", STORE, 201, [2, 1, 0, 0]),
                row(inbound, "/charges/{id}", STORE, 503, [0, 0, 1, 1]),
            ],
        ),
    ]
}

#[test]
fn replicas_of_a_workload_are_summed() {
    let agg = aggregate(&two_replicas(), GroupBy::Workload, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(agg.groups.len(), 1);
    let (key, group) = agg
        .groups
        .iter()
        .next()
        .unwrap_or_else(|| panic!("a group"));
    assert_eq!(
        (key.workload.as_str(), key.direction),
        ("billing", Direction::Inbound)
    );
    assert_eq!(key.route, None);
    assert_eq!(group.replicas, BTreeSet::from([0, 1]));
    assert_eq!(group.requests, 6 + 3 + 3 + 2);
    // 403s are not failures; the two 503s are.
    assert_eq!(group.successes, 12);
    assert_eq!(group.success_rate(), Some(12.0 / 14.0));
    // Each sidecar's requests over its own window: 9/60 + 5/30.
    assert!(
        (group.rps - (9.0 / 60.0 + 5.0 / 30.0)).abs() < 1e-9,
        "{}",
        group.rps
    );
    assert_eq!(group.buckets, vec![9, 3, 1, 1]);
}

#[test]
fn by_route_and_by_peer_split_the_groups() {
    let agg = aggregate(&two_replicas(), GroupBy::Route, None).unwrap_or_else(|e| panic!("{e}"));
    let routes: Vec<(Option<&str>, u64)> = agg
        .groups
        .iter()
        .map(|(k, g)| (k.route.as_deref(), g.requests))
        .collect();
    assert_eq!(routes, [(Some("/charges"), 12), (Some("/charges/{id}"), 2)]);
    let agg = aggregate(&two_replicas(), GroupBy::Peer, None).unwrap_or_else(|e| panic!("{e}"));
    let peers: Vec<(Option<&str>, u64)> = agg
        .groups
        .iter()
        .map(|(k, g)| (k.peer.as_deref(), g.requests))
        .collect();
    assert_eq!(peers, [(Some(REPORTING), 3), (Some(STORE), 11)]);
}

#[test]
fn a_filter_keeps_the_workload_and_the_rows_naming_the_service() {
    let mut stats = two_replicas();
    let mut store = billing(
        0,
        60.0,
        vec![row(Direction::Outbound, "/charges", "x", 201, [1, 0, 0, 0])],
    );
    store.workload = "store".to_owned();
    stats.push(store);
    let count = |only| {
        aggregate(&stats, GroupBy::Workload, only)
            .map(|a| a.groups.len())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(count(None), 2);
    // Store's outbound rows call billing: kept under --only billing.
    assert_eq!(count(Some("billing")), 2);
    assert_eq!(count(Some("store")), 1);
    assert_eq!(count(Some("reporting")), 0);
}

#[test]
fn mismatched_histograms_are_refused_not_added() {
    let mut stats = two_replicas();
    stats[1].bucket_bounds_secs = vec![0.5];
    assert!(aggregate(&stats, GroupBy::Workload, None).is_err());
    let mut stats = two_replicas();
    stats[1].rows[0].buckets.pop();
    assert!(aggregate(&stats, GroupBy::Workload, None).is_err());
}

#[test]
fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
    let bounds = [0.01, 0.1, 1.0];
    // 10 observations: 5 up to 10ms, 4 in (10ms, 100ms], 1 in (100ms, 1s].
    let buckets = [5, 4, 1, 0];
    let q = |q| quantile(q, &bounds, &buckets).unwrap_or(f64::NAN);
    // rank 5 is the last of the first bucket: its upper bound.
    assert!((q(0.5) - 0.01).abs() < 1e-12, "{}", q(0.5));
    // rank 7: 2 of the 4 in (0.01, 0.1] → halfway.
    assert!((q(0.7) - 0.055).abs() < 1e-12, "{}", q(0.7));
    // rank 9.9: 0.9 of the 1 in (0.1, 1].
    assert!((q(0.99) - 0.91).abs() < 1e-12, "{}", q(0.99));
    // rank 2.5 in the first bucket, which starts at 0.
    assert!((q(0.25) - 0.005).abs() < 1e-12, "{}", q(0.25));
}

#[test]
fn the_inf_bucket_gives_the_highest_finite_bound_and_empty_gives_none() {
    let bounds = [0.01, 0.1];
    assert_eq!(quantile(0.99, &bounds, &[0, 0, 3]), Some(0.1));
    assert_eq!(quantile(0.5, &bounds, &[0, 0, 0]), None);
    assert_eq!(quantile(0.5, &[], &[3]), None);
    assert_eq!(quantile(1.5, &bounds, &[1, 0, 0]), None);
    let agg = Aggregate {
        bounds: bounds.to_vec(),
        groups: BTreeMap::new(),
    };
    let group = Group {
        buckets: vec![0, 2, 0],
        ..Group::default()
    };
    let p50 = agg.quantile_ms(&group, 0.5).unwrap_or(f64::NAN);
    assert!((p50 - 55.0).abs() < 1e-9, "{p50}");
}
