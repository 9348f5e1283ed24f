//! The kit against real sockets: a hyper client for well-formed exchanges, raw TCP where
//! the bytes (or the RST) are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// A guard against a hung test, not a timing assertion.
const LIMIT: Duration = Duration::from_secs(10);

async fn h1(up: &Upstream) -> http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(up.addr()).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2(up: &Upstream) -> http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(up.addr()).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn post(id: &str, body: &'static str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/charges")
        .header("host", "billing")
        .header(REQUEST_ID, id)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Status and JSON body of one exchange on `sender`.
async fn exchange(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
) -> (u16, serde_json::Value) {
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// Writes `bytes` on a fresh connection and reads until the upstream ends it.
async fn raw(up: &Upstream, bytes: &[u8]) -> (Vec<u8>, std::io::Result<usize>) {
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let end = tokio::time::timeout(LIMIT, stream.read_to_end(&mut got))
        .await
        .expect("the upstream ended the connection");
    (got, end)
}

#[tokio::test]
async fn answers_and_counts_each_request_id_on_a_kept_alive_connection() {
    let up = Upstream::start("billing-0").await.unwrap();
    let mut sender = h1(&up).await;
    let (status, first) = exchange(&mut sender, post("r1", "{\"amount\":1}")).await;
    assert_eq!(status, 200);
    assert_eq!(first["upstream"], "billing-0");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/charges");
    assert_eq!(first["seen"], 1);
    assert_eq!(first["body_bytes"], 12);
    assert!(first["headers"].as_u64().unwrap() >= 2, "{first}");
    let (_, second) = exchange(&mut sender, post("r1", "")).await;
    assert_eq!(second["seen"], 2);
    let (_, other) = exchange(&mut sender, post("r2", "")).await;
    assert_eq!(other["seen"], 1);
    assert_eq!((up.seen("r1"), up.seen("r2"), up.seen("r3")), (2, 1, 0));
    assert_eq!((up.requests(), up.connections()), (3, 1));
    let log = up.log();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].request_id.as_deref(), Some("r1"));
    assert!(
        log.iter()
            .all(|r| r.behaviour == Behaviour::Answer && r.connection == 0)
    );
}

#[tokio::test]
async fn fails_the_next_n_then_answers_and_the_standing_behaviour_applies_after() {
    let up = Upstream::start("u").await.unwrap();
    up.fail_next(2, 503).then(1, Behaviour::Status(429));
    let mut sender = h1(&up).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, json) = exchange(&mut sender, post("r", "")).await;
        statuses.push(status);
        if status != 200 {
            assert_eq!(json["error"], "scripted", "{json}");
        }
    }
    assert_eq!(statuses, [503, 503, 429, 200]);
    up.always(Behaviour::Status(500));
    assert_eq!(exchange(&mut sender, post("r", "")).await.0, 500);
    up.heal();
    assert_eq!(exchange(&mut sender, post("r", "")).await.0, 200);
    assert_eq!(up.seen("r"), 6);
}

#[tokio::test]
async fn a_reset_is_a_tcp_rst_after_the_request_was_seen() {
    let up = Upstream::start("u").await.unwrap();
    up.reset_next(1);
    let (got, end) = raw(
        &up,
        b"POST /x HTTP/1.1\r\nhost: u\r\nx-request-id: r\r\ncontent-length: 2\r\n\r\nhi",
    )
    .await;
    let error = end.expect_err("a reset, not a clean end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(got.is_empty());
    assert_eq!(up.seen("r"), 1);
    assert_eq!(up.log()[0].behaviour, Behaviour::Reset);
}

#[tokio::test]
async fn death_mid_body_sends_the_head_and_part_of_the_body_then_a_fin() {
    let up = Upstream::start("u").await.unwrap();
    up.die_mid_body_next(1);
    let (got, end) = raw(&up, b"GET /x HTTP/1.1\r\nhost: u\r\n\r\n").await;
    end.expect("a clean FIN");
    let text = String::from_utf8(got).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains(&format!("content-length: {ANNOUNCED_BODY}")),
        "{head}"
    );
    assert_eq!(body.len(), PARTIAL_BODY);
    // And the next request on a new connection is answered.
    let mut sender = h1(&up).await;
    assert_eq!(exchange(&mut sender, post("r", "")).await.0, 200);
}

