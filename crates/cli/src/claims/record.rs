//! What `up` records of each claim it provisioned and bound, for readers of the state
//! directory (the dashboard): `<state>/claims/<claim>.json`. No credentials: where they
//! are, and what the broker decided (its instance `metadata`: the resolution, the
//! environment's rule, the provider and size it picked).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::platform::ClaimIds;

/// One bound claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The `ServiceClaim`'s name.
    pub claim: String,
    /// The workload it is bound to.
    pub workload: String,
    /// The OSB instance id.
    pub instance_id: String,
    /// The OSB binding id.
    pub binding_id: String,
    /// The environment `up` provisioned in (`--environment`).
    pub environment: String,
    /// The broker's account of its decision (`metadata.attributes.resolution`).
    pub resolution: String,
    /// The `ServicePolicy` rule that decided (`metadata.attributes.rule`).
    #[serde(default)]
    pub rule: Value,
    /// What was picked: `meshwork.dev/{class,environment,provider,size,plan}`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The binding's files (`$SERVICE_BINDING_ROOT/<claim>`).
    pub binding_dir: PathBuf,
    /// The database of the binding, when it has one.
    #[serde(default)]
    pub database: Option<String>,
    /// When `up` bound it (RFC 3339).
    pub bound_at: String,
}

/// `<state>/claims`.
pub fn dir(state: &Path) -> PathBuf {
    state.join("claims")
}

impl ClaimRecord {
    /// The record of a claim just provisioned (`metadata`) and bound (`credentials`).
    pub fn new(
        ids: &ClaimIds,
        metadata: &Value,
        credentials: &Value,
        binding_dir: &Path,
    ) -> ClaimRecord {
        let labels = metadata["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        ClaimRecord {
            claim: ids.claim.clone(),
            workload: ids.app.clone(),
            instance_id: ids.instance_id.clone(),
            binding_id: ids.binding_id.clone(),
            environment: ids.context["clusterid"].as_str().unwrap_or("").to_owned(),
            resolution: metadata["attributes"]["resolution"]
                .as_str()
                .unwrap_or("provisioned")
                .to_owned(),
            rule: metadata["attributes"]["rule"].clone(),
            labels,
            binding_dir: binding_dir.to_owned(),
            database: credentials["database"].as_str().map(str::to_owned),
            bound_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }

    /// Writes it to `<state>/claims/<claim>.json` (replacing an earlier run's).
    pub fn write(&self, state: &Path) -> anyhow::Result<()> {
        let dir = dir(state);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.claim));
        let tmp = dir.join(format!(".{}.json.tmp", self.claim));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Every record under `<state>/claims/`, sorted by claim; unreadable files are skipped.
    pub fn read_all(state: &Path) -> Vec<ClaimRecord> {
        let Ok(entries) = std::fs::read_dir(dir(state)) else {
            return Vec::new();
        };
        let mut records: Vec<ClaimRecord> = entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
            })
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        records.sort_by(|a, b| a.claim.cmp(&b.claim));
        records
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_round_trip_through_the_state_directory() {
        let state = tempfile::tempdir().unwrap();
        let ids = ClaimIds {
            claim: "charges-db".into(),
            instance_id: "charges-db.default.0123abcd".into(),
            binding_id: "billing.charges-db".into(),
            service_id: "s".into(),
            plan_id: "p".into(),
            organization: "store-billing".into(),
            space: "default".into(),
            context: json!({"clusterid": "dev"}),
            app: "billing".into(),
        };
        let metadata = json!({
            "labels": {"meshwork.dev/provider": "postgres-private", "meshwork.dev/size": "small"},
            "attributes": {"resolution": "dev → postgres-private (rule 0)", "rule": 0},
        });
        let credentials = json!({"database": "charges", "password": "never recorded"});
        let record = ClaimRecord::new(&ids, &metadata, &credentials, Path::new("/b/charges-db"));
        record.write(state.path()).unwrap();
        let text = std::fs::read_to_string(dir(state.path()).join("charges-db.json")).unwrap();
        assert!(!text.contains("never recorded"), "{text}");
        let all = ClaimRecord::read_all(state.path());
        assert_eq!(all, [record]);
        assert_eq!(all[0].labels["meshwork.dev/provider"], "postgres-private");
        assert_eq!(
            (all[0].environment.as_str(), all[0].database.as_deref()),
            ("dev", Some("charges"))
        );
    }
}
