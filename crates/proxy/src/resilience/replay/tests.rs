use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::mpsc;

use super::*;
use crate::body::full;

type Sent = Result<Frame<Bytes>, BoxError>;

fn request(method: Method, body: ProxyBody) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri("http://billing/charges")
        .header("x-trace", "1")
        .body(body)
        .unwrap()
}

/// A body of unknown length fed frame by frame from the test.
fn channel() -> (mpsc::UnboundedSender<Sent>, ProxyBody) {
    let (tx, rx) = mpsc::unbounded_channel::<Sent>();
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    (tx, boxed(StreamBody::new(frames)))
}

fn data(text: &'static str) -> Sent {
    Ok(Frame::data(Bytes::from_static(text.as_bytes())))
}

async fn next_data(body: &mut ProxyBody) -> Bytes {
    let frame = body.frame().await.unwrap().unwrap();
    frame.into_data().unwrap()
}

async fn whole(request: Request<ProxyBody>) -> (Bytes, Option<HeaderMap>) {
    let collected = request.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[test]
fn retryable_requests_are_idempotent_or_carry_an_idempotency_key_and_never_upgrade() {
    assert!(is_retryable_request(&request(Method::GET, empty())));
    assert!(is_retryable_request(&request(Method::PUT, empty())));
    assert!(!is_retryable_request(&request(Method::POST, empty())));
    assert!(!is_retryable_request(&request(Method::PATCH, empty())));
    let mut keyed = request(Method::POST, empty());
    keyed
        .headers_mut()
        .insert("Idempotency-Key", "\"8e03978e\"".parse().unwrap());
    assert!(is_retryable_request(&keyed));
    let mut websocket = request(Method::GET, empty());
    websocket
        .headers_mut()
        .insert(header::UPGRADE, "websocket".parse().unwrap());
    assert!(!is_retryable_request(&websocket));
}

#[tokio::test]
async fn a_known_empty_body_is_copied_with_the_head_and_extensions() {
    #[derive(Clone, Debug, PartialEq)]
    struct Classified(&'static str);
    let mut original = request(Method::DELETE, empty());
    original.extensions_mut().insert(Classified("billing"));
    let (first, replay) = Replayable::new(original, MAX_REPLAY_BYTES);
    let replay = replay.unwrap();
    assert!(first.body().is_end_stream());
    for _ in 0..2 {
        let again = replay.again().unwrap();
        assert_eq!(again.method(), Method::DELETE);
        assert_eq!(again.uri(), "http://billing/charges");
        assert_eq!(again.headers()["x-trace"], "1");
        assert_eq!(
            again.extensions().get::<Classified>(),
            Some(&Classified("billing"))
        );
        assert!(again.body().is_end_stream());
    }
}

#[tokio::test]
async fn a_streamed_body_read_by_the_first_try_is_replayed_whole_with_its_trailers() {
    let (tx, body) = channel();
    let (first, replay) = Replayable::new(request(Method::PUT, body), MAX_REPLAY_BYTES);
    let replay = replay.unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    tx.send(data("hello ")).unwrap();
    tx.send(data("world")).unwrap();
    tx.send(Ok(Frame::trailers(trailers.clone()))).unwrap();
    drop(tx);
    assert_eq!(
        whole(first).await,
        ("hello world".into(), Some(trailers.clone()))
    );
    for _ in 0..2 {
        let again = replay.again().unwrap();
        assert_eq!(
            whole(again).await,
            ("hello world".into(), Some(trailers.clone()))
        );
    }
}

#[tokio::test]
async fn a_copy_dropped_midway_hands_the_unread_rest_to_the_next() {
    let (tx, body) = channel();
    let (first, replay) = Replayable::new(request(Method::PUT, body), MAX_REPLAY_BYTES);
    let replay = replay.unwrap();
    tx.send(data("one ")).unwrap();
    let mut first = first.into_body();
    assert_eq!(next_data(&mut first).await, "one ");
    assert!(
        matches!(replay.again(), Err(ReplayError::Busy)),
        "the first try still holds a half-read body"
    );
    drop(first);
    let again = replay.again().unwrap();
    tx.send(data("two")).unwrap();
    drop(tx);
    assert_eq!(whole(again).await.0, "one two");
}

#[tokio::test]
async fn a_fully_read_body_is_replayed_while_the_last_try_still_holds_its_copy() {
    let (first, replay) = Replayable::new(request(Method::PUT, full("{}")), MAX_REPLAY_BYTES);
    let mut first = first.into_body();
    assert_eq!(next_data(&mut first).await, "{}");
    assert!(first.frame().await.is_none());
    let again = replay.unwrap().again().unwrap();
    assert_eq!(again.body().size_hint().exact(), Some(2), "same framing");
    assert_eq!(whole(again).await.0, "{}");
    drop(first);
}

#[tokio::test]
async fn a_body_known_to_exceed_the_limit_is_left_alone() {
    let big = Bytes::from(vec![b'x'; MAX_REPLAY_BYTES + 1]);
    let (first, replay) = Replayable::new(request(Method::PUT, full(big)), MAX_REPLAY_BYTES);
    assert!(replay.is_none());
    assert_eq!(
        first.body().size_hint().exact(),
        Some(MAX_REPLAY_BYTES as u64 + 1)
    );
    let exact = Bytes::from(vec![b'x'; MAX_REPLAY_BYTES]);
    let (first, replay) = Replayable::new(request(Method::PUT, full(exact)), MAX_REPLAY_BYTES);
    assert_eq!(whole(first).await.0.len(), MAX_REPLAY_BYTES);
    assert_eq!(
        whole(replay.unwrap().again().unwrap()).await.0.len(),
        MAX_REPLAY_BYTES
    );
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_streams_to_the_first_try_and_is_not_replayed() {
    let (tx, body) = channel();
    let (first, replay) = Replayable::new(request(Method::PUT, body), 8);
    let replay = replay.unwrap();
    let mut first = first.into_body();
    // Each frame reaches the first try as it is sent: nothing waits for the whole body.
    tx.send(data("12345")).unwrap();
    assert_eq!(next_data(&mut first).await, "12345");
    tx.send(data("6789")).unwrap();
    assert_eq!(next_data(&mut first).await, "6789");
    tx.send(data("more")).unwrap();
    assert_eq!(next_data(&mut first).await, "more");
    drop(tx);
    assert!(first.frame().await.is_none());
    assert!(matches!(replay.again(), Err(ReplayError::Capped)));
}

#[tokio::test]
async fn a_failed_original_cannot_be_replayed() {
    let (tx, body) = channel();
    let (first, replay) = Replayable::new(request(Method::PUT, body), MAX_REPLAY_BYTES);
    let mut first = first.into_body();
    tx.send(data("partial")).unwrap();
    tx.send(Err("client went away".into())).unwrap();
    assert_eq!(next_data(&mut first).await, "partial");
    assert!(first.frame().await.unwrap().is_err());
    assert!(first.frame().await.is_none(), "an error ends the copy");
    assert!(matches!(replay.unwrap().again(), Err(ReplayError::Failed)));
}

#[tokio::test]
async fn a_never_polled_first_try_leaves_the_original_for_the_next() {
    // A connect failure drops the request without reading its body.
    let body = boxed(Full::new(Bytes::from_static(b"payload")));
    let (first, replay) = Replayable::new(request(Method::POST, body), MAX_REPLAY_BYTES);
    drop(first);
    assert_eq!(whole(replay.unwrap().again().unwrap()).await.0, "payload");
}
