use std::sync::Mutex;

use api::contract::traffic;
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::time::Instant;
use tower::Layer;

use super::*;
use crate::body::{empty, full};
use crate::resilience::test_support::{
    Scripted, Step, closed_before_head, connect_refused, fail, refuse,
};
use crate::resilience::timeout::TimeoutLayer;

#[derive(Default)]
struct Recorded {
    retries: Mutex<Vec<RetryReason>>,
    exhausted: Mutex<usize>,
}

impl ProxyMetrics for Recorded {
    fn retry(&self, service: Label, reason: RetryReason) {
        assert_eq!(service.as_str(), "billing");
        self.retries.lock().unwrap().push(reason);
    }

    fn retry_budget_exhausted(&self, service: Label) {
        assert_eq!(service.as_str(), "billing");
        *self.exhausted.lock().unwrap() += 1;
    }
}

impl Recorded {
    fn retries(&self) -> Vec<RetryReason> {
        self.retries.lock().unwrap().clone()
    }
}

fn rule(attempts: u32, codes: &[u16]) -> RetryRule {
    RetryRule {
        attempts,
        codes: codes.to_vec(),
        grpc_codes: Vec::new(),
        backoff_ms: 100,
        max_backoff_ms: 250,
    }
}

/// A generous budget: the tests that are not about it never reach it.
fn plenty() -> Arc<RetryBudget> {
    Arc::new(RetryBudget::new(&traffic::RetryBudget {
        min_retry_rate_count: 1_000,
        ..traffic::RetryBudget::default()
    }))
}

struct Setup {
    metrics: Arc<Recorded>,
    layer: RetryLayer,
}

fn setup(rule: Option<&RetryRule>, budget: Arc<RetryBudget>) -> Setup {
    let metrics = Arc::new(Recorded::default());
    let dyn_metrics: Arc<dyn ProxyMetrics> = Arc::clone(&metrics) as _;
    let layer = RetryLayer::with_jitter(
        RetryPolicy::new(rule),
        budget,
        Label::intern("billing"),
        dyn_metrics,
        || 1.0,
    );
    Setup { metrics, layer }
}

fn request(method: Method, body: ProxyBody) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri("http://billing/charges")
        .body(body)
        .unwrap()
}

fn keyed(mut request: Request<ProxyBody>) -> Request<ProxyBody> {
    let key = "7c1e0a4e".parse().unwrap();
    request.headers_mut().insert("idempotency-key", key);
    request
}

async fn status_of(
    service: impl Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    request: Request<ProxyBody>,
) -> Result<StatusCode, ForwardError> {
    service.oneshot(request).await.map(|r| r.status())
}

const UNAVAILABLE: Step = Step::Status(StatusCode::SERVICE_UNAVAILABLE);

#[tokio::test(start_paused = true)]
async fn a_listed_status_is_retried_with_capped_exponential_backoff_until_it_succeeds() {
    let Setup { metrics, layer } = setup(Some(&rule(3, &[503])), plenty());
    let upstream = Scripted::new([UNAVAILABLE, UNAVAILABLE, UNAVAILABLE]);
    let started = Instant::now();
    let status = status_of(layer.layer(upstream.clone()), request(Method::GET, empty())).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    assert_eq!(upstream.calls(), 4);
    assert_eq!(metrics.retries(), [RetryReason::Status; 3]);
    // Jitter fixed at 1: each wait is its ceiling, 100 ms doubling, capped at 250 ms.
    assert_eq!(started.elapsed(), Duration::from_millis(100 + 200 + 250));
}

