//! [`Backend`] over the redb file. redb calls are short and local (sub-millisecond
//! reads, one fsync per commit), so they run inline on the calling task, as before the
//! interface existed.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use super::RedbStore;
use crate::store::{
    Backend, Change, Changes, Commit, Op, Record, Revision, StoreError, Table, check_distinct,
};

impl Backend for RedbStore {
    async fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.get_now(table, key)?)
    }

    async fn list(&self, table: Table) -> Result<(Vec<Record>, Revision), StoreError> {
        Ok(self.list_now(table)?)
    }

    async fn list_tables(
        &self,
        tables: &[Table],
    ) -> Result<(Vec<Vec<Record>>, Revision), StoreError> {
        Ok(self.list_tables_now(tables)?)
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Commit, StoreError> {
        check_distinct(&self.describe(), &ops)?;
        Ok(self.commit_now(&ops)?)
    }

    async fn watch(&self, tables: &[Table], after: Revision) -> Result<Changes, StoreError> {
        // Subscribe first, then read the revision: a commit after the read is in the
        // subscription; one before it shows in the revision.
        let receiver = self.changes.subscribe();
        let now = self.revision_now()?;
        if now > after {
            // Changes already made are not kept: the caller lists again.
            return Err(StoreError::Compacted(after));
        }
        Ok(follow(receiver, tables.to_vec(), after))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.revision_now()?)
    }

    fn describe(&self) -> String {
        format!("state file {}", self.path.display())
    }
}

/// The broadcast as a [`Changes`] stream of `tables`; ends with `Compacted` if the
/// watcher fell behind the buffer. A commit's changes arrive as one message, so once
/// the first is yielded the rest are ready at once.
fn follow(
    receiver: tokio::sync::broadcast::Receiver<Arc<[Change]>>,
    tables: Vec<Table>,
    after: Revision,
) -> Changes {
    let state = Some((receiver, after, VecDeque::new()));
    Box::pin(futures_util::stream::unfold(state, move |state| {
        let tables = tables.clone();
        async move {
            let (mut receiver, mut seen, mut ready) = state?;
            loop {
                if let Some(change) = ready.pop_front() {
                    return Some((Ok(change), Some((receiver, seen, ready))));
                }
                match receiver.recv().await {
                    Ok(commit) => {
                        for change in commit.iter() {
                            seen = change.revision;
                            if change.revision > after && tables.contains(&change.table) {
                                ready.push_back(change.clone());
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        return Some((Err(StoreError::Compacted(seen)), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    }))
}
