//! Dialling the control plane's unix socket (`<state>/control.sock`): sidecars and the
//! cli. Who may connect is the socket file's mode; there is no TLS.

use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use super::{Connect, ConnectError};

/// Connects to the unix socket at this path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixConnect(pub PathBuf);

impl UnixConnect {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Connect for UnixConnect {
    type Stream = UnixStream;

    async fn connect(&self) -> Result<UnixStream, ConnectError> {
        UnixStream::connect(&self.0)
            .await
            .map_err(ConnectError::Connect)
    }

    fn describe(&self) -> String {
        format!("control socket {}", self.0.display())
    }
}
