//! The meshwork control plane and node agent.
//!
//! Control plane: holds the CA and the registration entries in a durable store
//! ([`store`]: `<state>/control.redb`, or an etcd cluster shared by replicas), signs
//! X.509-SVIDs from CSRs and JWT-SVIDs, serves versioned config snapshots to sidecars and
//! operator routes over a 0600 unix socket (the [`api::contract`] plus `/v1/admin/*`), and
//! the node API to agents over mTLS on loopback TCP ([`node_api`]). CA rotation with
//! overlap lives in [`authority`].
//!
//! Node agent ([`agent`], `meshwork agent`): joins with a one-time token, attests
//! workloads from unix peer credentials against registration entries, and serves the
//! SPIFFE Workload API. The control plane never sees a workload's private key.
//!
//! Static stability: agents and sidecars keep serving what they have while the control
//! plane is gone, and resynchronise when it returns. See docs/identity.md.
//!
//! Must not import `proxy`, `broker` or `cli`.

mod admin;
pub mod agent;
pub mod authority;
pub mod check;
mod connection;
mod duties;
mod error;
mod feed;
mod issuer;
mod keys;
#[cfg(test)]
mod layering;
pub mod node_api;
mod node_tls;
mod open;
mod registry;
mod reload;
mod replica;
mod routes;
pub mod store;
mod tokens;
mod versions;

use std::path::PathBuf;
use std::sync::Arc;

use api::ResourceSet;
use axum::Extension;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::Stopping;

pub use authority::AuthorityError;
pub use error::ControlError;
pub use feed::{ResourceFeed, ResourceUpdate};
pub use identity::control_id;
pub use identity::{DEFAULT_JWT_TTL, JwtBundle, JwtError};
pub use issuer::Issuer;
pub use open::{EtcdConfig, StoreConfig};
pub use registry::Registry;
pub use replica::{ReplicaKey, ReplicaKeyError};
pub use store::{STATE_FILE, StateError, StoreError};
pub use tokens::{DEFAULT_TOKEN_TTL, JoinRefusal};

/// Default lifetime of issued SVIDs when the `Mesh` does not set one.
pub const DEFAULT_SVID_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the control plane needs to start.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The unix socket to serve the contract on (created; an old file is replaced).
    pub socket: PathBuf,
    /// The state directory: `control.redb` (with the redb store), `bundle.pem`,
    /// `node-api.addr`, and legacy `ca/*.pem` files, imported once if present.
    pub state_dir: PathBuf,
    /// The mesh's resources.
    pub resources: ResourceSet,
    /// Where to serve the agent API (mTLS, loopback TCP; port 0 picks one). The bound
    /// address is written to `<state>/node-api.addr` and the trust bundle agents
    /// bootstrap with to `<state>/bundle.pem`. `None`: no agents.
    pub node_api: Option<std::net::SocketAddr>,
    /// Where the state lives: `<state>/control.redb` (the default) or a shared etcd.
    pub store: StoreConfig,
}

/// Runs the control plane until `shutdown` resolves. When it returns, every task it started
/// has ended and the state file is closed: it can be opened again at once.
pub async fn serve(
    config: ControlConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    serve_watching(config, None, shutdown).await
}

/// [`serve`], and with `resources_dir` (the directory `config.resources` came from) also
/// applies policy edits live: the directory is polled every second (the source in
/// `reload.rs`), and changed policies are published in a new snapshot ([`serve_fed`]); an
/// invalid edit is logged and the previous policies keep serving. `Mesh`/`Workload`/`Service`
/// changes need a restart.
pub async fn serve_watching(
    config: ControlConfig,
    resources_dir: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let Some(dir) = resources_dir else {
        return serve_with(config, None, shutdown).await;
    };
    let (sender, feed) = tokio::sync::watch::channel(Arc::new(ResourceUpdate {
        source: dir.display().to_string(),
        resources: Ok(config.resources.clone()),
    }));
    let stop = CancellationToken::new();
    let poller = tokio::spawn(reload::watch_dir(dir, sender, stop.clone()));
    let served = serve_fed(config, feed, shutdown).await;
    stop.cancel();
    // The poller holds nothing of the control plane's; it ends at its next tick at the latest.
    let _ = poller.await;
    served
}

/// [`serve`], starting with `config.resources` and then applying each new version of the
/// resources a source sends on `feed` (see [`ResourceFeed`]): policies and routes are
/// published in a new snapshot; an update that does not load is logged with the loader's
/// error and the previous policies keep serving; `Mesh`/`Workload`/`Service` changes are
/// reported as needing a restart.
pub async fn serve_fed(
    config: ControlConfig,
    feed: ResourceFeed,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    serve_with(config, Some(feed), shutdown).await
}

