//! The control plane's durable state behind one interface, [`Backend`], with two
//! implementations selected by configuration:
//!
//! - [`redb::RedbStore`]: one file, `<state>/control.redb`, for one control process.
//!   The default, and what a single machine needs.
//! - [`etcd::EtcdStore`]: an etcd cluster shared by any number of control replicas
//!   (issue 15). etcd is the consensus; meshwork writes no consensus of its own.
//!
//! The interface is etcd's model, which redb can give exactly: tables of JSON records
//! by string key, one store-wide revision that every committed change increases, each
//! record carrying the revision of its last change (`mod_revision`), transactions whose
//! operations each state what they expect of the record ([`Expect`]) and apply all or
//! nothing, and a watch that yields every change after a revision, in order. The same
//! test suite (`suite.rs`) runs against both backends.
//!
//! [`Store`] dispatches to one of them (an enum, not `dyn`: two backends, known at
//! compile time) and adds the typed helpers callers use ([`Store::read`],
//! [`Store::put`], [`Store::delete`], [`Store::modify`]).

pub mod cache;
pub mod election;
mod error;
pub mod etcd;
pub mod redb;
pub mod seal;
#[cfg(test)]
mod suite;
pub mod typed;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub use self::error::StoreError;
pub use self::redb::{STATE_FILE, StateError};

/// A store-wide revision: every committed change gets a larger one.
pub type Revision = u64;

/// The tables of the control plane's state. Their names are redb's table names and
/// the middle part of etcd keys (`<prefix>/<table>/<key>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `AuthorityRecord` by zero-padded sequence number (oldest first).
    Authorities,
    /// `JwtKeyRecord` by key id.
    JwtKeys,
    /// `RegistrationEntrySpec` by entry id.
    Entries,
    /// `TokenRecord` by the hex SHA-256 of the token (the token itself is never stored).
    Tokens,
    /// `AgentRecord` by the agent's SPIFFE ID.
    Agents,
    /// Sidecar inbound addresses (`SocketAddr` as JSON) by workload replica: the
    /// workload's name for replica 0, `<name>.<n>` for replica n (see `replica.rs`).
    Endpoints,
    /// The live policies and traffic rules (written by the leader replica).
    Resources,
    /// The control replicas that are up, by replica id (etcd: on each replica's lease).
    Replicas,
    /// Candidates for leadership of the singleton duties (etcd's Election API writes
    /// these: one key per campaigning replica's lease; the oldest leads).
    Election,
    /// Version markers: `identity` and `snapshot`, rewritten (as the last operation) by
    /// every commit that changes what agents or sidecars see, so each view's version is
    /// the revision of that marker, the same on every replica (see `crate::versions`).
    Versions,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 10] = [
        Table::Authorities,
        Table::JwtKeys,
        Table::Entries,
        Table::Tokens,
        Table::Agents,
        Table::Endpoints,
        Table::Resources,
        Table::Replicas,
        Table::Election,
        Table::Versions,
    ];

    /// The table's name in both backends.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Authorities => "authorities",
            Table::JwtKeys => "jwt_keys",
            Table::Entries => "entries",
            Table::Tokens => "join_tokens",
            Table::Agents => "agents",
            Table::Endpoints => "endpoints",
            Table::Resources => "resources",
            Table::Replicas => "replicas",
            Table::Election => "election",
            Table::Versions => "versions",
        }
    }

    /// The table named `name`.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its key within its table.
    pub key: String,
    /// Its value (JSON).
    pub value: Bytes,
    /// The revision of its last change.
    pub mod_revision: Revision,
}

/// What an operation expects of its record for the commit to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing.
    Any,
    /// The record does not exist.
    Absent,
    /// The record exists and was last changed at this revision.
    At(Revision),
}

/// One operation of a [`Backend::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a record.
    Put {
        /// The table.
        table: Table,
        /// The key.
        key: String,
        /// The value (JSON).
        value: Bytes,
        /// What must hold first.
        expect: Expect,
    },
    /// Remove a record (removing an absent one is not an error under [`Expect::Any`]).
    Delete {
        /// The table.
        table: Table,
        /// The key.
        key: String,
        /// What must hold first.
        expect: Expect,
    },
    /// Write nothing, only require `expect` of a record: a leader's fence
    /// ([`election::Fence`]), so a deposed leader's commit is refused.
    Check {
        /// The table.
        table: Table,
        /// The key.
        key: String,
        /// What must hold.
        expect: Expect,
    },
}

impl Op {
    /// The operation's table.
    pub fn table(&self) -> Table {
        match self {
            Op::Put { table, .. } | Op::Delete { table, .. } | Op::Check { table, .. } => *table,
        }
    }

