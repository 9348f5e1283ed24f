//! The file's layout: one redb table per [`Table`] (`&str` key, `rev ‖ JSON` value), and
//! `meta` with the scalars. Format 1 (before the storage interface) stored bare JSON and
//! had no revision; [`RedbStore::prepare`] rewrites such a file once.

use redb::{ReadableTable, TableDefinition};

use super::{RedbStore, StateError};
use crate::store::{Revision, Table};

/// Scalars by name.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The snapshot version counter (`RedbStore::next_version`).
pub(super) const SNAPSHOT_VERSION: &str = "snapshot_version";
/// The store revision: the revision of the last commit that changed something.
const REVISION: &str = "revision";
/// The value format; absent in format 1.
const FORMAT: &str = "format";
/// This code's value format.
const CURRENT_FORMAT: u64 = 2;

/// Bytes of the revision in front of each value.
const REV_BYTES: usize = 8;

/// `table`'s redb definition.
pub(super) const fn definition(
    table: Table,
) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A stored value: its revision, then its JSON.
pub(super) fn join(revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REV_BYTES + value.len());
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// A stored value split into its revision and its JSON; `None` if it is too short.
pub(super) fn split(stored: &[u8]) -> Option<(Revision, &[u8])> {
    let (rev, value) = stored.split_at_checked(REV_BYTES)?;
    let rev: [u8; REV_BYTES] = rev.try_into().ok()?;
    Some((u64::from_le_bytes(rev), value))
}

/// The store revision as of a read transaction.
pub(super) fn revision(txn: &redb::ReadTransaction) -> Result<Revision, redb::Error> {
    let t = txn.open_table(META)?;
    Ok(t.get(REVISION)?.map(|v| v.value()).unwrap_or(0))
}

/// The store revision inside a write transaction.
pub(super) fn revision_in(txn: &redb::WriteTransaction) -> Result<Revision, redb::Error> {
    let t = txn.open_table(META)?;
    Ok(t.get(REVISION)?.map(|v| v.value()).unwrap_or(0))
}

/// Records the store revision.
pub(super) fn set_revision(
    txn: &redb::WriteTransaction,
    revision: Revision,
) -> Result<(), redb::Error> {
    txn.open_table(META)?.insert(REVISION, revision)?;
    Ok(())
}

impl RedbStore {
    /// Creates missing tables and brings a format-1 file to format 2, in one
    /// transaction (so a crash leaves the file in one format or the other).
    pub(super) fn prepare(&self) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        for table in Table::ALL {
            txn.open_table(definition(table))
                .map_err(|e| self.storage(e))?;
        }
        let format = {
            let meta = txn.open_table(META).map_err(|e| self.storage(e))?;
            meta.get(FORMAT)
                .map_err(|e| self.storage(e))?
                .map(|v| v.value())
        };
        match format {
            Some(CURRENT_FORMAT) => {}
            None => self.upgrade_v1(&txn).map_err(|e| self.storage(e))?,
            Some(other) => {
                return Err(self.unreadable_file(&format!(
                    "value format {other} is newer than this meshwork knows ({CURRENT_FORMAT})"
                )));
            }
        }
        txn.commit().map_err(|e| self.storage(e))
    }

    /// Format 1 → 2: every value gets the revision the snapshot version had reached
    /// (at least 1), and that becomes the store revision, so versions keep growing
    /// across the upgrade. A new file starts at revision 0.
    fn upgrade_v1(&self, txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
        let base = {
            let meta = txn.open_table(META)?;
            meta.get(SNAPSHOT_VERSION)?
                .map(|v| v.value())
                .unwrap_or(0)
                .max(1)
        };
        let mut rewrote = 0usize;
        for table in Table::ALL {
            let mut t = txn.open_table(definition(table))?;
            let rows: Vec<(String, Vec<u8>)> = t
                .iter()?
                .map(|row| row.map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
                .collect::<Result<_, _>>()?;
            for (key, json) in rows {
                t.insert(key.as_str(), join(base, &json).as_slice())?;
                rewrote += 1;
            }
        }
        let mut meta = txn.open_table(META)?;
        if rewrote > 0 {
            meta.insert(REVISION, base)?;
            tracing::info!(path = %self.path.display(), records = rewrote, revision = base,
                "state file upgraded to value format 2");
        }
        meta.insert(FORMAT, CURRENT_FORMAT)?;
        Ok(())
    }

    fn unreadable_file(&self, why: &str) -> StateError {
        StateError::Record {
            path: self.path.clone(),
            table: "meta".to_owned(),
            key: FORMAT.to_owned(),
            source: <serde_json::Error as serde::de::Error>::custom(why),
        }
    }
}
