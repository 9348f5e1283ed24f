use std::sync::Mutex;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt};

use super::*;
use crate::body::{empty, full};
use crate::resilience::test_support::{Scripted, Step, connect_refused, refuse};

#[derive(Default)]
struct Recorded(Mutex<Vec<(Label, SocketAddr, OverloadLimit)>>);

impl ProxyMetrics for Recorded {
    fn circuit_open(&self, service: Label, endpoint: SocketAddr, limit: OverloadLimit) {
        self.0.lock().unwrap().push((service, endpoint, limit));
    }
}

const ENDPOINT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    4001,
));

fn circuit(max_pending_requests: u32, max_requests: u32) -> (Arc<EndpointCircuit>, Arc<Recorded>) {
    let metrics = Arc::new(Recorded::default());
    let dyn_metrics: Arc<dyn ProxyMetrics> = Arc::clone(&metrics) as _;
    let limits = CircuitBreaker {
        max_pending_requests,
        max_requests,
    };
    let circuit = EndpointCircuit::new(Label::intern("billing"), ENDPOINT, &limits, dyn_metrics);
    (Arc::new(circuit), metrics)
}

fn get() -> Request<ProxyBody> {
    Request::builder()
        .method(Method::GET)
        .uri("http://billing/charges")
        .body(empty())
        .unwrap()
}

fn streaming_answer() -> Step {
    Step::Respond(Box::new(|| Response::new(full("a body still streaming"))))
}

#[tokio::test]
async fn a_full_endpoint_refuses_with_a_retryable_503_until_the_body_in_flight_ends() {
    let (circuit, metrics) = circuit(0, 1);
    let upstream = Scripted::new([streaming_answer(), streaming_answer()]);
    let service = CircuitLayer::new(Arc::clone(&circuit)).layer(upstream.clone());
    let first = service.clone().oneshot(get()).await.unwrap();
    // The head is in; the body is not: the endpoint is still busy with it.
    assert!(!circuit.has_capacity());
    let refused = service.clone().oneshot(get()).await.unwrap_err();
    assert!(matches!(
        refused,
        ForwardError::Overloaded {
            limit: OverloadLimit::Requests,
            max: 1,
            ..
        }
    ));
    assert!(refused.retryable());
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.calls(), 1, "the refused request was not sent");
    let mut body = first.into_body();
    let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(data, "a body still streaming");
    assert!(body.frame().await.is_none());
    assert!(
        circuit.has_capacity(),
        "the body's end gave the permit back"
    );
    drop(body);
    service.oneshot(get()).await.unwrap();
    let counted = metrics.0.lock().unwrap().clone();
    assert_eq!(
        counted,
        [(Label::intern("billing"), ENDPOINT, OverloadLimit::Requests)]
    );
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_response_head_are_capped_as_pending() {
    let (circuit, metrics) = circuit(1, 10);
    let upstream = Scripted::new([Step::Stall, streaming_answer()]);
    let service = CircuitLayer::new(Arc::clone(&circuit)).layer(upstream.clone());
    let stalled = tokio::spawn(service.clone().oneshot(get()));
    tokio::task::yield_now().await;
    let refused = service.clone().oneshot(get()).await.unwrap_err();
    assert!(matches!(
        refused,
        ForwardError::Overloaded {
            limit: OverloadLimit::Pending,
            ..
        }
    ));
    // The caller gives up on the stalled one (a timeout would): its permits go back.
    stalled.abort();
    let _ = stalled.await;
    // A head that arrived is no longer pending, even while its body streams.
    let streaming = service.clone().oneshot(get()).await.unwrap();
    service.oneshot(get()).await.unwrap();
    drop(streaming);
    assert_eq!(metrics.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn failures_and_dropped_bodies_give_their_permits_back() {
    let (circuit, _) = circuit(1, 1);
    let upstream = Scripted::new([refuse(connect_refused), streaming_answer()]);
    let service = CircuitLayer::new(Arc::clone(&circuit)).layer(upstream.clone());
    assert!(service.clone().oneshot(get()).await.is_err());
    assert!(circuit.has_capacity());
    let answered = service.clone().oneshot(get()).await.unwrap();
    assert!(!circuit.has_capacity());
    drop(answered);
    assert!(circuit.has_capacity());
}

#[tokio::test]
async fn a_cap_of_zero_is_no_cap() {
    let (circuit, metrics) = circuit(0, 0);
    let upstream = Scripted::new((0..5).map(|_| streaming_answer()));
    let service = CircuitLayer::new(Arc::clone(&circuit)).layer(upstream);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(service.clone().oneshot(get()).await.unwrap());
    }
    assert!(circuit.has_capacity());
    assert!(metrics.0.lock().unwrap().is_empty());
}
