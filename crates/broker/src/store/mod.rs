//! Durable state in one redb file: instances, bindings, their in-flight operations, and
//! tombstones of deleted ids (so polling a finished async delete answers 410, not 404).
//!
//! Every access runs in a blocking task on the broker's task tracker, so a shutdown waits
//! for it and the file is closed before the broker reports it has stopped.
//!
//! Must not import: `error`, `ops`, `http`, `server`. Transactions return the caller's error
//! type (any `E: From<StoreError>`), so the store does not know `BrokerError`.

mod records;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use tokio_util::task::TaskTracker;

pub use records::{
    BindingAttributes, BindingRecord, InstanceAttributes, InstanceRecord, MaintenanceInfo, OpKind,
    OpState, Operation, PendingUpdate,
};

const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const BINDINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bindings");
const GONE_INSTANCES: TableDefinition<&str, i64> = TableDefinition::new("gone_instances");
const GONE_BINDINGS: TableDefinition<(&str, &str), i64> = TableDefinition::new("gone_bindings");

/// Tombstones older than this are forgotten; platforms stop polling long before.
const TOMBSTONE_SECONDS: i64 = 7 * 24 * 3600;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating or opening the state file.
    #[error("cannot open state file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb or the OS said.
        #[source]
        source: redb::Error,
    },
    /// A transaction failed.
    #[error("state store: {0}")]
    Redb(#[from] redb::Error),
    /// A record did not decode (written by an incompatible version?).
    #[error("state store record {key:?} does not decode: {source}")]
    Decode {
        /// The record key.
        key: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The blocking task running a transaction did not finish (it panicked or was
    /// cancelled); the broker reports it as an internal error.
    #[error("state store task: {0}")]
    Task(String),
}

fn redb_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(e.into())
}

/// The broker's durable state.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    tracker: TaskTracker,
}

impl Store {
    /// Opens (or creates, mode 0600: it holds binding credentials) the state file.
    pub fn open(path: &Path, tracker: TaskTracker) -> Result<Store, StoreError> {
        let open_err = |e: redb::Error| StoreError::Open {
            path: path.to_owned(),
            source: e,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_err(e.into()))?;
        }
        create_private(path).map_err(|e| open_err(e.into()))?;
        let db = Database::create(path).map_err(|e| open_err(e.into()))?;
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        ensure_tables(&txn).map_err(open_err)?;
        txn.commit().map_err(|e| open_err(e.into()))?;
        Ok(Store {
            db: Arc::new(db),
            tracker,
        })
    }

    /// Runs `f` in a durable write transaction, committed when `f` returns `Ok`.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx) -> Result<T, E> + Send + 'static,
    {
        self.run(Durability::Immediate, true, f).await
    }

    /// Like [`Store::write`] but without fsync: for progress notes that may be lost in a crash.
    pub async fn write_lazy<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx) -> Result<T, E> + Send + 'static,
    {
        self.run(Durability::None, true, f).await
    }

    /// Runs `f` against a consistent view without committing anything.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Tx) -> Result<T, E> + Send + 'static,
    {
        self.run(Durability::None, false, move |tx: &mut Tx| f(tx))
            .await
    }

    async fn run<T, E, F>(&self, durability: Durability, commit: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx) -> Result<T, E> + Send + 'static,
    {
        let db = self.db.clone();
        let task = self.tracker.spawn_blocking(move || {
            let mut txn = db.begin_write().map_err(redb_err)?;
            txn.set_durability(durability).map_err(redb_err)?;
            let mut tx = Tx { txn };
            let out = f(&mut tx)?;
            if commit {
                tx.txn.commit().map_err(redb_err)?;
            } else {
                tx.txn.abort().map_err(redb_err)?;
            }
            Ok(out)
        });
        task.await
            .map_err(|e| E::from(StoreError::Task(e.to_string())))?
    }
}

fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn ensure_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(INSTANCES)?;
    txn.open_table(BINDINGS)?;
    txn.open_table(GONE_INSTANCES)?;
    txn.open_table(GONE_BINDINGS)?;
    Ok(())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_owned(),
        source,
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Decode {
        key: "<encode>".to_owned(),
        source,
    })
}

/// One transaction over the broker's tables.
pub struct Tx {
    txn: WriteTransaction,
}

