//! What only etcd does: compacted history, and losing members of a real 3-member
//! cluster (`testkit::etcd`). The backend-neutral cases are in `store/suite.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use testkit::etcd::EtcdCluster;

use super::*;
use crate::store::Expect;

fn entry(key: &str, value: &str) -> Op {
    Op::Put {
        table: Table::Entries,
        key: key.to_owned(),
        value: Bytes::from(value.to_owned()),
        expect: Expect::Any,
    }
}

async fn applied(store: &EtcdStore, op: Op) -> Revision {
    match store.commit(vec![op]).await.unwrap() {
        Commit::Applied(r) => r,
        other => panic!("expected Applied, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_from_compacted_history_says_so() {
    let Some(cluster) = EtcdCluster::start_or_skip(1) else {
        return;
    };
    let store = EtcdStore::connect(&cluster.endpoints(), "/t")
        .await
        .unwrap();
    let first = applied(&store, entry("a", "1")).await;
    let last = applied(&store, entry("a", "2")).await;
    store.compact(last).await.unwrap();
    let err = match store.watch(&[Table::Entries], first - 1).await {
        Ok(mut changes) => futures_util::StreamExt::next(&mut changes)
            .await
            .unwrap()
            .unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Compacted(_)), "{err}");
    // From the present it works.
    let mut changes = store.watch(&[Table::Entries], last).await.unwrap();
    let r = applied(&store, entry("b", "3")).await;
    let change = futures_util::StreamExt::next(&mut changes)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((change.key.as_str(), change.revision), ("b", r));
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable_and_named() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let store = EtcdStore::connect(std::slice::from_ref(&endpoint), "/t")
        .await
        .unwrap();
    let err = store.commit(vec![entry("a", "1")]).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&endpoint), "{err}");
}

/// The availability promise, at the store: one member down changes nothing;
/// two down makes writes fail quickly and cleanly; when they return, writes work
/// again and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_members_then_quorum_then_getting_them_back() {
    let Some(mut cluster) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let store = EtcdStore::connect(&cluster.endpoints(), "/t")
        .await
        .unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        applied(&store, entry(&format!("before-{i}"), "x")).await;
        acknowledged.push(format!("before-{i}"));
    }
    cluster.kill(0);
    for i in 0..5 {
        // One member gone: every write still succeeds (the client moves to the others).
        applied(&store, entry(&format!("one-down-{i}"), "x")).await;
        acknowledged.push(format!("one-down-{i}"));
    }
    cluster.kill(1);
    let started = Instant::now();
    let err = store
        .commit(vec![entry("no-quorum", "x")])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("unavailable"), "{err}");
    assert!(took < Duration::from_secs(6), "failed only after {took:?}");
    cluster.restart(0).unwrap();
    cluster.restart(1).unwrap();
    let fresh = EtcdStore::connect(&cluster.endpoints(), "/t")
        .await
        .unwrap();
    let mut written = None;
    for _ in 0..50 {
        match fresh.commit(vec![entry("after", "x")]).await {
            Ok(Commit::Applied(r)) => {
                written = Some(r);
                break;
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(written.is_some(), "writes did not come back");
    let (records, _) = fresh.list(Table::Entries).await.unwrap();
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    for key in &acknowledged {
        assert!(
            keys.contains(&key.as_str()),
            "acknowledged {key} lost: {keys:?}"
        );
    }
}
