//! One suite for every [`Backend`]: the same cases run against a redb file and against
//! a real etcd member (Debian's `etcd-server`; skipped with a message where it is not
//! installed, and failing under `CI=true`, where `.ci/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::typed::Decision;
use super::*;

type Case = fn(Arc<Store>) -> BoxFuture<'static, ()>;

/// Every case, by name (a failure names the case and the backend).
const CASES: &[(&str, Case)] = &[
    ("records_and_revisions", |s| {
        Box::pin(records_and_revisions(s))
    }),
    ("expectations", |s| Box::pin(expectations(s))),
    ("one_key_once_per_commit", |s| {
        Box::pin(one_key_once_per_commit(s))
    }),
    ("watch_in_order", |s| Box::pin(watch_in_order(s))),
    ("watch_from_the_past", |s| Box::pin(watch_from_the_past(s))),
    ("modify_under_contention", |s| {
        Box::pin(modify_under_contention(s))
    }),
    ("typed_records", |s| Box::pin(typed_records(s))),
    ("a_commit_that_changes_nothing", |s| {
        Box::pin(a_commit_that_changes_nothing(s))
    }),
];

fn put(table: Table, key: &str, value: &str, expect: Expect) -> Op {
    Op::Put {
        table,
        key: key.to_owned(),
        value: Bytes::from(value.to_owned()),
        expect,
    }
}

fn keys(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

async fn applied(store: &Store, ops: Vec<Op>) -> Revision {
    match store.commit(ops).await.unwrap() {
        Commit::Applied(r) => r,
        other => panic!("expected Applied, got {other:?}"),
    }
}

async fn records_and_revisions(store: Arc<Store>) {
    let r1 = applied(&store, vec![put(Table::Entries, "b", "1", Expect::Any)]).await;
    let r2 = applied(&store, vec![put(Table::Entries, "a", "2", Expect::Any)]).await;
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    // A key with a slash (agents are keyed by SPIFFE ID) and another table.
    applied(
        &store,
        vec![put(Table::Agents, "spiffe://td/a/b", "3", Expect::Any)],
    )
    .await;
    let got = store.get(Table::Entries, "b").await.unwrap().unwrap();
    assert_eq!((&got.value[..], got.mod_revision), (&b"1"[..], r1));
    let agent = store.get(Table::Agents, "spiffe://td/a/b").await.unwrap();
    assert_eq!(agent.unwrap().key, "spiffe://td/a/b");
    let (list, at) = store.list(Table::Entries).await.unwrap();
    assert_eq!(keys(&list), ["a", "b"], "key order");
    assert!(at > r2 && at == store.revision().await.unwrap());
    let removed = store.delete(Table::Entries, "b").await.unwrap();
    assert!(removed.is_some_and(|r| r > at));
    assert_eq!(store.delete(Table::Entries, "b").await.unwrap(), None);
    assert_eq!(store.get(Table::Entries, "b").await.unwrap(), None);
    assert_eq!(store.list(Table::Tokens).await.unwrap().0, []);
}

async fn expectations(store: Arc<Store>) {
    let create = || vec![put(Table::Tokens, "t", "new", Expect::Absent)];
    let r = applied(&store, create()).await;
    let Commit::Conflict { index, current } = store.commit(create()).await.unwrap() else {
        panic!("a second create must conflict");
    };
    assert_eq!(index, 0);
    assert_eq!(current.unwrap().mod_revision, r);
    // All or nothing: the first op would apply, the second's expectation fails.
    let ops = vec![
        put(Table::Entries, "side", "x", Expect::Any),
        put(Table::Tokens, "t", "stale", Expect::At(r + 1000)),
    ];
    let Commit::Conflict { index, current } = store.commit(ops).await.unwrap() else {
        panic!("a stale revision must conflict");
    };
    assert_eq!((index, &current.unwrap().value[..]), (1, &b"new"[..]));
    assert_eq!(
        store.get(Table::Entries, "side").await.unwrap(),
        None,
        "nothing applied"
    );
    let missing = vec![put(Table::Tokens, "absent", "x", Expect::At(r))];
    let conflict = store.commit(missing).await.unwrap();
    assert_eq!(
        conflict,
        Commit::Conflict {
            index: 0,
            current: None
        }
    );
    let r2 = applied(&store, vec![put(Table::Tokens, "t", "used", Expect::At(r))]).await;
    let stale_delete = Op::Delete {
        table: Table::Tokens,
        key: "t".to_owned(),
        expect: Expect::At(r),
    };
    assert!(matches!(
        store.commit(vec![stale_delete]).await.unwrap(),
        Commit::Conflict { .. }
    ));
    let delete = Op::Delete {
        table: Table::Tokens,
        key: "t".to_owned(),
        expect: Expect::At(r2),
    };
    applied(&store, vec![delete]).await;
    assert_eq!(store.get(Table::Tokens, "t").await.unwrap(), None);
}

async fn one_key_once_per_commit(store: Arc<Store>) {
    let ops = vec![
        put(Table::Entries, "k", "1", Expect::Any),
        Op::Delete {
            table: Table::Entries,
            key: "k".to_owned(),
            expect: Expect::Any,
        },
    ];
    let err = store.commit(ops).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("entries/k twice"), "{err}");
}

