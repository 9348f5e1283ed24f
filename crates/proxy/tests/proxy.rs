//! End-to-end tests of the data path with real sockets and real mTLS: two sidecars
//! (`store`, `billing`) in-process, wired by `ControlSource::Static` (SVIDs from a
//! testkit CA, a hand-written snapshot). The control-socket path is covered by the
//! lead's end-to-end tests with the real control plane.
//!
//! Every test runs on tokio's default *current-thread* test runtime, which also
//! proves the proxy needs no worker threads — except the tracing tests, which wait for
//! the collector's output on a blocking thread while the sidecars serve.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "proxy/admin.rs"]
mod admin;
#[path = "proxy/app_readiness.rs"]
mod app_readiness;
#[path = "proxy/egress.rs"]
mod egress;
#[path = "proxy/fake_control.rs"]
mod fake_control;
#[path = "proxy/faults.rs"]
mod faults;
#[path = "proxy/grpc.rs"]
mod grpc;
#[path = "proxy/h1_peer.rs"]
mod h1_peer;
#[path = "proxy/keepalive_race.rs"]
mod keepalive_race;
#[path = "proxy/mesh.rs"]
mod mesh;
#[path = "proxy/mesh_tunnel.rs"]
mod mesh_tunnel;
#[path = "proxy/observe.rs"]
mod observe;
#[path = "proxy/observe_guards.rs"]
mod observe_guards;
#[path = "proxy/opaque.rs"]
mod opaque;
#[path = "proxy/pod.rs"]
mod pod;
#[path = "proxy/reserved_headers.rs"]
mod reserved_headers;
#[path = "proxy/resilience.rs"]
mod resilience;
#[path = "proxy/rotation.rs"]
mod rotation;
#[path = "proxy/scripted.rs"]
mod scripted;
#[path = "proxy/socket_source.rs"]
mod socket_source;
#[path = "proxy/spans.rs"]
mod spans;
#[path = "proxy/split.rs"]
mod split;
#[path = "proxy/telemetry.rs"]
mod telemetry;
#[path = "proxy/websocket.rs"]
mod websocket;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use mesh::{BILLING, Mesh, STORE};
use proxy::Protocol;
use serde_json::Value;
use testkit::harness::{raw_exchange, via_proxy};

/// Guard against a hung test (not a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(30);

