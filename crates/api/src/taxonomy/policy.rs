//! `ServicePolicy`: the administrator's rules mapping class × environment to a provider,
//! the sizes a team may ask for, the default size, quotas and deletion behaviour.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problems;
use super::class::Size;
use super::environment::ContextKey;
use crate::bounded::{BoundedU32, BoundedU64};

/// `quota.instancesPerTeam`: 1–10000 (0 would forbid the rule's class outright; say so by
/// not having the rule).
pub type InstancesPerTeam = BoundedU32<1, 10_000>;
/// `credentialTtlSeconds`: 60 s to 365 d. Binding credentials are rotated at 80 % of their
/// life, so shorter lifetimes would have `up` rebinding constantly; longer ones are no longer
/// meaningfully expiring.
pub type CredentialTtlSeconds = BoundedU64<60, 31_536_000>;

/// Where a request's team comes from, written `context.<key>` or `identity.<field>`
/// (a field of the decoded `X-Broker-API-Originating-Identity` value, e.g. `identity.username`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TeamSource {
    /// A string field of the OSB context object.
    Context(ContextKey),
    /// A string field of the originating identity's JSON value.
    Identity(String),
}

/// Why a team source was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeamSourceError {
    /// Not `context.<key>` or `identity.<field>`.
    #[error(
        "team source {0:?}: expected context.<key> (namespace, clusterid, instance_name, organization_name, space_name, platform) or identity.<field>"
    )]
    Malformed(String),
}

impl FromStr for TeamSource {
    type Err = TeamSourceError;
    fn from_str(s: &str) -> Result<Self, TeamSourceError> {
        let bad = || TeamSourceError::Malformed(s.to_owned());
        let (scope, field) = s.split_once('.').ok_or_else(bad)?;
        match scope {
            "context" => ContextKey::ALL
                .into_iter()
                .find(|k| k.osb_name() == field)
                .map(TeamSource::Context)
                .ok_or_else(bad),
            "identity" if !field.is_empty() => Ok(TeamSource::Identity(field.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for TeamSource {
    type Error = TeamSourceError;
    fn try_from(s: String) -> Result<Self, TeamSourceError> {
        s.parse()
    }
}

impl From<TeamSource> for String {
    fn from(t: TeamSource) -> String {
        t.to_string()
    }
}

impl fmt::Display for TeamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TeamSource::Context(k) => write!(f, "context.{}", k.osb_name()),
            TeamSource::Identity(field) => write!(f, "identity.{field}"),
        }
    }
}

/// A per-team instance quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaSpec {
    /// How many instances one team may hold under this rule.
    pub instances_per_team: InstancesPerTeam,
    /// Where the team name comes from.
    pub team_from: TeamSource,
}

/// One rule: what a class gets in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRuleSpec {
    /// Unique within the policy; error messages and explanations cite it.
    #[schemars(schema_with = "crate::schema::name")]
    pub name: String,
    /// The `ServiceClass` name.
    pub class: String,
    /// The `Environment` name.
    pub environment: String,
    /// A provider name from the broker's provider configuration.
    pub provider: String,
    /// Sizes a request may ask for explicitly.
    #[schemars(length(min = 1))]
    pub sizes: Vec<Size>,
    /// The size the `default` plan resolves to; must be one of `sizes`.
    pub default_size: Size,
    /// Optional per-team instance quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,
    /// Refuse to deprovision usable instances (a failed, half-created one can always go).
    #[serde(default)]
    pub deletion_protection: bool,
    /// Deprovisioning removes live bindings instead of being refused with 422.
    #[serde(default)]
    pub cascade_delete: bool,
    /// Operations only run asynchronously: requests without `accepts_incomplete=true`
    /// are refused with 422 `AsyncRequired`.
    #[serde(default)]
    pub asynchronous: bool,
    /// Binding credentials expire after this many seconds (`expires_at`; PostgreSQL
    /// enforces it with `VALID UNTIL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ttl_seconds: Option<CredentialTtlSeconds>,
}

/// The `spec` of a `ServicePolicy` resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePolicySpec {
    /// The rules, evaluated by exact (class, environment) match; overlaps are invalid.
    // Rule names are unique: the API server enforces it through the list-map key.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub rules: Vec<PolicyRuleSpec>,
}

impl ServicePolicySpec {
    /// Local checks; cross-resource references are checked by the taxonomy loader.
    pub fn validate(&self, problems: &mut Problems) {
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("spec.rules[{i}]");
            if !super::is_resource_name(&rule.name) {
                problems.push(format!("{path}.name"), super::NAME_RULE);
            }
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                problems.push(
                    format!("{path}.name"),
                    format!("{:?} is used twice", rule.name),
                );
            }
            if rule.sizes.is_empty() {
                problems.push(format!("{path}.sizes"), "at least one size is required");
            }
            if !rule.sizes.contains(&rule.default_size) {
                problems.push(
                    format!("{path}.defaultSize"),
                    format!("{} is not one of {path}.sizes", rule.default_size),
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn team_source_round_trips() {
        for s in [
            "context.namespace",
            "context.clusterid",
            "identity.username",
        ] {
            assert_eq!(s.parse::<TeamSource>().unwrap().to_string(), s);
        }
        assert!("namespace".parse::<TeamSource>().is_err());
        assert!("context.nope".parse::<TeamSource>().is_err());
        assert!("identity.".parse::<TeamSource>().is_err());
    }

    #[test]
    fn rule_validation_names_paths() {
        let spec: ServicePolicySpec = serde_json::from_value(json!({"rules": [
            {"name": "a", "class": "c", "environment": "e", "provider": "p",
             "sizes": ["small"], "defaultSize": "large",
             "quota": {"instancesPerTeam": 1, "teamFrom": "context.namespace"}},
            {"name": "a", "class": "c", "environment": "e", "provider": "p",
             "sizes": [], "defaultSize": "small"}
        ]}))
        .unwrap();
        let mut p = Problems::new("ServicePolicy", "x");
        spec.validate(&mut p);
        let text = p.into_result().unwrap_err().to_string();
        assert!(text.contains("spec.rules[0].defaultSize: large"), "{text}");
        assert!(
            text.contains("spec.rules[1].name: \"a\" is used twice"),
            "{text}"
        );
        assert!(text.contains("spec.rules[1].sizes"), "{text}");
    }

    #[test]
    fn bad_team_source_fails_deserialisation() {
        let err =
            serde_json::from_value::<QuotaSpec>(json!({"instancesPerTeam": 1, "teamFrom": "team"}))
                .unwrap_err();
        assert!(err.to_string().contains("team source"), "{err}");
    }
}
