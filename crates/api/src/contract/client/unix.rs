//! Dialling the control plane's unix socket (`<state>/control.sock`): sidecars and the
//! cli. Who may connect is the socket file's mode; there is no TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The unix sockets of several control-plane replicas (one host, one state): dials the
/// one that answered last and, when it does not accept, each other in turn, staying with
/// the first that does. A replica that died refuses at once (nothing listens on its
/// socket), so failing over costs one `connect` per dead replica; one that accepts but
/// hangs or answers 5xx is left by [`UnixReplicas::failed_current`], which the caller
/// calls after such an error.
#[derive(Debug, Clone)]
pub struct UnixReplicas {
    paths: Arc<[PathBuf]>,
    current: Arc<AtomicUsize>,
}

impl UnixReplicas {
    /// Over `first` and `others`, starting at a random one (clients spread over the
    /// replicas; a single socket is always the one).
    pub fn new(first: PathBuf, others: impl IntoIterator<Item = PathBuf>) -> UnixReplicas {
        let paths: Vec<PathBuf> = std::iter::once(first).chain(others).collect();
        let start = rand::random_range(0..paths.len());
        UnixReplicas {
            paths: paths.into(),
            current: Arc::new(AtomicUsize::new(start)),
        }
    }

    /// Moves on from the current replica after a call to it failed in a way a connect does
    /// not see (it accepted, then hung or answered 5xx): the next call dials the next one.
    pub fn failed_current(&self) {
        let n = self.paths.len();
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| Some((i + 1) % n));
    }

    /// The socket that answered last (the first one before any did).
    pub fn current(&self) -> &Path {
        let i = self.current.load(Ordering::Relaxed) % self.paths.len();
        &self.paths[i]
    }
}

impl Connect for UnixReplicas {
    type Stream = UnixStream;

    async fn connect(&self) -> Result<UnixStream, ConnectError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.paths.len() {
            let i = (start + step) % self.paths.len();
            match UnixStream::connect(&self.paths[i]).await {
                Ok(stream) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(stream);
                }
                Err(error) => last = Some(error),
            }
        }
        // invariant: `paths` is never empty (`new` takes a first path).
        let error = last.unwrap_or_else(|| std::io::Error::other("no control socket"));
        Err(ConnectError::Connect(error))
    }

    fn describe(&self) -> String {
        match self.paths.len() {
            1 => format!("control socket {}", self.paths[0].display()),
            n => format!(
                "control sockets of {n} replicas ({} and {} more)",
                self.current().display(),
                n - 1
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_replica_is_passed_over_and_the_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (dead, live) = (dir.path().join("dead.sock"), dir.path().join("live.sock"));
        // A socket file nobody serves any more, as a killed replica leaves it.
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let listener = tokio::net::UnixListener::bind(&live).unwrap();
        let replicas = UnixReplicas::new(dead.clone(), [live.clone()]);
        if replicas.current() == live {
            replicas.failed_current();
        }
        assert_eq!(replicas.current(), dead);
        replicas.connect().await.unwrap();
        assert_eq!(replicas.current(), live, "moved on");
        let clone = replicas.clone();
        clone.connect().await.unwrap();
        assert_eq!(replicas.current(), live, "clones share the current replica");
        drop(listener);
        let error = replicas.connect().await.unwrap_err();
        assert!(matches!(error, ConnectError::Connect(_)));
        replicas.failed_current();
        assert_eq!(
            replicas.current(),
            dead,
            "a hung or failing one is left for the next"
        );
        assert!(
            replicas.describe().contains("2 replicas"),
            "{}",
            replicas.describe()
        );
    }
}
