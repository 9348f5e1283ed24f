//! A commit as one etcd transaction, and what to do when its answer is lost.
//!
//! The transaction's compares are the operations' expectations (`Absent`: create
//! revision 0; `At(r)`: mod revision r), its success branch the writes, and its failure
//! branch a read of every operation's key in the same transaction: a refused commit
//! reports exactly which expectation failed and what the record was.
//!
//! While the cluster is unavailable (a member just died, an election is under way) the
//! commit is sent again within the retry budget. An attempt whose answer was lost may
//! have applied. For a commit without expectations that is harmless: sending it again
//! writes the same values. For a guarded commit it is not: a retry that conflicts may be
//! conflicting with its own earlier attempt, or with another writer's, and the two cannot
//! be told apart from the records (another writer can write the same bytes, e.g. two
//! replicas redeeming one token in the same second). So a guarded commit whose retry
//! conflicts after a lost answer fails with [`StoreError::Ambiguous`]: neither "applied"
//! (it may not have) nor "conflict" (a read-check-write would apply itself twice).

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};

use super::{EtcdStore, RETRY_BUDGET, RETRY_PAUSE, revision};
use crate::store::{Backend, Commit, Expect, Op, Record, Revision, StoreError, Table};

/// Commits `ops` (already checked for distinct keys).
pub(super) async fn commit(store: &EtcdStore, ops: &[Op]) -> Result<Commit, StoreError> {
    let txn = build(store, ops);
    let started = tokio::time::Instant::now();
    let mut uncertain = false;
    loop {
        let mut client = store.client.clone();
        match store.once("commit", client.txn(txn.clone())).await {
            Ok(answer) if answer.succeeded() => return Ok(Commit::Applied(at(&answer))),
            Ok(_) if uncertain => {
                return Err(StoreError::Ambiguous {
                    store: store.describe(),
                });
            }
            Ok(answer) => {
                let current = read_back(store, ops, &answer.op_responses());
                return Ok(conflict(ops, current));
            }
            Err(e) if e.is_transient() && started.elapsed() < RETRY_BUDGET => {
                tracing::debug!(error = %e, "etcd commit not answered; sending it again");
                uncertain = true;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn at(answer: &TxnResponse) -> Revision {
    answer.header().map(|h| revision(h.revision())).unwrap_or(0)
}

fn build(store: &EtcdStore, ops: &[Op]) -> Txn {
    let mut compares = Vec::new();
    let mut writes = Vec::with_capacity(ops.len());
    let mut reads = Vec::with_capacity(ops.len());
    for op in ops {
        let key = store.key(op.table(), op.key());
        match op.expect() {
            Expect::Any => {}
            Expect::Absent => {
                compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
            }
            Expect::At(r) => {
                let r = i64::try_from(r).unwrap_or(i64::MAX);
                compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, r));
            }
        }
        reads.push(TxnOp::get(key.clone(), None));
        match op {
            Op::Put { value, .. } => writes.push(TxnOp::put(key, value.to_vec(), None)),
            Op::Delete { .. } => writes.push(TxnOp::delete(key, None)),
            Op::Check { .. } => {}
        }
    }
    Txn::new().when(compares).and_then(writes).or_else(reads)
}

/// The failure branch's reads: each operation's record as the transaction saw it.
fn read_back(store: &EtcdStore, ops: &[Op], reads: &[TxnOpResponse]) -> Vec<Option<Record>> {
    (0..ops.len())
        .map(|i| match reads.get(i) {
            Some(TxnOpResponse::Get(got)) => got.kvs().first().and_then(|kv| store.record(kv)),
            _ => None,
        })
        .collect()
}

/// The first operation whose expectation fails on the transaction's own snapshot.
fn conflict(ops: &[Op], current: Vec<Option<Record>>) -> Commit {
    let failed = ops
        .iter()
        .zip(current)
        .enumerate()
        .find(|(_, (op, now))| !op.holds_for(now.as_ref()));
    match failed {
        Some((index, (_, current))) => Commit::Conflict { index, current },
        // invariant: etcd refused a compare, so one fails on the same snapshot; if the
        // reads are ever missing, blame the first guarded operation.
        None => Commit::Conflict {
            index: ops
                .iter()
                .position(|op| op.expect() != Expect::Any)
                .unwrap_or(0),
            current: None,
        },
    }
}

/// Every record of each of `tables`, read in one transaction (so at one revision).
pub(super) async fn list_tables(
    store: &EtcdStore,
    tables: &[Table],
) -> Result<(Vec<Vec<Record>>, Revision), StoreError> {
    let gets: Vec<TxnOp> = tables
        .iter()
        .map(|t| {
            let prefix = format!("{}{}/", store.prefix, t.name());
            TxnOp::get(prefix, Some(GetOptions::new().with_prefix()))
        })
        .collect();
    let txn = Txn::new().and_then(gets);
    let answer = store
        .call("list", &store.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    let lists = answer
        .op_responses()
        .iter()
        .map(|r| match r {
            TxnOpResponse::Get(got) => got.kvs().iter().filter_map(|kv| store.record(kv)).collect(),
            _ => Vec::new(),
        })
        .collect();
    Ok((lists, at(&answer)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::Table;

    fn put(value: &'static str, expect: Expect) -> Op {
        Op::Put {
            table: Table::Tokens,
            key: "t".to_owned(),
            value: Bytes::from_static(value.as_bytes()),
            expect,
        }
    }

    fn record(value: &'static str, at: Revision) -> Option<Record> {
        Some(Record {
            key: "t".to_owned(),
            value: Bytes::from_static(value.as_bytes()),
            mod_revision: at,
        })
    }

    #[test]
    fn the_conflict_names_the_first_failing_expectation() {
        let ops = [put("a", Expect::Any), put("b", Expect::Absent)];
        let found = conflict(&ops, vec![None, record("old", 2)]);
        assert_eq!(
            found,
            Commit::Conflict {
                index: 1,
                current: record("old", 2)
            }
        );
    }
}
