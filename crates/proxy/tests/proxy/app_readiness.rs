//! A sidecar that serves before its app listens: callers get a retryable `503` with
//! `Retry-After` (never a `502`) until the app opens its port, then the app's answers;
//! a refusal after the app has listened is a failure again (`502`).

use bytes::Bytes;
use http::StatusCode;
use proxy::Protocol;
use testkit::EchoServer;
use testkit::harness::via_proxy;

use super::mesh::{Mesh, closed_port};

/// `GET http://billing/healthz` through store's outbound: status, `Retry-After`, body.
async fn call(mesh: &Mesh) -> (StatusCode, Option<String>, Bytes) {
    let request = http::Request::get("http://billing/healthz")
        .header(http::header::HOST, "billing")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let send = testkit::harness::send_http1(mesh.store.outbound, request);
    let response = tokio::time::timeout(super::HANG_GUARD, send)
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, retry_after, body)
}

#[tokio::test]
async fn before_the_app_listens_callers_get_a_retryable_503_not_a_502() {
    let app = closed_port().await;
    let mesh = Mesh::start_with_app(app).await;

    for _ in 0..3 {
        let (status, retry_after, body) = call(&mesh).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        let error = super::json(&body);
        assert_eq!(error["error"], "app_starting", "{error}");
        assert_eq!(error["side"], "upstream", "{error}");
        assert_eq!(error["retryable"], true, "{error}");
    }
    assert_eq!(
        mesh.billing_probe.inbound.lock().unwrap()[0].1,
        Protocol::Http2
    );

    // The app opens its port: the very next call reaches it (the refusal is what decides,
    // not the probe's schedule).
    let _echo = EchoServer::start_on(app).await.unwrap();
    let (status, _, body) = call(&mesh).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(mesh.billing_app.is_listening());
}

#[tokio::test]
async fn a_refusal_after_the_app_has_listened_is_a_502() {
    let app = closed_port().await;
    let mesh = Mesh::start_with_app(app).await;
    let (status, _, _) = call(&mesh).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let listener = tokio::net::TcpListener::bind(app).await.unwrap();
    mesh.billing_app.listening().await;
    drop(listener);
    let (status, body) = via_proxy(mesh.store.outbound, "GET", "http://billing/x", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body:?}");
    let error = super::json(&body);
    assert_eq!(error["error"], "upstream_unavailable", "{error}");
    assert_eq!(error["retryable"], true, "{error}");
}