impl Tx {
    /// An instance by id.
    pub fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let table = self.txn.open_table(INSTANCES).map_err(redb_err)?;
        let value = table.get(id).map_err(redb_err)?;
        value.map(|v| decode(id, v.value())).transpose()
    }

    /// All instances.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let table = self.txn.open_table(INSTANCES).map_err(redb_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(redb_err)? {
            let (k, v) = entry.map_err(redb_err)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Inserts or replaces an instance (and forgets a tombstone for its id).
    pub fn put_instance(&mut self, record: &InstanceRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let mut table = self.txn.open_table(INSTANCES).map_err(redb_err)?;
        table
            .insert(record.id.as_str(), bytes.as_slice())
            .map_err(redb_err)?;
        let mut gone = self.txn.open_table(GONE_INSTANCES).map_err(redb_err)?;
        gone.remove(record.id.as_str()).map_err(redb_err)?;
        Ok(())
    }

    /// Removes an instance and its bindings, leaving tombstones.
    pub fn remove_instance(&mut self, id: &str) -> Result<(), StoreError> {
        for b in self.bindings_of(id)? {
            self.remove_binding(id, &b.binding_id)?;
        }
        let mut table = self.txn.open_table(INSTANCES).map_err(redb_err)?;
        table.remove(id).map_err(redb_err)?;
        let mut gone = self.txn.open_table(GONE_INSTANCES).map_err(redb_err)?;
        let cutoff = now() - TOMBSTONE_SECONDS;
        gone.retain(|_, t| t > cutoff).map_err(redb_err)?;
        gone.insert(id, now()).map_err(redb_err)?;
        Ok(())
    }

    /// Whether an instance with this id was deleted recently.
    pub fn instance_gone(&self, id: &str) -> Result<bool, StoreError> {
        let gone = self.txn.open_table(GONE_INSTANCES).map_err(redb_err)?;
        Ok(gone.get(id).map_err(redb_err)?.is_some())
    }

    /// A binding by ids.
    pub fn binding(
        &self,
        instance: &str,
        binding: &str,
    ) -> Result<Option<BindingRecord>, StoreError> {
        let table = self.txn.open_table(BINDINGS).map_err(redb_err)?;
        let value = table.get((instance, binding)).map_err(redb_err)?;
        value.map(|v| decode(binding, v.value())).transpose()
    }

    /// All bindings of one instance.
    pub fn bindings_of(&self, instance: &str) -> Result<Vec<BindingRecord>, StoreError> {
        let table = self.txn.open_table(BINDINGS).map_err(redb_err)?;
        let mut out = Vec::new();
        for entry in table.range((instance, "")..).map_err(redb_err)? {
            let (k, v) = entry.map_err(redb_err)?;
            let (i, b) = k.value();
            if i != instance {
                break;
            }
            out.push(decode(b, v.value())?);
        }
        Ok(out)
    }

    /// All bindings.
    pub fn all_bindings(&self) -> Result<Vec<BindingRecord>, StoreError> {
        let table = self.txn.open_table(BINDINGS).map_err(redb_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(redb_err)? {
            let (k, v) = entry.map_err(redb_err)?;
            out.push(decode(k.value().1, v.value())?);
        }
        Ok(out)
    }

    /// Inserts or replaces a binding (and forgets a tombstone for its ids).
    pub fn put_binding(&mut self, record: &BindingRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let key = (record.instance_id.as_str(), record.binding_id.as_str());
        let mut table = self.txn.open_table(BINDINGS).map_err(redb_err)?;
        table.insert(key, bytes.as_slice()).map_err(redb_err)?;
        let mut gone = self.txn.open_table(GONE_BINDINGS).map_err(redb_err)?;
        gone.remove(key).map_err(redb_err)?;
        Ok(())
    }

    /// Removes a binding, leaving a tombstone.
    pub fn remove_binding(&mut self, instance: &str, binding: &str) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(BINDINGS).map_err(redb_err)?;
        table.remove((instance, binding)).map_err(redb_err)?;
        let mut gone = self.txn.open_table(GONE_BINDINGS).map_err(redb_err)?;
        let cutoff = now() - TOMBSTONE_SECONDS;
        gone.retain(|_, t| t > cutoff).map_err(redb_err)?;
        gone.insert((instance, binding), now()).map_err(redb_err)?;
        Ok(())
    }

    /// Whether a binding with these ids was deleted recently.
    pub fn binding_gone(&self, instance: &str, binding: &str) -> Result<bool, StoreError> {
        let gone = self.txn.open_table(GONE_BINDINGS).map_err(redb_err)?;
        Ok(gone.get((instance, binding)).map_err(redb_err)?.is_some())
    }
}
