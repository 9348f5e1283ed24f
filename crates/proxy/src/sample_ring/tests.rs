use http::StatusCode;

use super::*;
use crate::label::Label;
use crate::label::MethodLabel;
use crate::metrics::{Direction, RequestRecord, SLOTS};
use crate::prometheus::PrometheusMetrics;

fn key(route: &str) -> SeriesKey {
    SeriesKey {
        direction: Direction::Inbound,
        service: Label::intern("billing"),
        route: Label::intern(route),
        method: MethodLabel::Get,
        status: StatusCode::OK,
        peer: Label::intern("spiffe://meshwork.local/ns/default/sa/store"),
        denied: false,
    }
}

/// `requests` in the first bucket, 1 ms each.
fn cumulative(route: &str, requests: u64) -> SeriesSample {
    let mut slots = [0; SLOTS];
    slots[0] = requests;
    SeriesSample {
        key: key(route),
        slots,
        sum_nanos: requests * 1_000_000,
    }
}

fn requests(windowed: &Windowed, route: &str) -> u64 {
    windowed
        .series
        .iter()
        .filter(|s| s.key == key(route))
        .map(SeriesSample::requests)
        .sum()
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn a_window_is_the_samples_inside_it_plus_what_came_since_the_last() {
    let start = Instant::now();
    let mut ring = SampleRing::new(start);
    // 10 requests a second for 5 seconds.
    for s in 1..=5 {
        ring.record(start + SEC * s, vec![cumulative("/a", 10 * u64::from(s))]);
    }
    let now = start + Duration::from_millis(5_500);
    let current = [cumulative("/a", 53), cumulative("/b", 1)];

    let all = ring.window(now, Duration::from_secs(60), &current);
    assert_eq!(requests(&all, "/a"), 53);
    assert_eq!(requests(&all, "/b"), 1);
    assert_eq!(all.covered, Duration::from_millis(5_500), "since start");
    let sum: u64 = all.series.iter().map(|s| s.sum_nanos).sum();
    assert_eq!(sum, 54 * 1_000_000);

    // The last 2 s: the sample of (4 s, 5 s] and the live 0.5 s; (3 s, 4 s] starts
    // 2.5 s ago, outside.
    let two = ring.window(now, 2 * SEC, &current);
    assert_eq!(two.covered, Duration::from_millis(1_500));
    assert_eq!(requests(&two, "/a"), 10 + 3);

    // Shorter than the time since the last sample: the live part alone.
    let live = ring.window(now, SEC / 10, &current);
    assert_eq!(live.covered, SEC / 2);
    assert_eq!(requests(&live, "/a"), 3);
}

#[test]
fn series_that_gained_nothing_are_left_out() {
    let start = Instant::now();
    let mut ring = SampleRing::new(start);
    ring.record(start + SEC, vec![cumulative("/a", 4)]);
    ring.record(
        start + 2 * SEC,
        vec![cumulative("/a", 4), cumulative("/b", 2)],
    );
    let windowed = ring.window(
        start + 2 * SEC,
        SEC,
        &[cumulative("/a", 4), cumulative("/b", 2)],
    );
    assert_eq!(windowed.series.len(), 1, "{windowed:?}");
    assert_eq!(requests(&windowed, "/b"), 2);
    assert_eq!(windowed.covered, SEC);
}

#[test]
fn the_ring_keeps_600_samples_and_says_what_it_covers() {
    let start = Instant::now();
    let mut ring = SampleRing::new(start);
    let total = RING_SAMPLES as u32 + 100;
    for s in 1..=total {
        ring.record(start + SEC * s, vec![cumulative("/a", u64::from(s))]);
    }
    assert_eq!(ring.samples.len(), RING_SAMPLES);
    let now = start + SEC * total;
    let current = [cumulative("/a", u64::from(total))];
    let windowed = ring.window(now, Duration::from_secs(10_000), &current);
    assert_eq!(windowed.covered, SEC * RING_SAMPLES as u32);
    assert_eq!(requests(&windowed, "/a"), RING_SAMPLES as u64);
}

#[tokio::test(start_paused = true)]
async fn the_sampler_reads_the_recorder_once_a_second() {
    let metrics = Arc::new(PrometheusMetrics::default());
    let ring = Arc::new(Mutex::new(SampleRing::new(Instant::now())));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_sampler(
        Arc::clone(&metrics) as Arc<dyn ProxyMetrics>,
        Arc::clone(&ring),
        shutdown.clone(),
    ));
    let record = RequestRecord {
        direction: Direction::Inbound,
        service: Label::intern("billing"),
        route: Label::intern("/a"),
        method: MethodLabel::Get,
        status: StatusCode::OK,
        peer: Label::intern("spiffe://meshwork.local/ns/default/sa/store"),
        elapsed: Duration::from_millis(1),
        denied: false,
    };
    // Requests at 0.5 s, 1.5 s and 2.5 s; samples at 1 s, 2 s and 3 s; asked at 3.5 s.
    tokio::time::sleep(SEC / 2).await;
    for _ in 0..3 {
        metrics.request(&record);
        tokio::time::sleep(SEC).await;
    }
    let now = Instant::now();
    let current = metrics.sample().unwrap();
    {
        let ring = ring.lock().unwrap();
        assert_eq!(ring.samples.len(), 3);
        let last_two = ring.window(now, Duration::from_millis(2_500), &current);
        assert_eq!(requests(&last_two, "/a"), 2, "{last_two:?}");
        assert_eq!(last_two.covered, Duration::from_millis(2_500));
    }
    shutdown.cancel();
    task.await.unwrap();
}
