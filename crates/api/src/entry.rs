//! `kind: RegistrationEntry`: which workloads get which SPIFFE ID.
//!
//! An entry maps a set of [`Selector`]s — facts the node agent observes about a
//! caller of the Workload API through its unix-socket peer credentials — to a
//! SPIFFE ID. A caller is issued the entry's identity only when **every**
//! selector matches ([`RegistrationEntrySpec::matches`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use identity::SpiffeId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `kind: RegistrationEntry` spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationEntrySpec {
    /// The identity issued to matching callers.
    #[schemars(schema_with = "crate::schema::spiffe_id")]
    pub spiffe_id: SpiffeId,
    /// All must match; never empty (an empty list would match every process).
    #[schemars(length(min = 1))]
    pub selectors: Vec<Selector>,
    /// Optional guidance for workloads holding several identities (the Workload API `hint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl RegistrationEntrySpec {
    /// Whether every selector matches `caller` (and there is at least one).
    pub fn matches(&self, caller: &ProcessFacts) -> bool {
        !self.selectors.is_empty() && self.selectors.iter().all(|s| s.matches(caller))
    }
}

/// Each `RegistrationEntry` names at least one selector and a SPIFFE ID of the mesh's
/// trust domain.
pub(crate) fn validate_entries(set: &crate::ResourceSet) -> Result<(), crate::LoadError> {
    let td = set.mesh().map(|m| &m.spec.trust_domain);
    for e in &set.registration_entries {
        let res = format!("RegistrationEntry/{}", e.resource.metadata.name);
        let spec = &e.resource.spec;
        if spec.selectors.is_empty() {
            let msg = "must list at least one selector; an empty list would match every process";
            return Err(crate::load::invalid(
                &e.origin,
                Some(&res),
                "spec.selectors",
                msg,
            ));
        }
        if let Some(td) = td
            && spec.spiffe_id.trust_domain() != td
        {
            let msg = format!("{} is not in the mesh's trust domain {td}", spec.spiffe_id);
            return Err(crate::load::invalid(
                &e.origin,
                Some(&res),
                "spec.spiffeId",
                &msg,
            ));
        }
    }
    Ok(())
}

/// What the agent knows about a Workload API caller, from `SO_PEERCRED` and `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Effective uid at connect time.
    pub uid: u32,
    /// Effective gid at connect time.
    pub gid: u32,
    /// Process id at connect time.
    pub pid: u32,
    /// `/proc/<pid>/exe`, when readable.
    pub path: Option<PathBuf>,
    /// Start time of the process (clock ticks since boot, `/proc/<pid>/stat` field 22),
    /// which makes `(pid, start_time)` unique for the life of the machine's boot.
    pub start_time: Option<u64>,
}

/// One fact an entry requires of a caller, written `unix:<kind>:<value>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Selector {
    /// `unix:uid:1001`
    Uid(u32),
    /// `unix:gid:1001`
    Gid(u32),
    /// `unix:path:/opt/billing/bin/billing` — the executable, an absolute path.
    Path(PathBuf),
    /// `unix:process:<pid>:<start-time>` — exactly one running process; what
    /// `meshwork up` registers, since its workloads share a uid and a binary.
    Process {
        /// The process id.
        pid: u32,
        /// Its start time in clock ticks since boot (guards against pid reuse).
        start_time: u64,
    },
}

impl Selector {
    /// Whether `caller` has this property.
    pub fn matches(&self, caller: &ProcessFacts) -> bool {
        match self {
            Selector::Uid(uid) => caller.uid == *uid,
            Selector::Gid(gid) => caller.gid == *gid,
            Selector::Path(path) => caller.path.as_deref() == Some(path.as_path()),
            Selector::Process { pid, start_time } => {
                caller.pid == *pid && caller.start_time == Some(*start_time)
            }
        }
    }
}

/// Why a string is not a [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "selector {text:?}: {reason} (expected unix:uid:N, unix:gid:N, unix:path:/abs/path or unix:process:PID:START)"
)]
pub struct SelectorError {
    text: String,
    reason: &'static str,
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Selector, SelectorError> {
        let err = |reason| SelectorError {
            text: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix("unix:")
            .ok_or_else(|| err("only the `unix` type is known"))?;
        let (kind, value) = rest.split_once(':').ok_or_else(|| err("missing value"))?;
        let number = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| err("value is not a decimal u32"))
        };
        match kind {
            "uid" => Ok(Selector::Uid(number(value)?)),
            "gid" => Ok(Selector::Gid(number(value)?)),
            "path" if Path::new(value).is_absolute() => Ok(Selector::Path(PathBuf::from(value))),
            "path" => Err(err("path must be absolute")),
            "process" => {
                let (pid, start) = value.split_once(':').ok_or_else(|| err("want PID:START"))?;
                let start_time = start
                    .parse()
                    .map_err(|_| err("start time is not a decimal u64"))?;
                Ok(Selector::Process {
                    pid: number(pid)?,
                    start_time,
                })
            }
            _ => Err(err("unknown unix selector kind")),
        }
    }
}

