//! A redb-backed registry for the crate's tests.

use std::sync::Arc;

use api::ResourceSet;

use super::{Registry, StartResources, svid_ttl};
use crate::error::ControlError;
use crate::issuer::Issuer;
use crate::store::Table;

/// A redb-backed registry in a directory, for tests: what `serve` opens, without the
/// sockets and the publisher (a write republishes on its own).
pub(crate) struct Local {
    pub(crate) registry: Arc<Registry>,
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    _dir: Option<tempfile::TempDir>,
}

#[allow(clippy::expect_used)]
impl Local {
    /// In a new temporary directory.
    pub(crate) async fn open(resources: ResourceSet) -> Local {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut local = Local::open_in(dir.path(), resources).await.expect("opens");
        local._dir = Some(dir);
        local
    }

    /// In `state_dir`.
    pub(crate) async fn open_in(
        state_dir: &std::path::Path,
        resources: ResourceSet,
    ) -> Result<Local, ControlError> {
        use crate::store::{Store, cache::StateCache, redb::RedbStore};
        let stop = tokio_util::sync::CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        let store = Arc::new(Store::Redb(RedbStore::open(state_dir)?));
        let cache = StateCache::start(
            Arc::clone(&store),
            Table::ALL.to_vec(),
            stop.clone(),
            &tasks,
        );
        let cache = cache.await?;
        let (td, ttl) = svid_ttl(&resources)?;
        let keys = crate::keys::KeyStorage::clear();
        let issuer = Issuer::open(store, cache, keys, state_dir, &td, ttl).await?;
        let registry = Registry::open(Arc::new(issuer), resources, StartResources::Replace).await?;
        Ok(Local {
            registry: Arc::new(registry),
            stop,
            tasks,
            _dir: None,
        })
    }

    /// Stops the cache, so the state file can be opened again.
    pub(crate) async fn close(self) {
        drop(self.registry);
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
