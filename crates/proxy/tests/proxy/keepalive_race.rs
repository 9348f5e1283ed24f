//! The HTTP/1.1 keep-alive race on both hops that reuse idle connections: the server
//! closes a kept-alive connection just as the next request is written to it. An
//! idempotent request with an empty body is sent again on a fresh connection; anything
//! else gets the 502 with `retryable: false`, having reached the server exactly once.
//!
//! Each test sends a first request (answered with keep-alive, so the connection is
//! pooled), then the request under test, which the proxy writes to that pooled
//! connection and which the scripted upstream reads and drops (tests/proxy/scripted.rs).

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use testkit::harness::via_proxy;

use crate::h1_peer::{h1_only_acceptor, store_routing};
use crate::mesh::Mesh;
use crate::scripted::{self, Ending, Seen};
use crate::{HANG_GUARD, json};

const FLAKY: &str = "/ns/default/sa/flaky";

/// Through the store sidecar: `GET {url}/first`, then `method {url}/second` with `body`;
/// returns the second answer.
async fn first_then(
    outbound: SocketAddr,
    url: &str,
    method: &str,
    body: &'static str,
) -> (StatusCode, Bytes) {
    let first = format!("{url}/first");
    let (status, _) = via_proxy(outbound, "GET", &first, &[], "").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let second = format!("{url}/second");
    let send = via_proxy(outbound, method, &second, &[], body);
    tokio::time::timeout(HANG_GUARD, send)
        .await
        .unwrap()
        .unwrap()
}

fn requests(list: &[(usize, &str)]) -> Vec<(usize, String)> {
    list.iter().map(|(c, r)| (*c, (*r).to_owned())).collect()
}

/// The mesh with billing's app being the scripted upstream.
async fn app_hop(answered_first: usize, ending: Ending) -> (Mesh, Seen) {
    let (app, seen) = scripted::start(answered_first, ending, None).await;
    (Mesh::start_with_app(app).await, seen)
}

fn assert_not_retryable_502(status: StatusCode, body: &Bytes, side: &str) {
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body:?}");
    let error = json(body);
    assert_eq!(error["retryable"], false, "{error}");
    assert_eq!(error["side"], side, "{error}");
}

#[tokio::test]
async fn app_closing_a_reused_connection_under_a_get_is_retried_once_on_a_fresh_one() {
    for ending in [Ending::Drop, Ending::Reset] {
        let (mesh, seen) = app_hop(1, ending).await;
        let (status, body) = first_then(mesh.store.outbound, "http://billing", "GET", "").await;
        assert_eq!(status, StatusCode::OK, "{ending:?}: {body:?}");
        assert_eq!(&body[..], b"GET /second on connection 1");
        let expected = [(0, "GET /first"), (0, "GET /second"), (1, "GET /second")];
        assert_eq!(seen.requests(), requests(&expected), "{ending:?}");
        assert_eq!(seen.connections(), 2, "{ending:?}");
    }
}

#[tokio::test]
async fn app_closing_a_reused_connection_under_a_post_is_a_502_and_not_retried() {
    let (mesh, seen) = app_hop(1, Ending::Drop).await;
    let (status, body) = first_then(mesh.store.outbound, "http://billing", "POST", "").await;
    assert_not_retryable_502(status, &body, "upstream");
    let expected = [(0, "GET /first"), (0, "POST /second")];
    assert_eq!(seen.requests(), requests(&expected));
    assert_eq!(seen.connections(), 1);
}

#[tokio::test]
async fn app_closing_a_reused_connection_under_a_put_with_a_body_is_not_retried() {
    let (mesh, seen) = app_hop(1, Ending::Drop).await;
    let (status, body) = first_then(mesh.store.outbound, "http://billing", "PUT", "{}").await;
    assert_not_retryable_502(status, &body, "upstream");
    let expected = [(0, "GET /first"), (0, "PUT /second")];
    assert_eq!(seen.requests(), requests(&expected));
}

#[tokio::test]
async fn app_failing_a_get_on_a_fresh_connection_is_not_retried() {
    // The first connection drops its very first request: no race, the app's own doing.
    let (mesh, seen) = app_hop(0, Ending::Drop).await;
    let (status, body) = via_proxy(mesh.store.outbound, "GET", "http://billing/x", &[], "")
        .await
        .unwrap();
    assert_not_retryable_502(status, &body, "upstream");
    assert_eq!(seen.requests(), requests(&[(0, "GET /x")]));
    assert_eq!(seen.connections(), 1);
}

/// A store sidecar whose mesh service `flaky` is the scripted upstream over mTLS,
/// offering only HTTP/1.1 (so the store pools kept-alive HTTP/1.1 connections).
async fn peer_hop(ending: Ending) -> (Mesh, SocketAddr, Seen) {
    let mesh = Mesh::start().await;
    let tls = h1_only_acceptor(&mesh, FLAKY);
    let (peer, seen) = scripted::start(1, ending, Some(tls)).await;
    let (outbound, _probe) = store_routing(&mesh, "flaky", peer, FLAKY).await;
    (mesh, outbound, seen)
}

#[tokio::test]
async fn peer_closing_a_reused_http1_connection_under_a_get_is_retried_once_on_a_fresh_one() {
    for ending in [Ending::Drop, Ending::Shutdown, Ending::Reset] {
        let (_mesh, outbound, seen) = peer_hop(ending).await;
        let (status, body) = first_then(outbound, "http://flaky", "GET", "").await;
        assert_eq!(status, StatusCode::OK, "{ending:?}: {body:?}");
        assert_eq!(&body[..], b"GET /second on connection 1");
        let expected = [(0, "GET /first"), (0, "GET /second"), (1, "GET /second")];
        assert_eq!(seen.requests(), requests(&expected), "{ending:?}");
        assert_eq!(seen.connections(), 2, "{ending:?}");
    }
}

#[tokio::test]
async fn peer_closing_a_reused_http1_connection_under_a_post_is_a_502_and_not_retried() {
    let (_mesh, outbound, seen) = peer_hop(Ending::Drop).await;
    let (status, body) = first_then(outbound, "http://flaky", "POST", "").await;
    assert_not_retryable_502(status, &body, "peer");
    let expected = [(0, "GET /first"), (0, "POST /second")];
    assert_eq!(seen.requests(), requests(&expected));
    assert_eq!(seen.connections(), 1);
}

#[tokio::test]
async fn app_connections_idle_past_the_idle_timeout_are_not_reused() {
    let (mesh, seen) = app_hop(1, Ending::Drop).await;
    let (status, _) = via_proxy(mesh.store.outbound, "GET", "http://billing/first", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    // Longer than the app client's idle timeout (4 s): the idle connection is given up,
    // so even a POST, which is never replayed, cannot meet the app's close.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let (status, body) = via_proxy(mesh.store.outbound, "POST", "http://billing/late", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert_eq!(
        seen.requests(),
        requests(&[(0, "GET /first"), (1, "POST /late")])
    );
}