    /// The operation's key.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } | Op::Check { key, .. } => key,
        }
    }

    /// What the operation expects.
    pub fn expect(&self) -> Expect {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } | Op::Check { expect, .. } => {
                *expect
            }
        }
    }

    /// Whether `current` (the record as stored now) meets the expectation.
    pub fn holds_for(&self, current: Option<&Record>) -> bool {
        match (self.expect(), current) {
            (Expect::Any, _) | (Expect::Absent, None) => true,
            (Expect::At(r), Some(rec)) => rec.mod_revision == r,
            (Expect::Absent, Some(_)) | (Expect::At(_), None) => false,
        }
    }
}

/// The outcome of a [`Backend::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Every operation applied, durably, at this revision.
    Applied(Revision),
    /// Operation `index`'s expectation did not hold; nothing was applied. `current` is
    /// that record as the store held it when the commit was refused.
    Conflict {
        /// Which operation.
        index: usize,
        /// The record then.
        current: Option<Record>,
    },
}

/// One committed change, as a watch yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The table.
    pub table: Table,
    /// The key.
    pub key: String,
    /// The new value; `None`: deleted.
    pub value: Option<Bytes>,
    /// The commit's revision.
    pub revision: Revision,
}

/// Every change after a revision, in revision order. An `Err(StoreError::Compacted)`
/// means the store no longer has the changes asked for: list again, then watch again.
pub type Changes = Pin<Box<dyn futures_util::Stream<Item = Result<Change, StoreError>> + Send>>;

/// What every backend provides.
pub trait Backend: Send + Sync + 'static {
    /// One record (a linearizable read).
    fn get(
        &self,
        table: Table,
        key: &str,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Every record of `table` in key order, read at one revision, which is returned.
    fn list(
        &self,
        table: Table,
    ) -> impl Future<Output = Result<(Vec<Record>, Revision), StoreError>> + Send;

    /// Every record of each of `tables`, all read at one revision, which is returned (a
    /// cache listed table by table could pair one table's newer state with another's
    /// older one).
    fn list_tables(
        &self,
        tables: &[Table],
    ) -> impl Future<Output = Result<(Vec<Vec<Record>>, Revision), StoreError>> + Send;

    /// Applies every operation or none. `Applied` means durable. A key may appear only
    /// once per commit ([`StoreError::Invalid`] otherwise, as etcd refuses it).
    fn commit(&self, ops: Vec<Op>) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// Every change to `tables` with a revision above `after`, in order.
    fn watch(
        &self,
        tables: &[Table],
        after: Revision,
    ) -> impl Future<Output = Result<Changes, StoreError>> + Send;

    /// The store's current revision.
    fn revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// The store, for messages: the file's path or etcd's endpoints.
    fn describe(&self) -> String;
}

/// The configured backend.
#[derive(Debug)]
pub enum Store {
    /// One redb file.
    Redb(redb::RedbStore),
    /// A shared etcd cluster (boxed: etcd's client is several KiB).
    Etcd(Box<etcd::EtcdStore>),
}

impl Backend for Store {
    async fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        match self {
            Store::Redb(s) => s.get(table, key).await,
            Store::Etcd(s) => s.get(table, key).await,
        }
    }

    async fn list(&self, table: Table) -> Result<(Vec<Record>, Revision), StoreError> {
        match self {
            Store::Redb(s) => s.list(table).await,
            Store::Etcd(s) => s.list(table).await,
        }
    }

    async fn list_tables(
        &self,
        tables: &[Table],
    ) -> Result<(Vec<Vec<Record>>, Revision), StoreError> {
        match self {
            Store::Redb(s) => s.list_tables(tables).await,
            Store::Etcd(s) => s.list_tables(tables).await,
        }
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Commit, StoreError> {
        match self {
            Store::Redb(s) => s.commit(ops).await,
            Store::Etcd(s) => s.commit(ops).await,
        }
    }

    async fn watch(&self, tables: &[Table], after: Revision) -> Result<Changes, StoreError> {
        match self {
            Store::Redb(s) => s.watch(tables, after).await,
            Store::Etcd(s) => s.watch(tables, after).await,
        }
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        match self {
            Store::Redb(s) => s.revision().await,
            Store::Etcd(s) => s.revision().await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Store::Redb(s) => s.describe(),
            Store::Etcd(s) => s.describe(),
        }
    }
}

/// Refuses a commit that names one key twice (etcd refuses it; redb must too, so
/// both backends behave alike).
fn check_distinct(store: &str, ops: &[Op]) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    for op in ops {
        if !seen.insert((op.table(), op.key())) {
            return Err(StoreError::Invalid {
                store: store.to_owned(),
                reason: format!("one commit names {}/{} twice", op.table().name(), op.key()),
            });
        }
    }
    Ok(())
}