async fn serve_with(
    config: ControlConfig,
    feed: Option<ResourceFeed>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let mut config = config;
    let resources = std::mem::take(&mut config.resources);
    let started_with = feed.as_ref().map(|_| resources.clone());
    // Every task started below holds the registry or the issuer, so the store: each runs
    // on `tasks` and ends when `stop` is cancelled (see `connection`).
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let opened = open::open(&config.store, &config.state_dir, resources, &stop, &tasks).await;
    let served = match &opened {
        Ok(registry) => {
            let replica = config.store.replica_id().to_owned();
            let fed = feed.zip(started_with);
            let lead = duties::lead(Arc::clone(registry), replica, fed, stop.clone());
            tasks.spawn(lead);
            run(&config, registry, &stop, &tasks, shutdown).await
        }
        Err(_) => Ok(()),
    };
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    close_state_file(opened?)?;
    served
}

/// Starts the node API, then serves the control socket until `shutdown`.
async fn run(
    config: &ControlConfig,
    registry: &Arc<Registry>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    if let Some(addr) = config.node_api {
        start_node_api(addr, &config.state_dir, registry, stop, tasks).await?;
    }
    let socket = &config.socket;
    if socket.exists() {
        std::fs::remove_file(socket).map_err(socket_error(socket))?;
    }
    let listener = UnixListener::bind(socket).map_err(socket_error(socket))?;
    restrict_to_owner(socket)?;
    tracing::info!(socket = %socket.display(), "control plane listening");
    let router = routes::router(Arc::clone(registry)).layer(Extension(Stopping(stop.clone())));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // e.g. out of file descriptors: give connections a moment to close.
                    tracing::warn!(%error, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = connection::http(stream, router.clone(), stop.clone(), tasks.clone());
        tasks.spawn(conn);
    }
}

fn socket_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Socket {
        path: path.to_owned(),
        source,
    }
}

/// Drops the last reference to the state file, here, so that it is closed when `serve`
/// returns. Every task that held it has ended, so ours is the last; if not, a task outlived
/// the control plane, which is a bug, reported instead of leaving the file open behind a
/// "stopped" control plane.
fn close_state_file(registry: Arc<Registry>) -> Result<(), ControlError> {
    let issuer = Arc::into_inner(registry).map(Registry::into_issuer);
    match issuer.and_then(Arc::into_inner) {
        Some(issuer) => {
            drop(issuer);
            Ok(())
        }
        None => Err(ControlError::StateStillOpen),
    }
}

/// Binds the node API, publishes its address and the bootstrap bundle, and serves it
/// on `tasks` until `stop` is cancelled.
async fn start_node_api(
    addr: std::net::SocketAddr,
    state_dir: &std::path::Path,
    registry: &Arc<Registry>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), ControlError> {
    let socket_err = |path: PathBuf| move |source| ControlError::Socket { path, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(socket_err(PathBuf::from(addr.to_string())))?;
    let bound = listener
        .local_addr()
        .map_err(socket_err(PathBuf::from(addr.to_string())))?;
    let issuer = Arc::clone(registry.issuer());
    let bundle_path = state_dir.join("bundle.pem");
    write_atomically(&bundle_path, issuer.bundle().to_pem().as_bytes())
        .map_err(socket_err(bundle_path.clone()))?;
    let addr_path = state_dir.join("node-api.addr");
    write_atomically(&addr_path, bound.to_string().as_bytes()).map_err(socket_err(addr_path))?;
    tracing::info!(%bound, "node API (mTLS) listening");
    tasks.spawn(publish_bundle(
        Arc::clone(&issuer),
        bundle_path,
        stop.clone(),
    ));
    let (stop, node_tasks) = (stop.clone(), tasks.clone());
    tasks.spawn(async move {
        if let Err(error) = node_tls::serve(listener, issuer, stop, node_tasks).await {
            tracing::error!(%error, "node API stopped");
        }
    });
    Ok(())
}

/// Keeps `<state>/bundle.pem` (what new agents bootstrap with) current across CA rotations.
async fn publish_bundle(issuer: Arc<Issuer>, path: PathBuf, stop: CancellationToken) {
    let mut views = issuer.subscribe();
    let mut written = issuer.bundle().to_pem();
    while tokio::select! { () = stop.cancelled() => false, r = views.changed() => r.is_ok() } {
        let pem = views.borrow_and_update().bundle_pem.clone();
        if pem != written {
            if let Err(error) = write_atomically(&path, pem.as_bytes()) {
                tracing::warn!(%error, path = %path.display(), "cannot update the bootstrap bundle");
            }
            written = pem;
        }
    }
}

/// Writes `bytes` to a temporary file and renames it over `path`, so readers never
/// see a half-written file.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Only the owner may talk to the control socket: it hands out identities.
fn restrict_to_owner(path: &std::path::Path) -> Result<(), ControlError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Socket {
            path: path.to_owned(),
            source,
        }
    })
}
