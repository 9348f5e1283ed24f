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

use api::contract::client::{CallError, Client, UnixConnect};

/// A client of one control plane socket.
pub type ControlClient = Client<UnixConnect>;

/// Why a call to the control plane failed.
pub type ControlError = CallError;

/// A client for the control plane listening on `socket`.
pub fn control_client(socket: impl Into<PathBuf>) -> ControlClient {
    Client::new(UnixConnect(socket.into()))
}