async fn next_change(changes: &mut Changes) -> Change {
    let item = tokio::time::timeout(Duration::from_secs(5), changes.next()).await;
    item.expect("a change within 5 s")
        .expect("the watch goes on")
        .unwrap()
}

async fn watch_in_order(store: Arc<Store>) {
    let now = store.revision().await.unwrap();
    let mut changes = store
        .watch(&[Table::Entries, Table::Endpoints], now)
        .await
        .unwrap();
    applied(
        &store,
        vec![put(Table::Tokens, "unwatched", "x", Expect::Any)],
    )
    .await;
    let r1 = applied(&store, vec![put(Table::Entries, "e1", "1", Expect::Any)]).await;
    let ops = vec![
        put(Table::Endpoints, "billing", "2", Expect::Any),
        Op::Delete {
            table: Table::Entries,
            key: "e1".to_owned(),
            expect: Expect::Any,
        },
    ];
    let r2 = applied(&store, ops).await;
    let first = next_change(&mut changes).await;
    assert_eq!(
        (first.table, first.key.as_str(), first.revision),
        (Table::Entries, "e1", r1)
    );
    assert_eq!(first.value.as_deref(), Some(&b"1"[..]));
    let second = next_change(&mut changes).await;
    let third = next_change(&mut changes).await;
    assert_eq!((second.table, second.revision), (Table::Endpoints, r2));
    assert_eq!(
        (third.key.as_str(), third.value, third.revision),
        ("e1", None, r2)
    );
}

async fn watch_from_the_past(store: Arc<Store>) {
    let before = store.revision().await.unwrap();
    let r = applied(&store, vec![put(Table::Entries, "p", "1", Expect::Any)]).await;
    // etcd replays its history; redb keeps none and says so. Both are correct: what
    // must never happen is a watch that silently starts later than asked.
    match store.watch(&[Table::Entries], before).await {
        Ok(mut changes) => assert_eq!(next_change(&mut changes).await.revision, r),
        Err(StoreError::Compacted(at)) => assert_eq!(at, before),
        Err(e) => panic!("{e}"),
    }
}

async fn modify_under_contention(store: Arc<Store>) {
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..4 {
                    let step = |n: Option<u32>| Decision {
                        value: Some(n.unwrap_or(0) + 1),
                        also: Vec::new(),
                        answer: (),
                    };
                    store.modify(Table::Tokens, "counter", step).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (count, _) = store
        .read::<u32>(Table::Tokens, "counter")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 24, "no increment lost");
}

async fn typed_records(store: Arc<Store>) {
    store
        .put(Table::Entries, "json", &serde_json::json!({"a": 1}))
        .await
        .unwrap();
    let all: Vec<(String, serde_json::Value)> = store.read_all(Table::Entries).await.unwrap();
    assert_eq!(all, [("json".to_owned(), serde_json::json!({"a": 1}))]);
    applied(
        &store,
        vec![put(Table::Entries, "bad", "not json", Expect::Any)],
    )
    .await;
    let err = store.read::<u32>(Table::Entries, "bad").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("entries/bad") && text.contains(&store.describe()),
        "{text}"
    );
    // modify writes its companion records in the same commit, and only when it writes.
    let redeem = |used: Option<bool>| Decision {
        value: (used != Some(true)).then_some(true),
        also: vec![put(Table::Agents, "a1", "{}", Expect::Absent)],
        answer: used != Some(true),
    };
    let (first, at) = store.modify(Table::Tokens, "once", redeem).await.unwrap();
    let (second, none) = store.modify(Table::Tokens, "once", redeem).await.unwrap();
    assert!(first && at.is_some() && !second && none.is_none());
    let agent = store.get(Table::Agents, "a1").await.unwrap().unwrap();
    assert_eq!(Some(agent.mod_revision), at);
}

async fn a_commit_that_changes_nothing(store: Arc<Store>) {
    let r = applied(&store, vec![put(Table::Entries, "k", "1", Expect::Any)]).await;
    let mut changes = store.watch(&[Table::Entries], r).await.unwrap();
    let nothing = vec![
        Op::Check {
            table: Table::Entries,
            key: "k".to_owned(),
            expect: Expect::At(r),
        },
        Op::Delete {
            table: Table::Entries,
            key: "absent".to_owned(),
            expect: Expect::Any,
        },
    ];
    assert_eq!(applied(&store, nothing).await, r, "the revision stays");
    // Watching from what that commit reported misses nothing that follows.
    let next = applied(&store, vec![put(Table::Entries, "k", "2", Expect::Any)]).await;
    assert!(next > r);
    assert_eq!(next_change(&mut changes).await.revision, next);
}

async fn run(backend: &str, fresh: impl AsyncFn(&str) -> Store) {
    for (name, case) in CASES {
        eprintln!("{backend}: {name}");
        case(Arc::new(fresh(name).await)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb() {
    let dirs = tempfile::tempdir().unwrap();
    run("redb", async |name| {
        let dir = dirs.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        Store::Redb(redb::RedbStore::open(&dir).unwrap())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd() {
    let Some(cluster) = testkit::etcd::EtcdCluster::start_or_skip(1) else {
        return;
    };
    let endpoints = cluster.endpoints();
    run("etcd", async |name| {
        let prefix = format!("/suite/{name}");
        Store::Etcd(Box::new(
            etcd::EtcdStore::connect(&endpoints, &prefix).await.unwrap(),
        ))
    })
    .await;
}
