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

#[test]
fn only_the_sidecars_own_403s_are_denials_except_a_peers_seen_outbound() {
    let response = |status: u16, header: bool, own: bool| {
        let mut response = Response::new(crate::body::empty());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        if header {
            let forged = HeaderValue::from_static("forged");
            response.headers_mut().insert(DECISION_ID_HEADER, forged);
        }
        if own {
            response.extensions_mut().insert(Denied {
                decision_id: HeaderValue::from_static("00ff"),
                policy: Some("default/p".to_owned()),
                rule: Some(2),
            });
        }
        response
    };
    // Inbound: a header proves nothing.
    assert_eq!(denial(&response(403, true, false), false), None);
    let own = denial(&response(403, true, true), false).unwrap();
    assert_eq!(
        (
            own.decision_id.to_str().unwrap(),
            own.policy.as_deref(),
            own.rule
        ),
        ("00ff", Some("default/p"), Some(2))
    );
    // Outbound: a peer sidecar's header is its denial, without policy or rule.
    let peer = denial(&response(403, true, false), true).unwrap();
    assert_eq!(
        (peer.decision_id.to_str().unwrap(), peer.policy, peer.rule),
        ("forged", None, None)
    );
    assert_eq!(denial(&response(200, true, true), true), None, "only a 403");
}
