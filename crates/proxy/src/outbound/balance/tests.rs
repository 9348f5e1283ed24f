#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use api::contract::traffic::OutlierDetection;
use tower::{Layer, ServiceExt};

use super::*;
use crate::forward_error::TimeoutKind;
use crate::metrics::NoMetrics;
use crate::resilience::EndpointKey;
use crate::resilience::timeout::TimeoutLayer;

fn slots(n: u16) -> Vec<Arc<EndpointSlot>> {
    (0..n)
        .map(|port| {
            Arc::new(EndpointSlot::new(EndpointKey {
                addr: ([127, 0, 0, 1], port).into(),
                identity: "spiffe://meshwork.local/ns/default/sa/billing"
                    .parse()
                    .unwrap(),
            }))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_less_loaded_of_two_wins_and_tried_endpoints_are_skipped() {
    let endpoints = slots(2);
    let now = Instant::now();
    endpoints[0].load().start();
    endpoints[0]
        .load()
        .finish(Some((Duration::from_millis(50), now)));
    for _ in 0..100 {
        assert_eq!(pick(&endpoints, 0, ((1024, u32::MAX), None), now), Some(1));
    }
    assert_eq!(
        pick(&endpoints, 0b10, ((1024, u32::MAX), None), now),
        Some(0)
    );
    assert_eq!(pick(&endpoints, 0b11, ((1024, u32::MAX), None), now), None);
    assert_eq!(pick(&slots(1), 0, ((1024, u32::MAX), None), now), Some(0));
    assert_eq!(pick(&slots(1), 1, ((1024, u32::MAX), None), now), None);
    assert_eq!(pick(&[], 0, ((1024, u32::MAX), None), now), None);
}

#[tokio::test(start_paused = true)]
async fn endpoints_past_the_first_64_are_picked_once_those_are_tried() {
    let endpoints = slots(70);
    let now = Instant::now();
    for _ in 0..100 {
        let picked = pick(&endpoints, u64::MAX, ((1024, u32::MAX), None), now);
        assert!(picked.is_some_and(|i| i >= 64), "{picked:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn endpoints_at_max_requests_are_avoided_until_a_body_ends() {
    let endpoints = slots(2);
    let now = Instant::now();
    let open = crate::endpoint_slot::open_requests::OpenRequest::begin(&endpoints[0]);
    assert_eq!(
        endpoints[0].full((1024, 1)),
        Some((OverloadLimit::Requests, 1))
    );
    for _ in 0..100 {
        assert_eq!(pick(&endpoints, 0, ((1024, 1), None), now), Some(1));
    }
    drop(open);
    assert_eq!(endpoints[0].full((1024, 1)), None);
}

#[tokio::test(start_paused = true)]
async fn full_endpoints_are_avoided_while_another_has_room() {
    let endpoints = slots(3);
    let now = Instant::now();
    endpoints[1].load().start();
    for _ in 0..100 {
        assert_ne!(pick(&endpoints, 0, ((1, u32::MAX), None), now), Some(1));
    }
    // Every untried endpoint full: picked, for the caller to refuse.
    assert_eq!(pick(&endpoints, 0b101, ((1, u32::MAX), None), now), Some(1));
    let config = OutlierDetection {
        consecutive_failures: 1,
        ..OutlierDetection::default()
    };
    let outlier = OutlierDetector::new(Label::intern("billing"), &config, Arc::new(NoMetrics));
    outlier.set_endpoints(endpoints.iter().map(|slot| slot.key()));
    assert!(outlier.record(endpoints[0].key(), Outcome::Failure, now));
    assert_eq!(
        pick(&endpoints, 0b100, ((1, u32::MAX), Some(&outlier)), now),
        Some(0),
        "ejected beats full"
    );
    for _ in 0..100 {
        let picked = pick(&endpoints, 0, ((1024, u32::MAX), Some(&outlier)), now);
        assert_ne!(
            picked,
            Some(0),
            "ejected: not picked while others are available"
        );
    }
}

/// Two endpoints under outlier detection that ejects at the first failure, and a
/// service that starts an [`Attempt`] on the first for each request and never answers.
fn stalled_first_endpoint() -> (
    Arc<OutlierDetector>,
    Arc<EndpointSlot>,
    impl Service<
        Request<ProxyBody>,
        Response = Response<ProxyBody>,
        Error = ForwardError,
        Future: Send + 'static,
    > + Clone,
) {
    let endpoints = slots(2);
    let config = OutlierDetection {
        consecutive_failures: 1,
        ..OutlierDetection::default()
    };
    let outlier = OutlierDetector::new(Label::intern("billing"), &config, Arc::new(NoMetrics));
    outlier.set_endpoints(endpoints.iter().map(|slot| slot.key()));
    let (outlier, slot) = (Arc::new(outlier), Arc::clone(&endpoints[0]));
    let (o, s) = (Arc::clone(&outlier), Arc::clone(&slot));
    let service = tower::service_fn(move |request: Request<ProxyBody>| {
        let (outlier, slot) = (Arc::clone(&o), Arc::clone(&s));
        let timeouts = request.extensions().get::<TimeoutFlags>().cloned();
        async move {
            let _attempt = Attempt::start(Some(&outlier), &slot, true, timeouts);
            std::future::pending::<Result<Response<ProxyBody>, ForwardError>>().await
        }
    });
    (outlier, slot, service)
}

fn try_timeout(after: Duration) -> TimeoutLayer {
    let metrics = Arc::new(NoMetrics);
    TimeoutLayer::new(after, TimeoutKind::Try, Label::intern("billing"), metrics)
}

fn get() -> Request<ProxyBody> {
    Request::get("http://billing/charges")
        .body(crate::body::empty())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_try_a_route_timeout_gave_up_on_is_a_failure_of_its_endpoint() {
    let (outlier, slot, upstream) = stalled_first_endpoint();
    let service = try_timeout(Duration::from_millis(200)).layer(upstream);
    let error = service.oneshot(get()).await.unwrap_err();
    assert!(matches!(error, ForwardError::Timeout { .. }), "{error:?}");
    assert!(
        !outlier.is_available(slot.key(), Instant::now()),
        "ejected: a mesh timeout found it stalled"
    );
    assert_eq!(slot.load().in_flight(), 0);
    assert!(
        slot.load().cost(Instant::now()) > 199e6,
        "the wait is its RTT"
    );
}

#[tokio::test(start_paused = true)]
async fn a_try_its_caller_gave_up_on_says_nothing_about_its_endpoint() {
    // Under a route timeout that did not fire, and without any route timeout.
    let (outlier, slot, upstream) = stalled_first_endpoint();
    let timed = try_timeout(Duration::from_secs(10)).layer(upstream.clone());
    let untimed = upstream;
    let waited = Duration::from_millis(200);
    let gave_up = tokio::time::timeout(waited, timed.oneshot(get())).await;
    assert!(gave_up.is_err(), "the caller went away first");
    let gave_up = tokio::time::timeout(waited, untimed.oneshot(get())).await;
    assert!(gave_up.is_err(), "the caller went away first");
    assert!(
        outlier.is_available(slot.key(), Instant::now()),
        "not ejected: impatient callers are no failure of the endpoint"
    );
    assert_eq!(slot.load().in_flight(), 0);
    assert!(
        slot.load().cost(Instant::now()) > 199e6,
        "the time waited is a lower bound of its round trip"
    );
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_gets_a_share_when_loads_are_equal() {
    let endpoints = slots(3);
    let now = Instant::now();
    let mut seen = [0u32; 3];
    for _ in 0..300 {
        seen[pick(&endpoints, 0, ((1024, u32::MAX), None), now).unwrap()] += 1;
    }
    assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
}
