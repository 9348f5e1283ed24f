//! Watches: initial events, resuming from a resourceVersion, selectors, bookmarks, timeouts
//! and the 410 a too-old resourceVersion gets.

use serde_json::json;

use super::client::{Watch, call, call_as};
use super::{SECRETS, server};

fn secret(name: &str) -> serde_json::Value {
    json!({"metadata":{"name":name,"labels":{"app":name}}})
}

fn brief(kind: &str, what: &str) -> Option<(String, String)> {
    Some((kind.to_owned(), what.to_owned()))
}

#[tokio::test]
async fn a_watch_without_a_version_starts_with_every_object_then_follows_changes() {
    let server = server().await;
    call(&server, "POST", SECRETS, Some(&secret("a"))).await;
    let mut watch = Watch::open(&server, &format!("{SECRETS}?watch=true")).await;
    assert_eq!(watch.status, 200);
    assert_eq!(watch.next_brief().await, brief("ADDED", "a"));
    call(&server, "POST", SECRETS, Some(&secret("b"))).await;
    let merge = "application/merge-patch+json";
    let same = json!({"metadata":{"labels":{"app":"b"}}});
    call_as(
        &server,
        "PATCH",
        &format!("{SECRETS}/b"),
        merge,
        Some(&same),
    )
    .await;
    call_as(
        &server,
        "PATCH",
        &format!("{SECRETS}/b"),
        merge,
        Some(&json!({"data":{"k":"dg=="}})),
    )
    .await;
    call(&server, "DELETE", &format!("{SECRETS}/a"), None).await;
    assert_eq!(watch.next_brief().await, brief("ADDED", "b"));
    assert_eq!(
        watch.next_brief().await,
        brief("MODIFIED", "b"),
        "a no-op patch sends nothing"
    );
    assert_eq!(watch.next_brief().await, brief("DELETED", "a"));
}

#[tokio::test]
async fn a_watch_from_a_version_replays_what_came_after_it() {
    let server = server().await;
    let (_, a) = call(&server, "POST", SECRETS, Some(&secret("a"))).await;
    call(&server, "POST", SECRETS, Some(&secret("b"))).await;
    let (_, deleted) = call(&server, "DELETE", &format!("{SECRETS}/b"), None).await;
    let from = a["metadata"]["resourceVersion"].as_str().unwrap();
    let mut watch = Watch::open(
        &server,
        &format!("{SECRETS}?watch=1&resourceVersion={from}"),
    )
    .await;
    assert_eq!(watch.next_brief().await, brief("ADDED", "b"));
    let event = watch.next().await.unwrap();
    assert_eq!(event["type"], "DELETED");
    assert_eq!(
        event["object"]["metadata"]["uid"],
        deleted["details"]["uid"]
    );
    let deleted_at: u64 = event["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        deleted_at,
        server.resource_version(),
        "a DELETED event carries the deletion's version"
    );
}

#[tokio::test]
async fn a_label_selector_watch_sees_objects_enter_and_leave() {
    let server = server().await;
    let mut watch = Watch::open(
        &server,
        &format!("{SECRETS}?watch=true&labelSelector=app%3Dx&resourceVersion=1"),
    )
    .await;
    call(&server, "POST", SECRETS, Some(&secret("a"))).await;
    let merge = "application/merge-patch+json";
    let path = format!("{SECRETS}/a");
    call_as(
        &server,
        "PATCH",
        &path,
        merge,
        Some(&json!({"metadata":{"labels":{"app":"x"}}})),
    )
    .await;
    call_as(
        &server,
        "PATCH",
        &path,
        merge,
        Some(&json!({"metadata":{"labels":{"app":"y"}}})),
    )
    .await;
    assert_eq!(watch.next_brief().await, brief("ADDED", "a"));
    assert_eq!(watch.next_brief().await, brief("DELETED", "a"));
}

