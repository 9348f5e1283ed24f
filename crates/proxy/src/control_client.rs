//! The sidecar's client of the proxy⇄control contract ([`api::contract`]): the
//! contract's one client ([`api::contract::client::Client`]) over the control plane's
//! unix socket. The routes are the contract's calls ([`api::contract::SignSvid`],
//! [`api::contract::RegisterEndpoint`], [`api::contract::SnapshotSince`]); the HTTP
//! exchange, the timeouts (10 s, the long poll 40 s), the answer cap and
//! [`ControlError::is_transient`] are the client's.
//!
//! Off the request path: the sidecar calls control at startup, to register, to renew its
//! SVID and for one snapshot long poll at a time.

use std::path::PathBuf;

use api::contract::client::{CallError, Client, UnixReplicas};

/// A client of the control plane's socket, or of each replica's in turn when one stops
/// answering ([`UnixReplicas`]).
pub type ControlClient = Client<UnixReplicas>;

/// Why a call to the control plane failed.
pub type ControlError = CallError;

/// A client for the control-plane replicas listening on `sockets` (the first is tried
/// first); `None` for an empty list.
pub fn replicas_client(sockets: &[PathBuf]) -> Option<ControlClient> {
    let (first, others) = sockets.split_first()?;
    Some(Client::new(UnixReplicas::new(
        first.clone(),
        others.to_vec(),
    )))
}
