//! Why a store operation failed. Every message names the store (the file's path or
//! etcd's endpoints), and where it applies the operation and the record.

use std::time::Duration;

use super::{Revision, StateError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The redb file failed (its messages are unchanged from before the interface).
    #[error(transparent)]
    State(#[from] StateError),
    /// etcd answered with an error that is not about availability.
    #[error("etcd at {endpoints}: {op} failed: {source}")]
    Etcd {
        /// The endpoints configured.
        endpoints: String,
        /// What was asked.
        op: &'static str,
        /// etcd's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer, or has no quorum: nothing was applied by this call (a write
    /// may still have been applied if etcd committed it as the answer was lost), and
    /// retrying is safe for the operations this crate issues.
    #[error(
        "etcd at {endpoints} is unavailable for {op} (no quorum or no answer within \
         {timeout:?}){}",
        reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
    )]
    Unavailable {
        /// The endpoints configured.
        endpoints: String,
        /// What was asked.
        op: &'static str,
        /// The limit each call has.
        timeout: Duration,
        /// etcd's or the transport's reason, when there is one.
        reason: Option<String>,
    },
    /// The store no longer holds the changes after this revision (etcd compacted its
    /// history, or a redb watcher fell behind): list again, then watch again.
    #[error("the store no longer holds the changes after revision {0}; list again")]
    Compacted(Revision),
    /// A stored record does not decode as what its table holds.
    #[error("{store}: record {table}/{key} is unreadable: {reason}; refusing to continue")]
    Record {
        /// The store.
        store: String,
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The request itself is wrong (a programming error, never peer input).
    #[error("{store}: invalid request: {reason}")]
    Invalid {
        /// The store.
        store: String,
        /// What is wrong.
        reason: String,
    },
    /// A guarded commit's answer was lost and its retry conflicted: it may or may not
    /// have applied. Read the records before deciding what to do.
    #[error(
        "{store}: the answer to a commit was lost and sending it again conflicted: it may or \
         may not have applied; read the records before retrying"
    )]
    Ambiguous {
        /// The store.
        store: String,
    },
    /// A read-check-write kept meeting concurrent writers.
    #[error("{store}: {table}/{key} changed under {rounds} attempts to update it; try again")]
    Contended {
        /// The store.
        store: String,
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// How many attempts were made.
        rounds: u32,
    },
}

impl StoreError {
    /// Whether the operation may succeed if simply retried later (the store was
    /// unavailable or busy), as opposed to a refusal or corrupt data.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Contended { .. }
        )
    }
}
