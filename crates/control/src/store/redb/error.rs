//! Why the redb file cannot be used. The texts predate the storage interface and are
//! kept: operators and tests know them.

use std::path::PathBuf;

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