fn json(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test]
async fn h1_request_reaches_billing_with_the_verified_caller_id() {
    let mesh = Mesh::start().await;
    let (status, body) = via_proxy(
        mesh.store.outbound,
        "POST",
        "http://billing/charges?x=1",
        &[],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let seen = json(&body);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/charges");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["headers"]["host"][0], "billing");
    assert_eq!(
        seen["headers"]["x-meshwork-client-id"],
        serde_json::json!([mesh.id(STORE).as_str()])
    );
    assert_eq!(seen["body_bytes"], 2);
}

#[tokio::test]
async fn spoofed_client_id_is_replaced() {
    let mesh = Mesh::start().await;
    let spoof = [
        (
            "x-meshwork-client-id",
            "spiffe://meshwork.local/ns/default/sa/admin",
        ),
        ("connection", "x-drop-me"),
        ("x-drop-me", "hop-by-hop"),
    ];
    let (status, body) = via_proxy(
        mesh.store.outbound,
        "GET",
        "http://billing:80/whoami",
        &spoof,
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(
        seen["headers"]["x-meshwork-client-id"],
        serde_json::json!([mesh.id(STORE).as_str()])
    );
    assert!(seen["headers"].get("x-drop-me").is_none(), "{seen}");
    assert!(seen["headers"].get("connection").is_none(), "{seen}");
}

#[tokio::test]
async fn plaintext_client_on_the_inbound_gets_no_http() {
    let mesh = Mesh::start().await;
    let request = b"GET /charges HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n";
    let received = raw_exchange(mesh.billing.inbound, request, HANG_GUARD)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains("HTTP/"),
        "inbound answered plaintext HTTP: {text:?}"
    );
    // Whatever came back is at most a TLS alert record (content type 21).
    assert!(received.is_empty() || received[0] == 0x15, "{received:?}");
}

#[tokio::test]
async fn proxies_negotiate_h2_and_multiplex_one_connection() {
    let mesh = Mesh::start().await;
    let warm = via_proxy(mesh.store.outbound, "GET", "http://billing/warm", &[], "")
        .await
        .unwrap();
    assert_eq!(warm.0, StatusCode::OK);
    let calls = (0..10).map(|i| {
        let url = format!("http://billing/parallel/{i}");
        let outbound = mesh.store.outbound;
        async move { via_proxy(outbound, "GET", &url, &[], "").await.unwrap().0 }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    let outbound = mesh.store_probe.outbound.lock().unwrap().clone();
    assert_eq!(
        outbound.len(),
        1,
        "one pooled connection expected: {outbound:?}"
    );
    assert_eq!(outbound[0].0, mesh.id(BILLING));
    assert_eq!(outbound[0].1, mesh.billing.inbound);
    assert_eq!(outbound[0].2, Protocol::Http2);
    let inbound = mesh.billing_probe.inbound.lock().unwrap().clone();
    assert_eq!(inbound, [(mesh.id(STORE), Protocol::Http2)]);
}

#[tokio::test]
async fn non_mesh_host_is_refused_with_403_json() {
    let mesh = Mesh::start().await;
    let (status, body) = via_proxy(mesh.store.outbound, "GET", "http://example.com/", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let error = json(&body);
    assert_eq!(error["error"], "egress_denied");
    assert_eq!(error["host"], "example.com");
    // No EgressPolicy in this mesh: egress is default-deny, and the body says so.
    assert_eq!(error["kind"], "default_deny");
    assert!(error["policy"].is_null(), "{error}");
    assert_eq!(error["decision_id"].as_str().unwrap().len(), 16);
}

#[tokio::test]
async fn a_misspelt_service_is_an_unknown_service_not_an_egress_denial() {
    use http_body_util::BodyExt;
    let mesh = Mesh::start().await;
    let (status, body) = via_proxy(
        mesh.store.outbound,
        "POST",
        "http://biling/charges",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:?}");
    let error = json(&body);
    assert_eq!(error["error"], "unknown_service", "{error}");
    assert_eq!(error["service"], "biling");
    assert_eq!(error["side"], "client");
    assert_eq!(error["retryable"], false);
    assert_eq!(error["did_you_mean"], serde_json::json!(["billing"]));
    assert!(
        error["description"]
            .as_str()
            .unwrap()
            .starts_with("no service `biling` in the mesh"),
        "{error}"
    );

    // The same for a tunnel; a name far from every service gets no suggestion.
    let request = http::Request::builder()
        .method("CONNECT")
        .uri("payments:443")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = testkit::harness::send_http1(mesh.store.outbound, request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error = json(&body);
    assert_eq!(error["error"], "unknown_service", "{error}");
    assert_eq!(error["did_you_mean"], serde_json::json!([]));
}

#[tokio::test]
async fn unreachable_service_yields_retryable_502_json() {
    let mesh = Mesh::start().await;
    let (status, body) = via_proxy(mesh.store.outbound, "POST", "http://ghost/x", &[], "data")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error = json(&body);
    assert_eq!(error["error"], "upstream_unavailable");
    assert_eq!(error["service"], "ghost");
    assert_eq!(error["retryable"], true);
    assert_eq!(error["side"], "peer");
}

#[tokio::test]
async fn connect_and_origin_form_are_refused_clearly() {
    use http_body_util::BodyExt;
    let mesh = Mesh::start().await;
    let outbound = mesh.store.outbound;
    let connect = |target: &'static str| async move {
        let request = http::Request::builder()
            .method("CONNECT")
            .uri(target)
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = testkit::harness::send_http1(outbound, request)
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };
    // A mesh service: the tunnel carries HTTP to it (tests/proxy/mesh_tunnel.rs).
    let (status, body) = connect("billing:443").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    // Outside the mesh: egress policy, default-deny.
    let (status, body) = connect("example.com:443").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["error"], "egress_denied");
    // Origin-form with no Host at all cannot be routed.
    let (status, body) = via_proxy(outbound, "GET", "/charges", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["error"], "bad_proxy_request");
}

#[tokio::test]
async fn origin_form_is_routed_by_host_header() {
    let mesh = Mesh::start().await;
    let (status, body) = via_proxy(
        mesh.store.outbound,
        "POST",
        "/charges",
        &[("host", "billing")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let echo = json(&body);
    assert_eq!(echo["path"], "/charges");
    assert_eq!(
        echo["headers"]["x-meshwork-client-id"],
        serde_json::json!([mesh.id(STORE).as_str()])
    );
}

/// A request body fed from a channel, so the test decides when each chunk is sent.
fn channel_body() -> (
    tokio::sync::mpsc::Sender<Bytes>,
    impl http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(http_body::Frame::data(chunk)), rx))
    });
    (tx, http_body_util::StreamBody::new(frames))
}

/// Starts `POST http://billing/echo-body` through store's outbound proxy, sends the
/// first chunk, and returns once the *echo of that chunk* came back: the request is
/// then still open on the client side, so no hop can have buffered the whole body.
async fn start_echo_stream(
    mesh: &Mesh,
    chunk: &Bytes,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    hyper::body::Incoming,
    usize,
) {
    use http_body_util::BodyExt;
    let (tx, body) = channel_body();
    let request = http::Request::post("http://billing/echo-body")
        .header("host", "billing")
        .body(body)
        .unwrap();
    tx.send(chunk.clone()).await.unwrap();
    let send = testkit::harness::send_http1(mesh.store.outbound, request);
    let response = tokio::time::timeout(HANG_GUARD, send)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(HANG_GUARD, body.frame())
        .await
        .expect("the first bytes never came back: some hop buffers the body")
        .unwrap()
        .unwrap();
    let received = first.data_ref().map_or(0, Bytes::len);
    assert!(received > 0);
    (tx, body, received)
}

async fn drain(mut body: hyper::body::Incoming) -> usize {
    use http_body_util::BodyExt;
    let mut received = 0;
    while let Some(frame) = tokio::time::timeout(HANG_GUARD, body.frame())
        .await
        .unwrap()
    {
        received += frame.unwrap().data_ref().map_or(0, Bytes::len);
    }
    received
}

#[tokio::test]
async fn twenty_megabytes_stream_through_without_buffering() {
    const TOTAL: usize = 20 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let mesh = Mesh::start().await;
    let chunk = Bytes::from(vec![b'm'; CHUNK]);
    let (tx, body, first) = start_echo_stream(&mesh, &chunk).await;
    let sender = tokio::spawn(async move {
        for _ in 1..TOTAL / CHUNK {
            tx.send(chunk.clone()).await.unwrap();
        }
    });
    let received = first + drain(body).await;
    sender.await.unwrap();
    assert_eq!(received, TOTAL);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let mut mesh = Mesh::start().await;
    let chunk = Bytes::from_static(b"in flight");
    let (tx, body, first) = start_echo_stream(&mesh, &chunk).await;
    mesh.shutdown.cancel();
    // The listener closes promptly; the request already in flight continues.
    let refused = loop {
        match tokio::net::TcpStream::connect(mesh.store.outbound).await {
            Err(_) => break true,
            Ok(_) => tokio::task::yield_now().await,
        }
    };
    assert!(refused);
    tx.send(chunk.clone()).await.unwrap();
    drop(tx);
    assert_eq!(first + drain(body).await, 2 * chunk.len());
    // With nothing left in flight, both proxies finish serving.
    for served in std::mem::take(&mut mesh.served) {
        tokio::time::timeout(HANG_GUARD, served)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn http2_to_the_app_when_configured() {
    let mesh = Mesh::start_with(proxy::AppProtocol::Http2).await;
    let (status, body) = via_proxy(
        mesh.store.outbound,
        "POST",
        "http://billing/charges",
        &[],
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let seen = json(&body);
    assert_eq!(
        seen["version"], "HTTP/2.0",
        "the app must be spoken to in h2c"
    );
    assert_eq!(
        seen["headers"]["x-meshwork-client-id"],
        serde_json::json!([mesh.id(STORE).as_str()])
    );
}

#[tokio::test]
async fn http1_between_sidecars_when_configured() {
    let mesh = Mesh::start_configured(proxy::AppProtocol::Http1, proxy::PeerProtocol::Http1).await;
    for _ in 0..3 {
        let (status, body) = via_proxy(mesh.store.outbound, "GET", "http://billing/x", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body:?}");
    }
    let outbound = mesh.store_probe.outbound.lock().unwrap().clone();
    assert_eq!(
        outbound.len(),
        1,
        "sequential h1 requests reuse one kept-alive connection"
    );
    assert_eq!(outbound[0].2, Protocol::Http1);
    let inbound = mesh.billing_probe.inbound.lock().unwrap().clone();
    assert_eq!(inbound, [(mesh.id(STORE), Protocol::Http1)]);
}
