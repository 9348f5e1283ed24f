//! Durable control-plane state: one redb file, `<state>/control.redb`.
//!
//! Holds the CA authorities (certificate and private key), the JWT signing key,
//! registration entries, join tokens (hashed), attested agents and the snapshot
//! version. Every write is its own redb transaction committed with immediate
//! durability, so anything a caller was told succeeded survives `kill -9`.
//!
//! The file holds private keys: it is created mode 0600 and refused if it has
//! become readable by group or others. A file that cannot be opened or decoded is
//! reported with its path and never replaced.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// File name of the store inside the state directory.
pub const STATE_FILE: &str = "control.redb";

/// `AuthorityRecord` by zero-padded sequence number (oldest first).
pub(crate) const AUTHORITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("authorities");
/// `JwtKeyRecord` by key id.
pub(crate) const JWT_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("jwt_keys");
/// `EntryRecord` by entry id.
pub(crate) const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// `TokenRecord` by the hex SHA-256 of the token (the token itself is never stored).
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("join_tokens");
/// `AgentRecord` by the agent's SPIFFE ID.
pub(crate) const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// Sidecar inbound addresses (`SocketAddr` as JSON) by workload replica: the workload's name
/// for replica 0 (all that state files from before replicas hold), `<name>.<n>` for replica
/// n (see `replica.rs`).
pub(crate) const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
/// Scalars: `snapshot_version`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const ALL_TABLES: [TableDefinition<&str, &[u8]>; 6] =
    [AUTHORITIES, JWT_KEYS, ENTRIES, TOKENS, AGENTS, ENDPOINTS];

/// A record of another table to write along with a change (see `Store::modify_and_put`).
pub(crate) type AlsoPut<'a, X> = Option<(
    TableDefinition<'static, &'static str, &'static [u8]>,
    &'a str,
    &'a X,
)>;

/// The state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Creating or inspecting the file failed.
    #[error("state file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds private keys but others may read it.
    #[error("state file {} has mode {mode:o}; it holds the CA key and must be owner-only (chmod 600)", path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// redb refused to open the file (corrupt, another process holds it, newer format).
    #[error("state file {} cannot be opened: {source}; refusing to replace it (move it away to start over)", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's reason.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write transaction failed.
    #[error("state file {}: {source}", path.display())]
    Storage {
        /// The file.
        path: PathBuf,
        /// redb's reason.
        #[source]
        source: redb::Error,
    },
    /// A stored record does not decode.
    #[error("state file {}: record {table}/{key} is unreadable: {source}; refusing to continue", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The table.
        table: String,
        /// The record's key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored record's key does not decode.
    #[error("state file {}: record key {table}/{key:?} is unreadable: {source}; refusing to continue", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// Why it does not decode.
        #[source]
        source: crate::replica::ReplicaKeyError,
    },
}

/// The open state file.
pub struct Store {
    db: redb::Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens `<state_dir>/control.redb`, creating it (mode 0600) when absent.
    pub fn open(state_dir: &Path) -> Result<Store, StateError> {
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
        let store = Store { db, path };
        store.create_tables()?;
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

    fn create_tables(&self) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        for table in ALL_TABLES {
            txn.open_table(table).map_err(|e| self.storage(e))?;
        }
        txn.open_table(META).map_err(|e| self.storage(e))?;
        txn.commit().map_err(|e| self.storage(e))
    }

    /// Every record of `table`, in key order.
    pub(crate) fn all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let t = txn.open_table(table).map_err(|e| self.storage(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.storage(e))? {
            let (k, v) = row.map_err(|e| self.storage(e))?;
            let key = k.value().to_owned();
            let value = self.decode(table, &key, v.value())?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// A [`StateError::Key`] for `key` of `table`.
    pub(crate) fn bad_key(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        source: crate::replica::ReplicaKeyError,
    ) -> StateError {
        StateError::Key {
            path: self.path.clone(),
            table: table.name().to_owned(),
            key: key.to_owned(),
            source,
        }
    }

    /// One record of `table`.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let t = txn.open_table(table).map_err(|e| self.storage(e))?;
        let Some(v) = t.get(key).map_err(|e| self.storage(e))? else {
            return Ok(None);
        };
        self.decode(table, key, v.value()).map(Some)
    }

    /// Writes (or replaces) one record durably.
    pub(crate) fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        self.update(|txn| {
            let mut t = txn.open_table(table)?;
            t.insert(key, encode(value).as_slice())?;
            Ok(())
        })
    }

