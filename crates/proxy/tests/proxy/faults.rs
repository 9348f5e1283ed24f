//! Issue 11's retry rules against the faults of `testkit::upstream` (a real server that
//! resets connections or dies mid-body on cue), through store's and billing's sidecars:
//! a reset before the response head is retried for a GET and never for a POST without an
//! `Idempotency-Key`; a response cut short after its head began is never retried.

use api::contract::traffic::{RouteRule, TrafficPolicy};
use http::StatusCode;
use testkit::harness::via_proxy;
use testkit::upstream::Upstream;

use super::resilience::{Replicas, every_request, retry};

/// billing behind one sidecar, with GETs and keyed POSTs retried on 502 (what billing's
/// sidecar answers when its app resets the connection).
async fn mesh(upstream: &Upstream) -> Replicas {
    let rule = RouteRule {
        retry: retry(2, &[502]),
        ..RouteRule::default()
    };
    let traffic = every_request(rule, TrafficPolicy::default());
    Replicas::start(&[upstream.addr()], traffic).await
}

#[tokio::test]
async fn a_reset_before_the_head_is_retried_for_a_get_and_not_for_a_post() {
    let upstream = Upstream::start("billing").await.unwrap();
    let mesh = mesh(&upstream).await;

    upstream.reset_next(1);
    let (status, body) = mesh
        .send("GET", "/charges/1", &[("x-request-id", "get-1")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        upstream.seen("get-1"),
        2,
        "reset once, answered on the retry"
    );

    upstream.reset_next(1);
    let (status, body) = mesh
        .send("POST", "/charges", &[("x-request-id", "post-1")])
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        upstream.seen("post-1"),
        1,
        "a POST without a key is sent once"
    );

    upstream.reset_next(1);
    let keyed = [("x-request-id", "post-2"), ("idempotency-key", "order-2")];
    let (status, body) = mesh.send("POST", "/charges", &keyed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(upstream.seen("post-2"), 2, "a keyed POST may be sent again");
}

#[tokio::test]
async fn a_response_cut_short_after_its_head_is_never_retried() {
    let upstream = Upstream::start("billing").await.unwrap();
    let mesh = mesh(&upstream).await;
    upstream.die_mid_body_next(1);
    let headers = [("x-request-id", "cut-1")];
    let answer = via_proxy(
        mesh.store.outbound,
        "GET",
        "http://billing/charges/1",
        &headers,
        "",
    );
    // The head (200) was already on its way to the caller: the body ends in an error.
    assert!(
        answer.await.is_err(),
        "a cut-short body is not a complete answer"
    );
    assert_eq!(
        upstream.seen("cut-1"),
        1,
        "never retried once the head began"
    );
    // The next request is answered normally.
    let (status, _) = mesh
        .send("GET", "/charges/1", &[("x-request-id", "after")])
        .await;
    assert_eq!(status, StatusCode::OK);
}
