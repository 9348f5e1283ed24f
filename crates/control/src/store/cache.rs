//! Every record of chosen tables in memory, kept current by the store's watch: what each
//! control replica reads on its request paths instead of the store (design §2.5): the
//! issuer and the registry read it, and each replica's publisher follows its changes.
//!
//! A reflector: list every table, watch from the revision of the listing, apply each change
//! in order; when the watch breaks (a member died), watch again from the last change; when
//! the store says `Compacted` (a redb watcher fell behind, etcd compacted its history, a
//! redb watch asked for the past), list again. Readers see a consistent copy and
//! can wait until the cache has caught up with a revision they wrote at (read-your-writes).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::pin::Pin;

use futures_util::stream::Peekable;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Backend, Change, Changes, Record, Revision, Store, StoreError, Table};

/// The pause before listing again after the store failed (it may be unavailable).
const RELIST_PAUSE: Duration = Duration::from_millis(200);

/// The cached tables and the revision they are current at.
#[derive(Debug)]
pub struct StateCache {
    tables: RwLock<BTreeMap<Table, BTreeMap<String, Record>>>,
    revision: watch::Sender<Revision>,
}

impl StateCache {
    /// Lists `tables` once (so the cache is complete when this returns) and keeps them
    /// current, on `tasks`, until `stop`.
    pub async fn start(
        store: Arc<Store>,
        tables: Vec<Table>,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<StateCache>, StoreError> {
        let cache = Arc::new(StateCache {
            tables: RwLock::new(BTreeMap::new()),
            revision: watch::channel(0).0,
        });
        let at = cache.relist(&store, &tables).await?;
        let reflector = Arc::clone(&cache);
        tasks.spawn(async move {
            tokio::select! {
                () = reflector.reflect(&store, &tables, at) => {}
                () = stop.cancelled() => {}
            }
        });
        Ok(cache)
    }

    /// One record.
    pub fn get(&self, table: Table, key: &str) -> Option<Record> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.get(&table)?.get(key).cloned()
    }

