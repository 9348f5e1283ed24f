//! The embedded backend: one redb file, `<state>/control.redb`, for one control process
//! (the default).
//!
//! Every commit is one redb write transaction with immediate durability, so anything a
//! caller was told succeeded survives `kill -9`. The store-wide revision is a counter in
//! the `meta` table that each commit that changes something increases; every value is
//! stored as `mod_revision` (8 bytes, little-endian) followed by its JSON (format 2).
//! Files written before the storage interface (format 1: JSON only) are rewritten once,
//! in one transaction, on first open.
//!
//! Watches are served from memory: a broadcast of each commit's changes, so a watch
//! sees only what is committed after it starts ([`StoreError::Compacted`] for anything
//! older, and for a watcher that falls more than 4,096 changes behind).
//!
//! The file holds private keys: it is created mode 0600 and refused if it has become
//! readable by group or others. A file that cannot be opened or decoded is reported
//! with its path and never replaced.

mod backend;
mod error;
mod format;
#[cfg(test)]
mod tests;

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::broadcast;

pub use self::error::StateError;
use self::format::definition;
use super::{Change, Op, Record, Revision, Table};

/// File name of the store inside the state directory.
pub const STATE_FILE: &str = "control.redb";

/// How many changes a watcher may fall behind before it must list again.
const WATCH_BUFFER: usize = 4096;

/// The open state file.
pub struct RedbStore {
    db: redb::Database,
    path: PathBuf,
    /// Each commit's changes as one message, so a watcher gets a commit whole.
    changes: broadcast::Sender<std::sync::Arc<[Change]>>,
    /// Held from a write transaction's start until its changes are broadcast, so
    /// watchers receive commits in revision order.
    writing: Mutex<()>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens `<state_dir>/control.redb`, creating it (mode 0600) when absent, and
    /// brings a format-1 file to format 2.
    pub fn open(state_dir: &Path) -> Result<RedbStore, StateError> {
        let path = state_dir.join(STATE_FILE);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => tracing::info!(path = %path.display(), "created a new state file"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StateError::Permissions { path, mode });
        }
        let db = redb::Builder::new()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|source| StateError::Open {
                path: path.clone(),
                source,
            })?;
        let store = RedbStore {
            db,
            path,
            changes: broadcast::channel(WATCH_BUFFER).0,
            writing: Mutex::new(()),
        };
        store.prepare()?;
        Ok(store)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn storage(&self, source: impl Into<redb::Error>) -> StateError {
        StateError::Storage {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    fn get_now(&self, table: Table, key: &str) -> Result<Option<Record>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let t = txn
            .open_table(definition(table))
            .map_err(|e| self.storage(e))?;
        let Some(v) = t.get(key).map_err(|e| self.storage(e))? else {
            return Ok(None);
        };
        self.record(table, key, v.value()).map(Some)
    }

    fn list_now(&self, table: Table) -> Result<(Vec<Record>, Revision), StateError> {
        let (mut lists, revision) = self.list_tables_now(&[table])?;
        Ok((lists.pop().unwrap_or_default(), revision))
    }

    /// Every record of each of `tables`, in one read transaction.
    fn list_tables_now(
        &self,
        tables: &[Table],
    ) -> Result<(Vec<Vec<Record>>, Revision), StateError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let revision = format::revision(&txn).map_err(|e| self.storage(e))?;
        let mut all = Vec::new();
        for &table in tables {
            let t = txn
                .open_table(definition(table))
                .map_err(|e| self.storage(e))?;
            let mut out = Vec::new();
            for row in t.iter().map_err(|e| self.storage(e))? {
                let (k, v) = row.map_err(|e| self.storage(e))?;
                out.push(self.record(table, k.value(), v.value())?);
            }
            all.push(out);
        }
        Ok((all, revision))
    }

    fn revision_now(&self) -> Result<Revision, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        format::revision(&txn).map_err(|e| self.storage(e))
    }

    /// A stored value as a [`Record`].
    fn record(&self, table: Table, key: &str, stored: &[u8]) -> Result<Record, StateError> {
        format::split(stored)
            .map(|(mod_revision, value)| Record {
                key: key.to_owned(),
                value: bytes::Bytes::copy_from_slice(value),
                mod_revision,
            })
            .ok_or_else(|| self.unreadable(table, key, "shorter than its revision"))
    }

    fn unreadable(&self, table: Table, key: &str, why: &str) -> StateError {
        StateError::Record {
            path: self.path.clone(),
            table: table.name().to_owned(),
            key: key.to_owned(),
            source: <serde_json::Error as serde::de::Error>::custom(why),
        }
    }

    /// Runs `f` in one write transaction, then commits it durably and broadcasts its
    /// changes. The store revision grows by one if `f` changed anything.
    fn write<R>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, StateError>,
    ) -> Result<R, StateError> {
        // A panic while holding this lock left no transaction half-applied (redb
        // aborts an uncommitted one on drop): the guard carries no state to distrust.
        let _order = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        let revision = format::revision_in(&txn).map_err(|e| self.storage(e))? + 1;
        let mut writer = Writer {
            store: self,
            txn: &txn,
            revision,
            changes: Vec::new(),
        };
        let answer = f(&mut writer)?;
        let changes = std::mem::take(&mut writer.changes);
        if !changes.is_empty() {
            format::set_revision(&txn, revision).map_err(|e| self.storage(e))?;
        }
        txn.commit().map_err(|e| self.storage(e))?;
        if !changes.is_empty() {
            // No receiver is not an error: nobody watches.
            let _ = self.changes.send(changes.into());
        }
        Ok(answer)
    }

    /// Checks every operation's expectation, then applies them all (one transaction).
    fn commit_now(&self, ops: &[Op]) -> Result<super::Commit, StateError> {
        self.write(|w| {
            for (index, op) in ops.iter().enumerate() {
                let current = w.current(op.table(), op.key())?;
                if !op.holds_for(current.as_ref()) {
                    return Ok(super::Commit::Conflict { index, current });
                }
            }
            for op in ops {
                match op {
                    Op::Put {
                        table, key, value, ..
                    } => w.put(*table, key, value.clone())?,
                    Op::Delete { table, key, .. } => {
                        w.delete(*table, key)?;
                    }
                    Op::Check { .. } => {}
                }
            }
            // Nothing changed (only checks, or deletes of absent records): the store
            // revision stays, as etcd's does; reporting the next one would hand the
            // caller a revision the next real commit also gets.
            let at = match w.changes.is_empty() {
                true => w.revision - 1,
                false => w.revision,
            };
            Ok(super::Commit::Applied(at))
        })
    }
}

