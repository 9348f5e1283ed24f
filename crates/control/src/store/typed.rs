//! Typed records over [`Backend`]: JSON in, JSON out, and the read-check-write loop
//! that keeps a change correct when several control replicas write at once.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Backend, Commit, Expect, Op, Revision, Store, StoreError, Table};

/// How many times [`Store::modify`] re-reads after a conflict before giving up. Each
/// conflict means another writer's commit landed in between, so this only runs out
/// under a storm of writes to one record.
const MODIFY_ROUNDS: u32 = 16;

/// What a [`Store::modify`] step decided.
#[derive(Debug)]
pub struct Decision<T, R> {
    /// The record's new value; `None` leaves it as it is (and writes nothing else).
    pub value: Option<T>,
    /// Further operations to commit with it (other records), only if `value` is set.
    pub also: Vec<Op>,
    /// The answer for the caller.
    pub answer: R,
}

/// A random pause after losing round `round` to another writer, growing with the round
/// (up to 64 ms): without it, writers that re-read at once can keep losing to the same
/// faster writer (seen: 16 lost rounds in a row with 6 writers on 2 threads).
async fn after_conflict(round: u32) {
    let cap_ms = 1u64 << round.min(6);
    let pause = rand::random_range(0..=cap_ms * 1000);
    tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
}

/// `value` as a record's bytes.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    // invariant: records are plain derive(Serialize) structs with string keys,
    // which serde_json always serialises.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

impl Store {
    /// One record, decoded, with the revision of its last change.
    pub async fn read<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<(T, Revision)>, StoreError> {
        let Some(rec) = self.get(table, key).await? else {
            return Ok(None);
        };
        let value = self.decode(table, key, &rec.value)?;
        Ok(Some((value, rec.mod_revision)))
    }

    /// Every record of `table`, decoded, in key order.
    pub async fn read_all<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let (records, _) = self.list(table).await?;
        records
            .into_iter()
            .map(|rec| Ok((rec.key.clone(), self.decode(table, &rec.key, &rec.value)?)))
            .collect()
    }

    /// Writes (or replaces) one record; the revision it was written at.
    pub async fn put<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<Revision, StoreError> {
        let op = Op::Put {
            table,
            key: key.to_owned(),
            value: encode(value),
            expect: Expect::Any,
        };
        match self.commit(vec![op]).await? {
            Commit::Applied(r) => Ok(r),
            // invariant: an `Expect::Any` operation cannot conflict; say so if a backend
            // ever breaks that instead of pretending it applied.
            Commit::Conflict { .. } => Err(self.contended(table, key, 1)),
        }
    }

    /// Removes one record; the revision of the removal, `None` if it did not exist.
    pub async fn delete(&self, table: Table, key: &str) -> Result<Option<Revision>, StoreError> {
        for round in 0..MODIFY_ROUNDS {
            let Some(rec) = self.get(table, key).await? else {
                return Ok(None);
            };
            let op = Op::Delete {
                table,
                key: key.to_owned(),
                expect: Expect::At(rec.mod_revision),
            };
            if let Commit::Applied(r) = self.commit(vec![op]).await? {
                return Ok(Some(r));
            }
            after_conflict(round).await;
        }
        Err(self.contended(table, key, MODIFY_ROUNDS))
    }

    /// Reads one record, lets `decide` choose its next value (and other records to
    /// write with it) and commits that only if the record is still what `decide` saw;
    /// otherwise reads again. The answer of the round that committed (or that chose
    /// to write nothing), and the revision written at (`None` if nothing was).
    pub async fn modify<T, R>(
        &self,
        table: Table,
        key: &str,
        mut decide: impl FnMut(Option<T>) -> Decision<T, R> + Send,
    ) -> Result<(R, Option<Revision>), StoreError>
    where
        T: Serialize + DeserializeOwned + Send,
        R: Send,
    {
        for round in 0..MODIFY_ROUNDS {
            let (current, expect) = match self.read::<T>(table, key).await? {
                Some((value, rev)) => (Some(value), Expect::At(rev)),
                None => (None, Expect::Absent),
            };
            let decision = decide(current);
            let Some(value) = decision.value else {
                return Ok((decision.answer, None));
            };
            let mut ops = vec![Op::Put {
                table,
                key: key.to_owned(),
                value: encode(&value),
                expect,
            }];
            ops.extend(decision.also);
            match self.commit(ops).await? {
                Commit::Applied(r) => return Ok((decision.answer, Some(r))),
                Commit::Conflict { .. } => after_conflict(round).await,
            }
        }
        Err(self.contended(table, key, MODIFY_ROUNDS))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Record {
            store: self.describe(),
            table: table.name(),
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }

    fn contended(&self, table: Table, key: &str, rounds: u32) -> StoreError {
        StoreError::Contended {
            store: self.describe(),
            table: table.name(),
            key: key.to_owned(),
            rounds,
        }
    }
}
