use super::test_support::{Recorder, TD, id, request, routes, seen, through};
use super::*;

#[tokio::test]
async fn inbound_requests_carry_service_template_and_verified_caller() {
    let recorder = Arc::new(Recorder::default());
    let metrics = Arc::clone(&recorder) as Arc<dyn ProxyMetrics>;
    let layer = TelemetryLayer::inbound(routes(), id("billing"), metrics);
    let store = format!("{TD}/store");
    for (method, uri, host, status) in [
        ("GET", "/charges/7", Some("billing"), 200),
        ("POST", "/%63harges?x=1", Some("BILLING:80"), 201),
        ("GET", "/nope/1", Some("billing"), 404),
        // A host that names nothing this workload backs: its (only) service.
        ("BREW", "/charges/8", Some("elsewhere"), 403),
        ("GET", "http://billing/charges/9", None, 502),
    ] {
        through(
            layer.clone(),
            request(method, uri, host, Some("store")),
            status,
        )
        .await;
    }
    assert_eq!(
        seen(&recorder),
        [
            (
                "inbound",
                "billing",
                "/charges/{id}",
                "GET",
                200,
                store.as_str()
            ),
            (
                "inbound",
                "billing",
                "/charges",
                "POST",
                201,
                store.as_str()
            ),
            (
                "inbound",
                "billing",
                "[unmatched]",
                "GET",
                404,
                store.as_str()
            ),
            (
                "inbound",
                "billing",
                "/charges/{id}",
                "OTHER",
                403,
                store.as_str()
            ),
            (
                "inbound",
                "billing",
                "/charges/{id}",
                "GET",
                502,
                store.as_str()
            ),
        ]
    );
}

#[tokio::test]
async fn inbound_to_a_workload_backing_nothing_is_service_none() {
    let recorder = Arc::new(Recorder::default());
    let metrics = Arc::clone(&recorder) as Arc<dyn ProxyMetrics>;
    let layer = TelemetryLayer::inbound(routes(), id("reporting"), metrics);
    through(
        layer,
        request("GET", "/charges/7", Some("billing"), None),
        200,
    )
    .await;
    assert_eq!(
        seen(&recorder),
        [("inbound", "[none]", "[unmatched]", "GET", 200, "[none]")]
    );
}

#[test]
fn hosts_lose_their_port() {
    assert_eq!(without_port("billing:80"), "billing");
    assert_eq!(without_port("billing"), "billing");
    assert_eq!(without_port("[::1]:8080"), "[::1]");
    assert_eq!(without_port("[::1"), "[::1");
}