    /// Every record of `table`, in key order.
    pub fn all(&self, table: Table) -> Vec<Record> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables
            .get(&table)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The revision the cache is current at.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// A receiver woken after every change the cache applies (also within one revision:
    /// a commit's changes arrive one by one) and after every listing.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    /// Waits until the cache is current at `revision` or later (a write's own revision:
    /// read-your-writes); `false` if that took longer than `within`.
    pub async fn caught_up(&self, revision: Revision, within: Duration) -> bool {
        let mut seen = self.revision.subscribe();
        tokio::time::timeout(within, seen.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Replaces every table with a fresh listing, all read at one revision (listed one
    /// by one, a newer marker could be paired with older records); that revision.
    async fn relist(&self, store: &Store, tables: &[Table]) -> Result<Revision, StoreError> {
        let (lists, at) = store.list_tables(tables).await?;
        let fresh = tables
            .iter()
            .zip(lists)
            .map(|(&table, records)| {
                let by_key = records.into_iter().map(|r| (r.key.clone(), r)).collect();
                (table, by_key)
            })
            .collect();
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.revision.send_modify(|r| *r = (*r).max(at));
        Ok(at)
    }

    /// Follows the watch from `at`. When the watch breaks (a member died, the stream ended)
    /// it is opened again from the last change applied; only when the store no longer has
    /// those changes (`Compacted`) is everything listed again.
    async fn reflect(&self, store: &Store, tables: &[Table], mut at: Revision) {
        loop {
            let relist = match store.watch(tables, at).await {
                Ok(changes) => {
                    let mut changes = changes.peekable();
                    loop {
                        match changes.next().await {
                            Some(Ok(change)) => {
                                at = at.max(change.revision);
                                let commit = whole_commit(&mut changes, change);
                                self.apply(commit);
                            }
                            Some(Err(StoreError::Compacted(_))) => break true,
                            Some(Err(error)) => {
                                tracing::debug!(%error, "cache watch broke; watching again");
                                break false;
                            }
                            None => break false,
                        }
                    }
                }
                Err(StoreError::Compacted(_)) => true,
                Err(error) => {
                    tracing::debug!(%error, "cache watch did not start; trying again");
                    tokio::time::sleep(RELIST_PAUSE).await;
                    false
                }
            };
            if relist {
                at = self.relist_until_it_works(store, tables).await;
            }
        }
    }

    async fn relist_until_it_works(&self, store: &Store, tables: &[Table]) -> Revision {
        loop {
            match self.relist(store, tables).await {
                Ok(listed) => return listed,
                Err(error) => {
                    tracing::warn!(%error, "the state cache cannot list the store; serving what it has");
                    tokio::time::sleep(RELIST_PAUSE).await;
                }
            }
        }
    }

    /// Applies one commit's changes together: a reader (and `caught_up`) never sees a
    /// commit half applied.
    fn apply(&self, commit: Vec<Change>) {
        let mut revision = 0;
        {
            let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
            for change in commit {
                revision = revision.max(change.revision);
                let table = tables.entry(change.table).or_default();
                match change.value {
                    Some(value) => {
                        let record = Record {
                            key: change.key.clone(),
                            value,
                            mod_revision: change.revision,
                        };
                        table.insert(change.key, record);
                    }
                    None => {
                        table.remove(&change.key);
                    }
                }
            }
        }
        self.revision.send_modify(|r| *r = (*r).max(revision));
    }
}

/// `first` and the changes of the same commit that follow it: both backends deliver a
/// commit's changes together (etcd in one watch response, redb in one message), so they
/// are ready without waiting.
fn whole_commit(changes: &mut Peekable<Changes>, first: Change) -> Vec<Change> {
    let revision = first.revision;
    let mut commit = vec![first];
    loop {
        let same = matches!(
            Pin::new(&mut *changes).peek().now_or_never(),
            Some(Some(Ok(next))) if next.revision == revision
        );
        if !same {
            return commit;
        }
        match changes.next().now_or_never() {
            Some(Some(Ok(next))) => commit.push(next),
            _ => return commit,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use bytes::Bytes;
    use testkit::etcd::EtcdCluster;

    use super::*;
    use crate::store::{Commit, Expect, Op};

    const SOON: Duration = Duration::from_secs(5);

    async fn put(store: &Store, table: Table, key: &str, value: &'static str) -> Revision {
        let op = Op::Put {
            table,
            key: key.to_owned(),
            value: Bytes::from_static(value.as_bytes()),
            expect: Expect::Any,
        };
        match store.commit(vec![op]).await.unwrap() {
            Commit::Applied(r) => r,
            other => panic!("{other:?}"),
        }
    }

    /// The cache holds what was there, then follows puts and deletes of its tables only.
    async fn follows(store: Arc<Store>) {
        put(&store, Table::Entries, "a", "1").await;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let cache = StateCache::start(
            Arc::clone(&store),
            vec![Table::Entries],
            stop.clone(),
            &tasks,
        )
        .await
        .unwrap();
        assert_eq!(cache.get(Table::Entries, "a").unwrap().value, "1");
        let r = put(&store, Table::Entries, "b", "2").await;
        put(&store, Table::Tokens, "t", "x").await;
        assert!(cache.caught_up(r, SOON).await, "never saw revision {r}");
        assert_eq!(cache.get(Table::Entries, "b").unwrap().mod_revision, r);
        let gone = store.delete(Table::Entries, "a").await.unwrap().unwrap();
        assert!(cache.caught_up(gone, SOON).await);
        let keys: Vec<String> = cache
            .all(Table::Entries)
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["b"]);
        assert!(
            cache.all(Table::Tokens).is_empty(),
            "a table it does not cache"
        );
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cache_follows_a_redb_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Redb(crate::store::redb::RedbStore::open(dir.path()).unwrap());
        follows(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cache_follows_etcd_and_catches_up_after_etcd_comes_back() {
        let Some(mut cluster) = EtcdCluster::start_or_skip(1) else {
            return;
        };
        let connect = async |c: &EtcdCluster| {
            let store = crate::store::etcd::EtcdStore::connect(&c.endpoints(), "/c").await;
            Arc::new(Store::Etcd(Box::new(store.unwrap())))
        };
        follows(connect(&cluster).await).await;
        let store = connect(&cluster).await;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let cache = StateCache::start(
            Arc::clone(&store),
            vec![Table::Entries],
            stop.clone(),
            &tasks,
        )
        .await
        .unwrap();
        // The watch breaks while etcd is down; the cache keeps what it has, then lists
        // again and follows the writes made after etcd returned.
        cluster.kill(0);
        assert_eq!(cache.all(Table::Entries).len(), 1, "serves what it has");
        cluster.restart(0).unwrap();
        let mut written = None;
        for _ in 0..50 {
            let op = vec![Op::Put {
                table: Table::Entries,
                key: "after".to_owned(),
                value: Bytes::from_static(b"3"),
                expect: Expect::Any,
            }];
            if let Ok(Commit::Applied(r)) = store.commit(op).await {
                written = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = written.expect("writes came back");
        assert!(
            cache.caught_up(r, Duration::from_secs(15)).await,
            "the cache never caught up"
        );
        assert!(cache.get(Table::Entries, "after").is_some());
        stop.cancel();
    }
}
