//! The meshwork control plane: holds the CA, the registry of workloads and
//! services, signs X.509-SVIDs from CSRs and serves versioned config snapshots.
//!
//! It speaks the contract in [`api::contract`] over a unix socket. Today any
//! process that can open the socket (mode 0600, so: the same user) may ask for
//! any workload's SVID; workload attestation replaces that trust with proof in
//! the control-plane issue (#3). The control plane never sees a private key.
//!
//! Must not import `proxy`, `broker` or `cli`.

mod ca_store;
mod error;
mod registry;
mod routes;

use std::path::PathBuf;
use std::sync::Arc;

use api::ResourceSet;
use tokio::net::UnixListener;

pub use ca_store::CaStoreError;
pub use error::ControlError;
pub use registry::Registry;

/// Default lifetime of issued SVIDs when the `Mesh` does not set one.
pub const DEFAULT_SVID_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the control plane needs to start.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The unix socket to serve the contract on (created; an old file is replaced).
    pub socket: PathBuf,
    /// Directory for the CA key and certificate (`<state>/ca/`).
    pub state_dir: PathBuf,
    /// The mesh's resources.
    pub resources: ResourceSet,
}

/// Runs the control plane until `shutdown` resolves.
pub async fn serve(
    config: ControlConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let registry = Arc::new(Registry::open(&config.state_dir, config.resources)?);
    if config.socket.exists() {
        std::fs::remove_file(&config.socket).map_err(|source| ControlError::Socket {
            path: config.socket.clone(),
            source,
        })?;
    }
    let listener = UnixListener::bind(&config.socket).map_err(|source| ControlError::Socket {
        path: config.socket.clone(),
        source,
    })?;
    restrict_to_owner(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), "control plane listening");
    axum::serve(listener, routes::router(registry))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ControlError::Socket { path: config.socket, source })
}

/// Only the owner may talk to the control socket: it hands out identities.
fn restrict_to_owner(path: &std::path::Path) -> Result<(), ControlError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Socket { path: path.to_owned(), source }
    })
}
