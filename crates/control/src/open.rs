//! Opening a replica's state: the configured store, this replica's cache of it, the
//! issuer and the registry over them, and the publisher that keeps their views current
//! as the cache changes (whichever replica wrote).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::ResourceSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ControlError;
use crate::issuer::Issuer;
use crate::keys::KeyStorage;
use crate::registry::{self, Registry, StartResources};
use crate::store::cache::StateCache;
use crate::store::etcd::EtcdStore;
use crate::store::redb::RedbStore;
use crate::store::seal::Kek;
use crate::store::{Store, Table};

/// The tables every replica keeps in memory (join tokens are read only when redeemed).
const CACHED: [Table; 7] = [
    Table::Authorities,
    Table::JwtKeys,
    Table::Entries,
    Table::Agents,
    Table::Endpoints,
    Table::Resources,
    Table::Versions,
];

/// Where the control plane keeps its state.
#[derive(Debug, Clone, Default)]
pub enum StoreConfig {
    /// `<state>/control.redb`, for one control process (the default).
    #[default]
    Redb,
    /// An etcd cluster shared by any number of replicas.
    Etcd(EtcdConfig),
}

/// A replica's view of a shared etcd store.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the members (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// The key prefix; `None`: `/meshwork/<trust domain>/`.
    pub prefix: Option<String>,
    /// The key-encryption key file (the same on every replica; never in etcd).
    pub kek_file: PathBuf,
    /// This replica's name in elections and logs.
    pub replica_id: String,
}

impl StoreConfig {
    /// This replica's name: the etcd replica id, or `local`.
    pub fn replica_id(&self) -> &str {
        match self {
            StoreConfig::Redb => "local",
            StoreConfig::Etcd(etcd) => &etcd.replica_id,
        }
    }
}

/// Opens the store and everything over it; the publisher runs on `tasks` until `stop`.
pub(crate) async fn open(
    config: &StoreConfig,
    state_dir: &Path,
    resources: ResourceSet,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<Arc<Registry>, ControlError> {
    let (td, svid_ttl) = registry::svid_ttl(&resources)?;
    let (store, keys, start) = match config {
        StoreConfig::Redb => (
            Store::Redb(RedbStore::open(state_dir)?),
            KeyStorage::clear(),
            StartResources::Replace,
        ),
        StoreConfig::Etcd(etcd) => {
            // One spelling for the prefix: it is also the sealing scope, so `/m/td` and
            // `/m/td/` must not give two replicas of one store different keys.
            let prefix = etcd
                .prefix
                .clone()
                .unwrap_or_else(|| format!("/meshwork/{td}"))
                .trim_end_matches('/')
                .to_owned();
            let kek = Kek::load(&etcd.kek_file).map_err(ControlError::Kek)?;
            let store = EtcdStore::connect(&etcd.endpoints, &prefix).await?;
            (
                Store::Etcd(Box::new(store)),
                KeyStorage::sealed(kek, &prefix),
                StartResources::IfAbsent,
            )
        }
    };
    let store = Arc::new(store);
    let cache = StateCache::start(Arc::clone(&store), CACHED.to_vec(), stop.clone(), tasks).await?;
    // Subscribed before the views are first built, so no change after that is missed.
    let changes = cache.subscribe();
    let issuer = Issuer::open(store, Arc::clone(&cache), keys, state_dir, &td, svid_ttl).await?;
    let registry = Arc::new(Registry::open(Arc::new(issuer), resources, start).await?);
    tasks.spawn(publish(Arc::clone(&registry), changes, stop.clone()));
    Ok(registry)
}

/// Republishes the identity view and the snapshot after every change the cache applies
/// (each only if its version marker moved), starting with any made while they were built.
async fn publish(
    registry: Arc<Registry>,
    mut changes: tokio::sync::watch::Receiver<crate::store::Revision>,
    stop: CancellationToken,
) {
    loop {
        changes.borrow_and_update();
        registry.issuer().refresh();
        registry.refresh();
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}