/// One write transaction in progress.
struct Writer<'a> {
    store: &'a RedbStore,
    txn: &'a redb::WriteTransaction,
    revision: Revision,
    changes: Vec<Change>,
}

impl Writer<'_> {
    fn current(&self, table: Table, key: &str) -> Result<Option<Record>, StateError> {
        let store = self.store;
        let t = self
            .txn
            .open_table(definition(table))
            .map_err(|e| store.storage(e))?;
        let stored = t.get(key).map_err(|e| store.storage(e))?;
        match stored {
            Some(v) => store.record(table, key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put(&mut self, table: Table, key: &str, value: bytes::Bytes) -> Result<(), StateError> {
        let store = self.store;
        let mut t = self
            .txn
            .open_table(definition(table))
            .map_err(|e| store.storage(e))?;
        t.insert(key, format::join(self.revision, &value).as_slice())
            .map_err(|e| store.storage(e))?;
        self.changes.push(Change {
            table,
            key: key.to_owned(),
            value: Some(value),
            revision: self.revision,
        });
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str) -> Result<bool, StateError> {
        let store = self.store;
        let mut t = self
            .txn
            .open_table(definition(table))
            .map_err(|e| store.storage(e))?;
        let existed = t.remove(key).map_err(|e| store.storage(e))?.is_some();
        if existed {
            self.changes.push(Change {
                table,
                key: key.to_owned(),
                value: None,
                revision: self.revision,
            });
        }
        Ok(existed)
    }
}
