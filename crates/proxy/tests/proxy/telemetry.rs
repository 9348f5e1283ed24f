//! Request metrics end to end: `store`'s and `billing`'s sidecars, both started with the
//! default recorder and an admin listener, `billing` declaring the route templates
//! `/charges` and `/charges/{id}`. Requests go through the real pair (mTLS, h2); each
//! sidecar's `/metrics` then counts them by template — never by raw path.

use std::net::SocketAddr;
use std::sync::Arc;

use api::contract::{ServiceRoute, Snapshot};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use identity::SpiffeId;
use proxy::{ControlSource, Proxy, ProxyConfig, ReadyInfo};
use testkit::harness::via_proxy;
use testkit::{EchoServer, TestCa};
use tokio_util::sync::CancellationToken;

use crate::HANG_GUARD;
use crate::mesh::{BILLING, STORE, closed_port};

const TD: &str = "spiffe://meshwork.local";

/// `billing` at `addr`, presenting `identity`, with its route templates.
fn billing(addr: SocketAddr, identity: SpiffeId) -> Snapshot {
    let route = ServiceRoute {
        name: "billing".to_owned(),
        endpoints: vec![api::contract::Endpoint { addr, identity }],
        routes: vec![
            "/charges".parse().unwrap(),
            "/charges/{id}".parse().unwrap(),
        ],
        traffic: Default::default(),
    };
    Snapshot {
        version: 1,
        services: [("billing".to_owned(), route)].into(),
        ..Snapshot::default()
    }
}

async fn start(
    ca: &TestCa,
    workload: &str,
    sa: &str,
    app: SocketAddr,
    snapshot: Snapshot,
) -> Proxy {
    let control = ControlSource::Static {
        svid: ca.svid(sa).unwrap(),
        bundle: ca.bundle(),
        snapshot,
    };
    let mut config = ProxyConfig::new(workload, control, app);
    config.admin_listen = Some(([127, 0, 0, 1], 0).into());
    Proxy::start(config).await.unwrap()
}

async fn scrape(info: &ReadyInfo) -> String {
    let admin = info.admin.expect("admin listener");
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, admin.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let send = testkit::harness::send_http1(admin, request);
    let response = tokio::time::timeout(HANG_GUARD, send)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the sample line `series` (name and labels exactly).
fn value(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn requests_are_counted_by_route_template_on_both_sidecars() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
    let app = EchoServer::start().await.unwrap();
    let billing_id = ca.id(BILLING).unwrap();
    // billing's own snapshot names it (so its inbound side knows the templates); the
    // address there is never dialled.
    let billing_proxy = start(
        &ca,
        "billing",
        BILLING,
        app.addr(),
        billing(closed_port().await, billing_id.clone()),
    )
    .await;
    let billing_info = billing_proxy.ready_info().clone();
    let store_snapshot = billing(billing_info.inbound, billing_id);
    let store_proxy = start(&ca, "store", STORE, closed_port().await, store_snapshot).await;
    let store_info = store_proxy.ready_info().clone();
    let shutdown = CancellationToken::new();
    let served = [
        tokio::spawn(billing_proxy.serve(shutdown.clone().cancelled_owned())),
        tokio::spawn(store_proxy.serve(shutdown.clone().cancelled_owned())),
    ];

    for path in ["/charges/7", "/charges/8", "/nope/1"] {
        let url = format!("http://billing{path}");
        let (status, body) = via_proxy(store_info.outbound, "GET", &url, &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {body:?}");
    }

    let inbound = scrape(&billing_info).await;
    let series = |route: &str, peer: &str| {
        format!(
            "meshwork_requests_total{{direction=\"inbound\",service=\"billing\",route=\"{route}\",method=\"GET\",status_code=\"200\",peer=\"{TD}{peer}\"}}"
        )
    };
    assert_eq!(
        value(&inbound, &series("/charges/{id}", STORE)),
        Some(2),
        "{inbound}"
    );
    assert_eq!(
        value(&inbound, &series("[unmatched]", STORE)),
        Some(1),
        "{inbound}"
    );
    let count = "meshwork_request_duration_seconds_count{direction=\"inbound\",service=\"billing\",route=\"/charges/{id}\"}";
    assert_eq!(value(&inbound, count), Some(2), "{inbound}");
    assert!(
        inbound.contains("# TYPE meshwork_requests counter\n"),
        "{inbound}"
    );
    assert!(
        inbound.contains("# TYPE meshwork_request_duration_seconds histogram\n"),
        "{inbound}"
    );
    assert!(
        inbound.ends_with("# EOF\n"),
        "one OpenMetrics document: {inbound}"
    );
    let h2 = "meshwork_connections_total{direction=\"inbound\",protocol=\"http2\"}";
    assert_eq!(
        value(&inbound, h2),
        Some(1),
        "one pooled h2 connection: {inbound}"
    );

    let outbound = scrape(&store_info).await;
    let to_billing = format!(
        "meshwork_requests_total{{direction=\"outbound\",service=\"billing\",route=\"/charges/{{id}}\",method=\"GET\",status_code=\"200\",peer=\"{TD}{BILLING}\"}}"
    );
    assert_eq!(value(&outbound, &to_billing), Some(2), "{outbound}");

    for text in [&inbound, &outbound] {
        for raw in ["/charges/7", "/charges/8", "/nope/1", "/nope"] {
            assert!(!text.contains(raw), "raw path {raw} in a label:\n{text}");
        }
    }

    shutdown.cancel();
    for task in served {
        tokio::time::timeout(HANG_GUARD, task)
            .await
            .unwrap()
            .unwrap();
    }
}
