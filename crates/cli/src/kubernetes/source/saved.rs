//! The last set of cluster objects that applied, kept in the control plane's state directory
//! (`<state>/cluster-resources.json`): what a restart starts from when the cluster's objects
//! do not load, so that one bad edit cannot keep the node API (and agents' SVID renewals) down.
//!
//! The file holds the objects' desired state (`api::object::desired_state`: no status, no
//! server metadata) as a JSON array. It is written after every set that loads, atomically
//! (a temporary file renamed over it) and readable by the owner only (0600): it names every
//! workload and policy of the mesh.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use api::object::ObjectSet;
use serde_json::Value;

/// The file's name in the state directory.
pub const FILE: &str = "cluster-resources.json";

/// Where the last set that applied is saved.
#[derive(Debug, Clone)]
pub struct SavedSet {
    path: PathBuf,
}

impl SavedSet {
    /// The saved set of the control plane whose state directory is `state`.
    pub fn in_state_dir(state: &Path) -> SavedSet {
        SavedSet {
            path: state.join(FILE),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the saved set with `objects` (each one's desired state).
    pub fn save<'a>(&self, objects: impl IntoIterator<Item = &'a Value>) -> anyhow::Result<()> {
        let objects: Vec<&Value> = objects.into_iter().collect();
        let text = serde_json::to_vec_pretty(&objects)?;
        let tmp = self.path.with_extension("json.tmp");
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // `mode` applies only to a new file; a leftover temporary file may have another.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        written
            .with_context(|| format!("saving the cluster's resources to {}", self.path.display()))
    }

    /// The saved objects, loaded as the cluster's are (`None`: nothing saved yet).
    pub fn load(&self) -> anyhow::Result<Option<ObjectSet>> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", self.path.display()));
            }
        };
        let objects: Vec<Value> = serde_json::from_slice(&text)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let loaded = api::object::load_objects(&objects)
            .with_context(|| format!("loading {}", self.path.display()))?;
        Ok(Some(loaded))
    }
}
