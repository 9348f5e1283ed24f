//! The state directory of one `meshwork up` (`./.meshwork`): its lock (`up.pid`), the control
//! socket, the sidecars' ready files, and the environment that sends a process through a
//! sidecar. Shared by `up` (which claims the directory), `exec`, `claims` and `policy`
//! (which read it).
//!
//! Must not import any other module of this crate: it is the bottom of the `cli` layering
//! (see `layering.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// What a sidecar writes once it serves (see `meshwork proxy --ready-file`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyFile {
    /// Inbound mTLS listener.
    pub inbound: SocketAddr,
    /// Outbound HTTP-proxy listener.
    pub outbound: SocketAddr,
    /// The identity the sidecar holds.
    pub spiffe_id: String,
    /// The admin listener (`/metrics`, `/snapshot`), if the sidecar runs one.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// Whether the sidecar has seen its app open its port (the file is rewritten when it
    /// has); only then does it serve the app's answers rather than `503 app_starting`.
    #[serde(default)]
    pub app_listening: bool,
    /// In pod mode: the pod the sidecar fronts (its listeners `inbound` and `outbound` are
    /// inside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
}

/// `"pod"` of a ready file: the namespace and address of the sidecar's pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// `/run/netns/<name>`.
    pub netns: PathBuf,
    /// The pod's address.
    pub ip: std::net::Ipv4Addr,
}

impl ReadyFile {
    /// Reads and parses a ready file.
    pub fn read(path: &Path) -> anyhow::Result<ReadyFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// A state directory claimed by one running `meshwork up`.
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens `path` (creating it) without claiming it, for readers such as `exec`.
    pub fn open(path: &Path) -> anyhow::Result<StateDir> {
        let path = path.canonicalize().with_context(|| {
            format!(
                "state directory {} does not exist: `meshwork up` keeps it in the directory \
                 it was started from (./.meshwork); run this there, or pass --state-dir DIR \
                 or set MESHWORK_STATE_DIR to the one `up` uses",
                path.display()
            )
        })?;
        Ok(StateDir { path })
    }

    /// Creates `path` and takes its lock (`up.pid`); refuses if a live `up` holds it.
    pub fn claim(path: &Path) -> anyhow::Result<StateDir> {
        std::fs::create_dir_all(path.join("workloads"))
            .with_context(|| format!("creating state directory {}", path.display()))?;
        let state = StateDir::open(path)?;
        let lock = state.path.join("up.pid");
        if let Ok(pid) = std::fs::read_to_string(&lock) {
            let pid = pid.trim();
            if Path::new("/proc").join(pid).exists() && pid != std::process::id().to_string() {
                bail!(
                    "another `meshwork up` (pid {pid}) is using {}; stop it or pass --state-dir",
                    state.path.display()
                );
            }
        }
        std::fs::write(&lock, std::process::id().to_string())
            .with_context(|| format!("writing {}", lock.display()))?;
        // Ready files of an earlier run that did not end cleanly describe processes that
        // are gone; `exec` must not find them.
        state.remove_ready_files();
        Ok(state)
    }

    /// Drops the lock and the ready files (they describe processes that are gone).
    pub fn release(self) {
        let _ = std::fs::remove_file(self.path.join("up.pid"));
        self.remove_ready_files();
    }

    fn remove_ready_files(&self) {
        if let Ok(entries) = std::fs::read_dir(self.path.join("workloads")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The control plane's unix socket.
    pub fn control_socket(&self) -> PathBuf {
        self.path.join("control.sock")
    }

    /// The pid of the `meshwork up` that last claimed this directory, if that process is
    /// gone (killed without the chance to clean up): its ready files are stale.
    pub fn dead_owner(&self) -> Option<String> {
        let pid = std::fs::read_to_string(self.path.join("up.pid")).ok()?;
        let pid = pid.trim().to_owned();
        (!Path::new("/proc").join(&pid).exists()).then_some(pid)
    }

    /// The workloads whose sidecars have written a ready file (are serving), sorted; a
    /// workload with replicas is listed once, as `name (N replicas)`.
    pub fn running_workloads(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path.join("workloads")) else {
            return Vec::new();
        };
        let mut replicas: std::collections::BTreeMap<String, usize> = Default::default();
        for e in entries.flatten() {
            if let Some(stem) = e.file_name().to_str().and_then(|n| n.strip_suffix(".json")) {
                *replicas.entry(workload_of(stem).to_owned()).or_default() += 1;
            }
        }
        replicas
            .into_iter()
            .map(|(name, n)| match n {
                1 => name,
                n => format!("{name} ({n} replicas)"),
            })
            .collect()
    }

    /// A workload sidecar's ready file (of its replica 0, when it runs several).
    pub fn ready_file(&self, workload: &str) -> PathBuf {
        self.replica_ready_file(workload, 0)
    }

    /// The ready file of replica `replica`'s sidecar: `workloads/<name>.json` for replica 0
    /// (what every single-copy workload has), `workloads/<name>.<replica>.json` for the
    /// others (a workload's name never contains a dot).
    pub fn replica_ready_file(&self, workload: &str, replica: u16) -> PathBuf {
        let file = match replica {
            0 => format!("{workload}.json"),
            n => format!("{workload}.{n}.json"),
        };
        self.path.join("workloads").join(file)
    }
}

/// The workload a ready file's stem belongs to (`billing.1` → `billing`).
pub fn workload_of(stem: &str) -> &str {
    stem.split_once('.').map_or(stem, |(workload, _)| workload)
}

/// The environment that sends a process's HTTP(S) traffic through a sidecar's
/// outbound listener. Both spellings: curl reads only lowercase `http_proxy`.
/// Loopback stays direct so a workload can still reach its own helpers.
pub fn proxy_vars(outbound: &str) -> [(&'static str, String); 6] {
    let url = format!("http://{outbound}");
    let direct = String::from("localhost,127.0.0.1,::1");
    [
        ("HTTP_PROXY", url.clone()),
        ("http_proxy", url.clone()),
        ("HTTPS_PROXY", url.clone()),
        ("https_proxy", url),
        ("NO_PROXY", direct.clone()),
        ("no_proxy", direct),
    ]
}