#[tokio::test]
async fn bookmarks_carry_only_the_version() {
    let options = crate::kube_fake::FakeOptions {
        bookmark_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let server = crate::kube_fake::FakeApiServer::start_with(&super::resources(), options)
        .await
        .unwrap();
    let path = format!("{SECRETS}?watch=true&allowWatchBookmarks=true&resourceVersion=1");
    let mut watch = Watch::open(&server, &path).await;
    let mut quiet = Watch::open(&server, &format!("{SECRETS}?watch=true&resourceVersion=1")).await;
    call(&server, "POST", SECRETS, Some(&secret("a"))).await;
    let after_a = server.resource_version().to_string();
    server.bookmark_now();
    call(&server, "POST", SECRETS, Some(&secret("b"))).await;
    assert_eq!(watch.next_brief().await, brief("ADDED", "a"));
    let bookmark = watch.next().await.unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"],
        json!({"kind":"Secret","apiVersion":"v1","metadata":{"resourceVersion": after_a,"creationTimestamp":null}})
    );
    assert_eq!(watch.next_brief().await, brief("ADDED", "b"));
    assert_eq!(quiet.next_brief().await, brief("ADDED", "a"));
    assert_eq!(
        quiet.next_brief().await,
        brief("ADDED", "b"),
        "no bookmarks unless allowed"
    );
}

#[tokio::test]
async fn a_watch_ends_at_its_timeout() {
    let server = server().await;
    let mut watch = Watch::open(&server, &format!("{SECRETS}?watch=true&timeoutSeconds=1")).await;
    assert_eq!(watch.next().await, None);
}

#[tokio::test]
async fn expired_watches_are_closed_and_a_resumed_one_gets_410_in_band() {
    let server = server().await;
    let (_, a) = call(&server, "POST", SECRETS, Some(&secret("a"))).await;
    let from = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut open = Watch::open(
        &server,
        &format!("{SECRETS}?watch=true&resourceVersion={from}"),
    )
    .await;
    server.expire_watches();
    assert_eq!(open.next().await, None, "expiry closes open watches");
    let mut resumed = Watch::open(
        &server,
        &format!("{SECRETS}?watch=true&resourceVersion={from}"),
    )
    .await;
    assert_eq!(
        resumed.status, 200,
        "the real server answers 200 and sends the 410 as an event"
    );
    let error = resumed.next().await.unwrap();
    assert_eq!(error["type"], "ERROR");
    let status = &error["object"];
    assert_eq!(
        (status["code"].as_u64(), status["reason"].as_str()),
        (Some(410), Some("Expired"))
    );
    let expected = format!(
        "too old resource version: {from} ({})",
        server.resource_version()
    );
    assert_eq!(status["message"], json!(expected));
    assert_eq!(resumed.next().await, None);
    let (status, list) = call(&server, "GET", SECRETS, None).await;
    assert_eq!(status, 200);
    let now = list["metadata"]["resourceVersion"].as_str().unwrap();
    let mut fresh = Watch::open(
        &server,
        &format!("{SECRETS}?watch=true&resourceVersion={now}"),
    )
    .await;
    call(&server, "POST", SECRETS, Some(&secret("b"))).await;
    assert_eq!(
        fresh.next_brief().await,
        brief("ADDED", "b"),
        "a watch from a fresh list works"
    );
    let exact = format!("{SECRETS}?resourceVersion={from}&resourceVersionMatch=Exact");
    let (status, body) = call(&server, "GET", &exact, None).await;
    assert_eq!((status, body["reason"].as_str()), (410, Some("Expired")));
}

#[tokio::test]
async fn a_history_window_too_small_expires_old_versions() {
    let options = crate::kube_fake::FakeOptions {
        history: 2,
        ..Default::default()
    };
    let server = crate::kube_fake::FakeApiServer::start_with(&super::resources(), options)
        .await
        .unwrap();
    for name in ["a", "b", "c", "d"] {
        call(&server, "POST", SECRETS, Some(&secret(name))).await;
    }
    let mut old = Watch::open(&server, &format!("{SECRETS}?watch=true&resourceVersion=2")).await;
    assert_eq!(old.next().await.unwrap()["type"], "ERROR");
    let mut recent = Watch::open(&server, &format!("{SECRETS}?watch=true&resourceVersion=3")).await;
    assert_eq!(recent.next_brief().await, brief("ADDED", "c"));
}

#[tokio::test]
async fn shutdown_ends_watches_and_stops_listening() {
    let server = server().await;
    let addr = server.addr();
    let mut watch = Watch::open(&server, &format!("{SECRETS}?watch=true")).await;
    assert_eq!(server.open_watches(), 1);
    server.shutdown().await;
    assert_eq!(watch.next().await, None);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
