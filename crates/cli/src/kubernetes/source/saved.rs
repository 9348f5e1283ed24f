//! The last set of cluster objects that applied, kept in the control plane's state directory
//! (`<state>/cluster-resources.json`): what a restart starts from when the cluster's objects
//! do not load, so that one bad edit cannot keep the node API (and agents' SVID renewals) down.
//!
//! The file holds the scope it was read from (`--namespace`, or every namespace) and the
//! objects' desired state (`api::object::desired_state`: no status, no server metadata). A
//! saved set of another scope (the state directory reused with another `--namespace`) is not
//! started from: it would serve another tenant's policies. It is written after every set that loads, atomically
//! (a temporary file renamed over it) and readable by the owner only (0600): it names every
//! workload and policy of the mesh.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use api::object::ObjectSet;
use serde_json::{Value, json};

/// The file's name in the state directory.
pub const FILE: &str = "cluster-resources.json";

/// Where the last set that applied is saved.
#[derive(Debug, Clone)]
pub struct SavedSet {
    path: PathBuf,
    /// `namespace <ns>` or `all namespaces`.
    scope: String,
}

impl SavedSet {
    /// The saved set of the control plane whose state directory is `state`, reading the
    /// cluster in `namespace` (or in all).
    pub fn in_state_dir(state: &Path, namespace: Option<&str>) -> SavedSet {
        SavedSet {
            path: state.join(FILE),
            scope: match namespace {
                Some(ns) => format!("namespace {ns}"),
                None => "all namespaces".to_owned(),
            },
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the saved set with `objects` (each one's desired state).
    pub fn save<'a>(&self, objects: impl IntoIterator<Item = &'a Value>) -> anyhow::Result<()> {
        let objects: Vec<&Value> = objects.into_iter().collect();
        let text = serde_json::to_vec_pretty(&json!({ "scope": self.scope, "objects": objects }))?;
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
        let saved: Value = serde_json::from_slice(&text)
            .with_context(|| format!("reading {}", self.path.display()))?;
        if saved["scope"].as_str() != Some(self.scope.as_str()) {
            tracing::warn!(saved = %self.path.display(), scope = %saved["scope"],
                wanted = %self.scope, "the saved set was read from another scope; not used");
            return Ok(None);
        }
        let objects: Vec<Value> = serde_json::from_value(saved["objects"].clone())
            .with_context(|| format!("reading {}: objects", self.path.display()))?;
        let loaded = api::object::load_objects(&objects)
            .with_context(|| format!("loading {}", self.path.display()))?;
        Ok(Some(loaded))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_set_saved_from_another_scope_is_not_started_from() {
        let state = tempfile::tempdir().unwrap();
        SavedSet::in_state_dir(state.path(), None)
            .save(std::iter::empty())
            .unwrap();
        let other = SavedSet::in_state_dir(state.path(), Some("shop"));
        assert!(matches!(other.load(), Ok(None)), "another scope's set");
        let same = SavedSet::in_state_dir(state.path(), None);
        assert!(
            !matches!(same.load(), Ok(None)),
            "its own scope's set is read"
        );
    }
}