impl TryFrom<String> for Selector {
    type Error = SelectorError;
    fn try_from(s: String) -> Result<Selector, SelectorError> {
        s.parse()
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> String {
        s.to_string()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Uid(uid) => write!(f, "unix:uid:{uid}"),
            Selector::Gid(gid) => write!(f, "unix:gid:{gid}"),
            Selector::Path(path) => write!(f, "unix:path:{}", path.display()),
            Selector::Process { pid, start_time } => write!(f, "unix:process:{pid}:{start_time}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn facts() -> ProcessFacts {
        ProcessFacts {
            uid: 1001,
            gid: 100,
            pid: 42,
            path: Some("/opt/billing/bin/billing".into()),
            start_time: Some(777),
        }
    }

    #[test]
    fn selectors_round_trip_through_text() {
        for text in [
            "unix:uid:1001",
            "unix:gid:0",
            "unix:path:/opt/b",
            "unix:process:42:777",
        ] {
            let s: Selector = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
        }
        for bad in [
            "uid:1",
            "unix:uid:-1",
            "unix:path:rel/x",
            "unix:process:1",
            "unix:sha256:ab",
            "unix:uid",
        ] {
            assert!(bad.parse::<Selector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_selector_must_match() {
        let entry: RegistrationEntrySpec = serde_json::from_value(serde_json::json!({
            "spiffeId": "spiffe://example.org/billing",
            "selectors": ["unix:uid:1001", "unix:path:/opt/billing/bin/billing"],
        }))
        .unwrap();
        assert!(entry.matches(&facts()));
        let other_uid = ProcessFacts {
            uid: 1002,
            ..facts()
        };
        assert!(!entry.matches(&other_uid));
        let no_path = ProcessFacts {
            path: None,
            ..facts()
        };
        assert!(!entry.matches(&no_path));
    }

    #[test]
    fn a_reused_pid_does_not_match_a_process_selector() {
        let s: Selector = "unix:process:42:777".parse().unwrap();
        assert!(s.matches(&facts()));
        assert!(!s.matches(&ProcessFacts {
            start_time: Some(778),
            ..facts()
        }));
        assert!(!s.matches(&ProcessFacts {
            start_time: None,
            ..facts()
        }));
    }

    #[test]
    fn entries_load_from_yaml_and_are_validated() {
        let mesh = "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\nspec:\n  trustDomain: example.org\n";
        let entry = |id: &str, selectors: &str| {
            format!(
                "---\napiVersion: meshwork.dev/v1alpha1\nkind: RegistrationEntry\nmetadata:\n  name: billing\nspec:\n  spiffeId: {id}\n  selectors: {selectors}\n"
            )
        };
        let load = |text: String| {
            let mut set = crate::ResourceSet::default();
            crate::load_str(std::path::Path::new("e.yaml"), &text, &mut set)
                .and_then(|()| set.validate().map(|()| set))
        };
        let ok = load(format!(
            "{mesh}{}",
            entry(
                "spiffe://example.org/billing",
                "[unix:uid:1001, \"unix:path:/opt/b\"]"
            )
        ))
        .unwrap();
        assert_eq!(
            ok.registration_entries[0].resource.spec.selectors[0],
            Selector::Uid(1001)
        );
        let empty = load(format!(
            "{mesh}{}",
            entry("spiffe://example.org/billing", "[]")
        ))
        .unwrap_err();
        assert!(empty.to_string().contains("spec.selectors"), "{empty}");
        let foreign = load(format!(
            "{mesh}{}",
            entry("spiffe://other.org/billing", "[unix:uid:1]")
        ))
        .unwrap_err();
        assert!(foreign.to_string().contains("spec.spiffeId"), "{foreign}");
        let bad = load(format!(
            "{mesh}{}",
            entry("spiffe://example.org/billing", "[unix:uid:x]")
        ))
        .unwrap_err();
        assert!(bad.to_string().contains("unix:uid:x"), "{bad}");
    }

    #[test]
    fn an_entry_without_selectors_matches_nothing() {
        let entry = RegistrationEntrySpec {
            spiffe_id: "spiffe://example.org/x".parse().unwrap(),
            selectors: vec![],
            hint: None,
        };
        assert!(!entry.matches(&facts()));
    }
}
