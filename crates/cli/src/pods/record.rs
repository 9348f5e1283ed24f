//! `<state>/pods.json`: every object an `up` created for its pods, written before each is
//! created, so that whatever way `up` ends (even `kill -9`) the objects can be found and
//! removed: by `up` itself on its way out, else by the next `up` on the same state directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::hosts::HostPlan;
use super::plan::{Object, PodPlan, Slot};

/// The file's name in the state directory.
pub const FILE: &str = "pods.json";

/// The contents of `pods.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodsRecord {
    /// The process that created the objects (`meshwork up`).
    pub owner_pid: u32,
    /// The slot it took, once it has one.
    pub slot: Option<Slot>,
    /// The objects, in the order they were created (removed in reverse).
    pub objects: Vec<Object>,
    /// The pods, for `exec` and `up`'s table.
    pub pods: Vec<PodPlan>,
    /// `up --hosts`: the simulated hosts (then `slot` is the fabric's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostPlan>,
}

impl PodsRecord {
    /// An empty record owned by this process.
    pub fn new() -> PodsRecord {
        PodsRecord {
            owner_pid: std::process::id(),
            slot: None,
            objects: Vec::new(),
            pods: Vec::new(),
            hosts: Vec::new(),
        }
    }

    /// Whether slot `index` is one this record took (its own, the fabric's or a host's).
    pub fn holds_slot(&self, index: u32) -> bool {
        self.slot.is_some_and(|s| s.index == index)
            || self.hosts.iter().any(|h| h.slot.index == index)
    }

    /// The file of `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// Reads `state_dir`'s record, if there is one.
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<PodsRecord>> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes the record (to a temporary file renamed over the old one: a crash leaves the
    /// old record or the new, never half of one).
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(state_dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).context("serializing pods.json")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Removes `state_dir`'s record.
    pub fn remove(state_dir: &Path) -> anyhow::Result<()> {
        match std::fs::remove_file(Self::path(state_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context("removing pods.json")
            }
            _ => Ok(()),
        }
    }

    /// Whether the process that wrote it is gone: no such pid, or (the pid reused since)
    /// a process that is not a `meshwork`.
    pub fn owner_gone(&self) -> bool {
        let proc = Path::new("/proc").join(self.owner_pid.to_string());
        if !proc.exists() {
            return true;
        }
        let (Ok(theirs), Ok(ours)) = (
            std::fs::read_link(proc.join("exe")),
            std::fs::read_link("/proc/self/exe"),
        ) else {
            return false;
        };
        // By file name: another build (another target directory, an installed copy) of
        // meshwork is still an owner; a rebuilt binary shows as `<name> (deleted)`.
        let name = |p: &Path| {
            p.file_name().map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_owned()
            })
        };
        name(&theirs) != name(&ours)
    }

    /// The pod of `workload`'s `replica`, if it has one.
    pub fn pod(&self, workload: &str, replica: u16) -> Option<&PodPlan> {
        self.pods
            .iter()
            .find(|p| p.workload == workload && p.replica == replica)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_record_survives_a_round_trip_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PodsRecord::load(dir.path()).unwrap(), None);
        let slot = Slot::of(&"198.18.0.0/16".parse().unwrap(), 3).unwrap();
        let mut record = PodsRecord::new();
        record.slot = Some(slot);
        record.objects = vec![
            Object::Bridge(slot.bridge()),
            Object::HostTable(slot.host_table()),
            Object::EtcDir("/etc/netns/mw3-store-0".into()),
            Object::Netns("mw3-store-0".into()),
            Object::HostVeth("mw3p0".into()),
        ];
        record.pods = vec![PodPlan::new(&slot, 0, "store", 0)];
        record.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"kind\": \"host_table\""), "{text}");
        let back = PodsRecord::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, record);
        assert!(!back.owner_gone(), "this process owns it");
        let mut other = back.clone();
        let mut sleep = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        other.owner_pid = sleep.id(); // alive, but not this program: a reused pid
        let gone = other.owner_gone();
        sleep.kill().unwrap();
        sleep.wait().unwrap();
        assert!(gone);
        other.owner_pid = u32::MAX;
        assert!(other.owner_gone());
        assert_eq!(back.pod("store", 0).unwrap().ip.to_string(), "198.18.3.2");
        assert!(back.pod("store", 1).is_none());
        PodsRecord::remove(dir.path()).unwrap();
        assert_eq!(PodsRecord::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_broken_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        let error = PodsRecord::load(dir.path()).unwrap_err();
        assert!(format!("{error:#}").contains("pods.json"), "{error:#}");
    }
}