    /// Removes one record durably; whether it existed.
    pub(crate) fn delete(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<bool, StateError> {
        let mut existed = false;
        self.update(|txn| {
            existed = txn.open_table(table)?.remove(key)?.is_some();
            Ok(())
        })?;
        Ok(existed)
    }

    /// Runs `f` in one write transaction and commits it durably.
    pub(crate) fn update(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        f(&txn).map_err(|e| self.storage(e))?;
        txn.commit().map_err(|e| self.storage(e))
    }

    #[cfg(test)]
    /// Reads, changes and writes back one record atomically. `f` sees the current
    /// value (if any) and returns the value to store (`None` leaves it as is) and
    /// its answer for the caller.
    pub(crate) fn modify<T, R>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        f: impl FnOnce(Option<T>) -> (Option<T>, R),
    ) -> Result<R, StateError>
    where
        T: Serialize + DeserializeOwned,
    {
        self.modify_and_put::<T, R, ()>(table, key, f, None)
    }

    /// Reads, changes and writes back one record atomically (see `modify` in tests);
    /// when `f` writes, `also` (a record of another table) is written in the same
    /// transaction.
    pub(crate) fn modify_and_put<T, R, X>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        f: impl FnOnce(Option<T>) -> (Option<T>, R),
        also: AlsoPut<'_, X>,
    ) -> Result<R, StateError>
    where
        T: Serialize + DeserializeOwned,
        X: Serialize,
    {
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        let answer = {
            let mut t = txn.open_table(table).map_err(|e| self.storage(e))?;
            let current = match t.get(key).map_err(|e| self.storage(e))? {
                Some(v) => Some(self.decode(table, key, v.value())?),
                None => None,
            };
            let (next, answer) = f(current);
            if let Some(next) = next {
                t.insert(key, encode(&next).as_slice())
                    .map_err(|e| self.storage(e))?;
                if let Some((table, key, value)) = also {
                    let mut other = txn.open_table(table).map_err(|e| self.storage(e))?;
                    other
                        .insert(key, encode(value).as_slice())
                        .map_err(|e| self.storage(e))?;
                }
            }
            answer
        };
        txn.commit().map_err(|e| self.storage(e))?;
        Ok(answer)
    }

    /// Increments and returns the persisted snapshot version, so versions keep
    /// growing across restarts.
    pub fn next_version(&self) -> Result<u64, StateError> {
        let mut next = 0;
        self.update(|txn| {
            let mut t = txn.open_table(META)?;
            let current = t.get("snapshot_version")?.map(|v| v.value()).unwrap_or(0);
            next = current + 1;
            t.insert("snapshot_version", next)?;
            Ok(())
        })?;
        Ok(next)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StateError> {
        serde_json::from_slice(bytes).map_err(|source| StateError::Record {
            path: self.path.clone(),
            table: table.name().to_owned(),
            key: key.to_owned(),
            source,
        })
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // invariant: records are plain derive(Serialize) structs with string keys,
    // which serde_json always serialises.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_versions_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .put(ENTRIES, "a", &serde_json::json!({"x": 1}))
                .unwrap();
            assert_eq!(store.next_version().unwrap(), 1);
            assert_eq!(store.next_version().unwrap(), 2);
        }
        let store = Store::open(dir.path()).unwrap();
        let all: Vec<(String, serde_json::Value)> = store.all(ENTRIES).unwrap();
        assert_eq!(all, vec![("a".to_owned(), serde_json::json!({"x": 1}))]);
        assert_eq!(store.next_version().unwrap(), 3);
        assert!(store.delete(ENTRIES, "a").unwrap());
        assert!(!store.delete(ENTRIES, "a").unwrap());
    }

    #[test]
    fn the_file_is_owner_only_and_loose_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let path = dir.path().join(STATE_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StateError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let garbage = vec![0x5a_u8; 8192];
        std::fs::write(&path, &garbage).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("control.redb") && text.contains("refusing to replace"),
            "{text}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            garbage,
            "the file was modified"
        );
    }

    #[test]
    fn an_undecodable_record_names_table_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .update(|txn| {
                txn.open_table(TOKENS)?
                    .insert("k1", b"not json".as_slice())?;
                Ok(())
            })
            .unwrap();
        let err = store.all::<serde_json::Value>(TOKENS).unwrap_err();
        assert!(err.to_string().contains("join_tokens/k1"), "{err}");
    }

    #[test]
    fn modify_is_read_check_write_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store
            .modify::<u32, bool>(TOKENS, "t", |cur| (Some(1), cur.is_none()))
            .unwrap();
        let second = store
            .modify::<u32, bool>(TOKENS, "t", |cur| (None, cur.is_none()))
            .unwrap();
        assert!(first && !second);
    }
}