#[tokio::test]
async fn a_stall_holds_the_exchange_until_released() {
    let up = Upstream::start("u").await.unwrap();
    up.stall_next(1);
    let mut sender = h1(&up).await;
    let pending = tokio::spawn(async move { sender.send_request(post("r", "")).await });
    tokio::time::timeout(LIMIT, up.wait_for_stalled(1))
        .await
        .unwrap();
    assert_eq!((up.seen("r"), up.stalled()), (1, 1));
    assert!(!pending.is_finished(), "a stalled request was answered");
    up.release_stalls();
    let result = tokio::time::timeout(LIMIT, pending).await.unwrap().unwrap();
    assert!(
        result.is_err(),
        "released stall must close without an answer"
    );
    assert_eq!(up.stalled(), 0);
}

#[tokio::test]
async fn a_body_stall_sends_the_head_and_part_of_the_body() {
    let up = Upstream::start("u").await.unwrap();
    up.then(1, Behaviour::StallBody);
    let mut sender = h1(&up).await;
    let response = sender.send_request(post("r", "")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first.len(), PARTIAL_BODY);
    tokio::time::timeout(LIMIT, up.wait_for_stalled(1))
        .await
        .unwrap();
    up.release_stalls();
    let end = tokio::time::timeout(LIMIT, body.frame()).await.unwrap();
    assert!(matches!(end, Some(Err(_))), "a cut-short body must fail");
}

#[tokio::test]
async fn a_client_giving_up_on_a_stall_is_no_longer_counted_as_held() {
    let up = Upstream::start("u").await.unwrap();
    up.stall_next(1);
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: u\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(LIMIT, up.wait_for_stalled(1))
        .await
        .unwrap();
    drop(stream);
    let mut stalled = up.shared.stalled.subscribe();
    tokio::time::timeout(LIMIT, stalled.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn chunked_bodies_are_read_whole_and_probes_are_connections_without_requests() {
    let up = Upstream::start("u").await.unwrap();
    drop(TcpStream::connect(up.addr()).await.unwrap()); // a readiness probe
    let request = b"POST /c HTTP/1.1\r\nhost: u\r\ntransfer-encoding: chunked\r\n\
        connection: close\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n";
    let (got, end) = raw(&up, request).await;
    end.unwrap();
    let text = String::from_utf8(got).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("connection: close"), "{head}");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["body_bytes"], 8);
    tokio::time::timeout(LIMIT, async {
        while up.connections() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!((up.requests(), up.connections()), (1, 2));
}

#[tokio::test]
async fn h2c_answers_fails_and_resets_one_stream_keeping_the_connection() {
    let up = Upstream::start("h2").await.unwrap();
    up.fail_next(1, 503).reset_next(1);
    let mut sender = h2(&up).await;
    let get = |id: &str| {
        hyper::Request::get(format!("http://u/{id}"))
            .header(REQUEST_ID, id)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let failed = sender.send_request(get("a")).await.unwrap();
    assert_eq!(failed.status(), 503);
    assert_eq!(failed.headers()[UPSTREAM_HEADER], "h2");
    let reset = sender.send_request(get("b")).await;
    assert!(reset.is_err(), "the reset stream has no answer");
    let ok = sender.send_request(get("c")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body = ok.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (json["path"].as_str(), json["seen"].as_u64()),
        (Some("/c"), Some(1))
    );
    assert_eq!((up.requests(), up.connections()), (3, 1));
}

#[tokio::test]
async fn h2c_stalls_until_released() {
    let up = Upstream::start("h2").await.unwrap();
    up.stall_next(1);
    let mut sender = h2(&up).await;
    let request = hyper::Request::get("http://u/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let pending = tokio::spawn(async move { sender.send_request(request).await });
    tokio::time::timeout(LIMIT, up.wait_for_stalled(1))
        .await
        .unwrap();
    assert!(!pending.is_finished());
    up.release_stalls();
    let result = tokio::time::timeout(LIMIT, pending).await.unwrap().unwrap();
    assert!(result.is_err());
}