#[tokio::test(start_paused = true)]
async fn attempts_bound_the_retries_and_the_last_answer_goes_to_the_caller() {
    let Setup { metrics, layer } = setup(Some(&rule(2, &[503])), plenty());
    let upstream = Scripted::new([UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE]);
    let status = status_of(layer.layer(upstream.clone()), request(Method::GET, empty())).await;
    assert_eq!(status.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.calls(), 3);
    assert_eq!(metrics.retries().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn statuses_not_listed_are_answers() {
    let Setup { metrics, layer } = setup(Some(&rule(3, &[503])), plenty());
    let upstream = Scripted::new([Step::Status(StatusCode::INTERNAL_SERVER_ERROR)]);
    let status = status_of(layer.layer(upstream.clone()), request(Method::GET, empty())).await;
    assert_eq!(status.unwrap(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(upstream.calls(), 1);
    assert!(metrics.retries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_post_without_idempotency_key_that_may_have_been_acted_on_is_sent_once() {
    let Setup { metrics, layer } = setup(Some(&rule(3, &[503])), plenty());
    let reset = closed_before_head().await;
    let upstream = Scripted::new([
        UNAVAILABLE,
        fail(move || ForwardError::PeerRequest {
            service: "billing".to_owned(),
            retryable: false,
            source: reset,
        }),
    ]);
    let post = || request(Method::POST, full("{\"amount\":5}"));
    let status = status_of(layer.layer(upstream.clone()), post()).await;
    assert_eq!(status.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    let error = status_of(layer.layer(upstream.clone()), post()).await;
    assert!(matches!(error, Err(ForwardError::PeerRequest { .. })));
    assert_eq!(upstream.calls(), 2, "one try each");
    assert!(metrics.retries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_post_is_sent_again_with_its_body_when_the_failure_proves_it_was_never_sent() {
    let Setup { metrics, layer } = setup(Some(&rule(3, &[503])), plenty());
    let overloaded = || ForwardError::Overloaded {
        service: "billing".to_owned(),
        endpoint: ([127, 0, 0, 1], 4001).into(),
        limit: crate::forward_error::OverloadLimit::Requests,
        max: 1,
    };
    let upstream = Scripted::new([refuse(connect_refused), refuse(overloaded)]);
    let post = request(Method::POST, full("{\"amount\":5}"));
    let status = status_of(layer.layer(upstream.clone()), post).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].method, Method::POST);
    assert_eq!(seen[2].body, Bytes::from_static(b"{\"amount\":5}"));
    assert_eq!(
        metrics.retries(),
        [RetryReason::Connect, RetryReason::Overloaded]
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_with_no_route_is_not_retried() {
    let Setup { metrics, layer } = setup(Some(&rule(3, &[503])), plenty());
    let no_route = || ForwardError::NoRoute {
        service: "billing".to_owned(),
        reason: "the route rule's backend has weight 0".to_owned(),
    };
    let upstream = Scripted::new([refuse(no_route)]);
    let status = status_of(layer.layer(upstream.clone()), request(Method::GET, empty())).await;
    assert!(
        matches!(status, Err(ForwardError::NoRoute { .. })),
        "{status:?}"
    );
    assert_eq!(
        upstream.calls(),
        1,
        "configuration, not the network: sent once"
    );
    assert!(metrics.retries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_post_with_an_idempotency_key_is_retried_after_a_reset_with_its_whole_body() {
    let Setup { metrics, layer } = setup(Some(&rule(2, &[])), plenty());
    let reset = closed_before_head().await;
    let upstream = Scripted::new([fail(move || ForwardError::PeerRequest {
        service: "billing".to_owned(),
        retryable: false,
        source: reset,
    })]);
    let post = keyed(request(Method::POST, full("{\"amount\":5}")));
    let status = status_of(layer.layer(upstream.clone()), post).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body, "the first try read the body");
    assert_eq!(seen[1].body, Bytes::from_static(b"{\"amount\":5}"));
    assert_eq!(seen[1].headers["idempotency-key"], "7c1e0a4e");
    assert_eq!(metrics.retries(), [RetryReason::Reset]);
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_is_retried_within_the_request_timeout() {
    let Setup { metrics, layer } = setup(Some(&rule(5, &[])), plenty());
    let no_metrics: Arc<dyn ProxyMetrics> = Arc::new(crate::metrics::NoMetrics);
    let billing = Label::intern("billing");
    let per_try = TimeoutLayer::new(
        Duration::from_secs(1),
        TimeoutKind::Try,
        billing,
        Arc::clone(&no_metrics),
    );
    let whole = TimeoutLayer::new(
        Duration::from_millis(2_500),
        TimeoutKind::Request,
        billing,
        no_metrics,
    );
    let upstream = Scripted::new([Step::Stall, Step::Stall]);
    let service = whole.layer(layer.layer(per_try.layer(upstream.clone())));
    let status = status_of(service, request(Method::GET, empty())).await;
    assert_eq!(status.unwrap(), StatusCode::OK, "the third try answers");
    assert_eq!(metrics.retries(), [RetryReason::Timeout; 2]);
    // Stalling forever: the request timeout ends it, whatever the attempts left.
    let upstream = Scripted::new(std::iter::repeat_with(|| Step::Stall).take(10));
    let service = whole.layer(layer.layer(per_try.layer(upstream.clone())));
    let error = status_of(service, request(Method::GET, empty())).await;
    assert!(matches!(
        error,
        Err(ForwardError::Timeout {
            which: TimeoutKind::Request,
            ..
        })
    ));
    assert_eq!(
        upstream.calls(),
        3,
        "1 s, 100 ms, 1 s, 200 ms, then 200 ms of the third"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retries_and_says_so() {
    // No share of requests, one retry per minute regardless.
    let budget = Arc::new(RetryBudget::new(&traffic::RetryBudget {
        percent: 0,
        interval_ms: 10_000,
        min_retry_rate_count: 1,
        min_retry_rate_interval_ms: 60_000,
    }));
    let Setup { metrics, layer } = setup(Some(&rule(5, &[503])), budget);
    let upstream = Scripted::new(std::iter::repeat_with(|| UNAVAILABLE).take(10));
    let status = status_of(layer.layer(upstream.clone()), request(Method::GET, empty())).await;
    assert_eq!(status.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.calls(), 2, "one retry, then the budget said no");
    assert_eq!(metrics.retries().len(), 1);
    assert_eq!(*metrics.exhausted.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_trailers_only_grpc_status_in_the_rule_is_retried() {
    let rule = RetryRule {
        grpc_codes: vec![14],
        ..rule(2, &[])
    };
    let Setup { metrics, layer } = setup(Some(&rule), plenty());
    let grpc = |code: &'static str| {
        Step::Respond(Box::new(move || {
            let mut response = Response::new(empty());
            response
                .headers_mut()
                .insert("grpc-status", code.parse().unwrap());
            response
        }))
    };
    let upstream = Scripted::new([grpc("14"), grpc("3")]);
    let call = keyed(request(Method::POST, full("\0\0\0\0\0")));
    let response = layer.layer(upstream.clone()).oneshot(call).await.unwrap();
    assert_eq!(
        response.headers()["grpc-status"],
        "3",
        "INVALID_ARGUMENT is an answer"
    );
    assert_eq!(upstream.calls(), 2);
    assert_eq!(metrics.retries(), [RetryReason::GrpcStatus]);
}

#[tokio::test(start_paused = true)]
async fn without_a_rule_only_what_was_never_sent_is_replayed_once() {
    let Setup { metrics, layer } = setup(None, plenty());
    let upstream = Scripted::new([UNAVAILABLE]);
    let status = status_of(layer.layer(upstream.clone()), request(Method::GET, empty())).await;
    assert_eq!(status.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    let upstream = Scripted::new([refuse(connect_refused), refuse(connect_refused)]);
    let error = status_of(layer.layer(upstream.clone()), request(Method::GET, empty())).await;
    assert!(matches!(error, Err(ForwardError::PeerConnect { .. })));
    assert_eq!(upstream.calls(), 2);
    assert_eq!(metrics.retries(), [RetryReason::Connect]);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_limit_is_sent_once() {
    let Setup { metrics, layer } = setup(Some(&rule(3, &[503])), plenty());
    let upstream = Scripted::new([UNAVAILABLE]);
    let big = Bytes::from(vec![b'x'; MAX_REPLAY_BYTES + 1]);
    let status = status_of(
        layer.layer(upstream.clone()),
        request(Method::PUT, full(big)),
    )
    .await;
    assert_eq!(status.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.calls(), 1);
    assert!(metrics.retries().is_empty());
}
