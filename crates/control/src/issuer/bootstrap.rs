//! What a new store lacks, created once by whichever replica starts first.

use std::path::Path;

use identity::TrustDomain;
use time::OffsetDateTime;

use super::{SETTLE, state};
use crate::authority::{Authorities, AuthorityError};
use crate::keys::KeyStorage;
use crate::store::cache::StateCache;
use crate::store::{Backend, Commit, Revision, Store, StoreError, Table};
use crate::versions::View;

/// Creates what a new store lacks, each only if still absent (two replicas starting on
/// an empty store: one creates, the other reads it): the first CA root with the JWT key,
/// the JWT key alone (state files from before it existed), the identity marker. Returns
/// once the cache holds the store's state.
pub(super) async fn bootstrap(
    store: &Store,
    cache: &StateCache,
    keys: &KeyStorage,
    state_dir: &Path,
    td: &TrustDomain,
) -> Result<(), AuthorityError> {
    let name = store.describe();
    let mut ops = Vec::new();
    if cache.all(Table::Authorities).is_empty() {
        ops.push(Authorities::first(
            state_dir,
            td,
            OffsetDateTime::now_utc(),
            keys,
        )?);
    }
    if cache.all(Table::JwtKeys).is_empty() {
        ops.push(state::new_jwt_key(keys, &name)?);
    }
    if !ops.is_empty() {
        ops.push(View::Identity.mark());
        if let Commit::Conflict { .. } = store.commit(ops).await? {
            tracing::info!("another replica created the CA first; using it");
        }
    } else if View::Identity.version(cache) == 0 {
        store.commit(vec![View::Identity.mark_first()]).await?;
    }
    let revision = latest_change(
        store,
        &[Table::Authorities, Table::JwtKeys, Table::Versions],
    )
    .await?;
    if !cache.caught_up(revision, SETTLE * 5).await {
        return Err(AuthorityError::Store(StoreError::Unavailable {
            endpoints: name,
            op: "catching up with the store at start",
            timeout: SETTLE * 5,
            reason: None,
        }));
    }
    Ok(())
}

/// The revision of the latest change to a record of `tables` the store holds now. (Not
/// the store's revision: that also counts writes to tables the cache does not follow,
/// such as elections and join tokens, which it would wait for in vain.)
pub(crate) async fn latest_change(store: &Store, tables: &[Table]) -> Result<Revision, StoreError> {
    let mut latest = 0;
    for &table in tables {
        let (records, _) = store.list(table).await?;
        latest = records
            .iter()
            .map(|r| r.mod_revision)
            .fold(latest, Revision::max);
    }
    Ok(latest)
}
