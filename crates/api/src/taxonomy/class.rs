//! `ServiceClass`: a portable kind of service (postgresql, mysql, redis) with t-shirt sizes
//! defined by limits rather than vendor SKUs. Classes are what the catalog offers.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problems;
use crate::bounded::BoundedU32;

/// `maxConnections`: 1–100000. MariaDB's server-wide `max_connections` stops at 100000 (and
/// PostgreSQL's at 262143), so a larger per-instance limit could never be reached.
pub type MaxConnections = BoundedU32<1, 100_000>;
/// `storageMb`: 1 MiB to 16 TiB, beyond any single-server database meshwork provisions (and
/// small enough that a size given in bytes by mistake is refused).
pub type StorageMb = BoundedU32<1, 16_777_216>;
/// `memoryMb`: 1 MiB to 1 TiB, beyond the memory of any one Redis server meshwork provisions.
pub type MemoryMb = BoundedU32<1, 1_048_576>;

/// The portable service kinds the broker can provision.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// A PostgreSQL database.
    Postgresql,
    /// A MySQL/MariaDB database.
    Mysql,
    /// A Redis key-space (ACL users restricted to a key prefix).
    Redis,
}

impl ServiceKind {
    /// The lowercase name used in specs, labels and servicebinding.io `type` files.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Postgresql => "postgresql",
            ServiceKind::Mysql => "mysql",
            ServiceKind::Redis => "redis",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A t-shirt size.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// Small.
    Small,
    /// Medium.
    Medium,
    /// Large.
    Large,
}

impl Size {
    /// All sizes, smallest first.
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    /// The lowercase name, also the catalog plan name.
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits that define a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SizeLimits {
    /// Maximum concurrent connections (database `CONNECTION LIMIT`, MySQL `MAX_USER_CONNECTIONS`).
    pub max_connections: MaxConnections,
    /// Storage quota in MiB (postgresql, mysql). Recorded and advertised; neither server
    /// enforces per-database disk quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_mb: Option<StorageMb>,
    /// Memory quota in MiB (redis). Recorded and advertised; Redis has no per-user memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<MemoryMb>,
}

impl fmt::Display for SizeLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} connections", self.max_connections)?;
        if let Some(mb) = self.storage_mb {
            write!(f, ", {mb} MB storage")?;
        }
        if let Some(mb) = self.memory_mb {
            write!(f, ", {mb} MB memory")?;
        }
        Ok(())
    }
}

/// OSB `maintenance_info` advertised on every plan of the class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceInfoSpec {
    /// A semantic version, compared verbatim with what platforms send.
    #[schemars(pattern(crate::schema::SEMVER_PATTERN))]
    pub version: String,
    /// Human-readable description of the maintenance level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The `spec` of a `ServiceClass` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceClassSpec {
    /// Which portable kind this class is.
    pub kind: ServiceKind,
    /// Catalog description; defaults to one derived from the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Catalog tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The sizes this class offers and the limits that define them.
    #[schemars(schema_with = "crate::schema::sizes")]
    pub sizes: BTreeMap<Size, SizeLimits>,
    /// Maintenance level advertised on the class's plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfoSpec>,
}

impl ServiceClassSpec {
    /// Checks what serde cannot: at least one size, and the quota field each kind needs.
    pub fn validate(&self, problems: &mut Problems) {
        if self.sizes.is_empty() {
            problems.push(
                "spec.sizes",
                "at least one of small, medium, large is required",
            );
        }
        for (size, limits) in &self.sizes {
            let path = format!("spec.sizes.{size}");
            self.validate_quota(&path, limits, problems);
        }
        if let Some(mi) = self
            .maintenance_info
            .as_ref()
            .filter(|m| !is_semver(&m.version))
        {
            problems.push(
                "spec.maintenanceInfo.version",
                format!("{:?} is not a semantic version like 1.2.3", mi.version),
            );
        }
    }

    fn validate_quota(&self, path: &str, limits: &SizeLimits, problems: &mut Problems) {
        let (needed, forbidden) = match self.kind {
            ServiceKind::Postgresql | ServiceKind::Mysql => ("storageMb", "memoryMb"),
            ServiceKind::Redis => ("memoryMb", "storageMb"),
        };
        let (has_needed, has_forbidden) = match self.kind {
            ServiceKind::Redis => (limits.memory_mb.is_some(), limits.storage_mb.is_some()),
            _ => (limits.storage_mb.is_some(), limits.memory_mb.is_some()),
        };
        if !has_needed {
            problems.push(
                format!("{path}.{needed}"),
                format!("required for kind {}", self.kind),
            );
        }
        if has_forbidden {
            problems.push(
                format!("{path}.{forbidden}"),
                format!("not meaningful for kind {}; use {needed}", self.kind),
            );
        }
    }
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<ServiceClassSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = parse(json!({"kind": "redis", "sizes": {}, "flavour": "x"})).unwrap_err();
        assert!(err.to_string().contains("flavour"), "{err}");
        let err =
            parse(json!({"kind": "redis", "sizes": {"xl": {"maxConnections": 1}}})).unwrap_err();
        assert!(err.to_string().contains("xl"), "{err}");
    }

    #[test]
    fn validation_names_the_field_path() {
        let spec = parse(json!({
            "kind": "redis",
            "sizes": {"small": {"maxConnections": 1, "storageMb": 5}},
            "maintenanceInfo": {"version": "one"}
        }))
        .unwrap();
        let mut p = Problems::new("ServiceClass", "cache");
        spec.validate(&mut p);
        let text = p.into_result().unwrap_err().to_string();
        assert!(
            text.contains("spec.sizes.small.memoryMb: required"),
            "{text}"
        );
        assert!(
            text.contains("spec.sizes.small.storageMb: not meaningful"),
            "{text}"
        );
        assert!(text.contains("spec.maintenanceInfo.version"), "{text}");
    }

    #[test]
    fn semver() {
        assert!(is_semver("1.0.0"));
        assert!(is_semver("1.0.0-rc.1+build"));
        assert!(!is_semver("1.0"));
        assert!(!is_semver("a.b.c"));
    }
}
