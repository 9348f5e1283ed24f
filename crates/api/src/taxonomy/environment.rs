//! `Environment` (dev, staging, prod, ...): chosen from the OSB `context` object (and the
//! originating-identity platform) by match rules the administrator writes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problems;

/// A context field an environment rule can look at.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ContextKey {
    /// `context.platform`, or the originating-identity platform when the context has none.
    Platform,
    /// `context.namespace` (Kubernetes profile).
    Namespace,
    /// `context.clusterid` (Kubernetes profile).
    ClusterId,
    /// `context.instance_name`.
    InstanceName,
    /// `context.organization_name` (Cloud Foundry profile).
    OrganizationName,
    /// `context.space_name` (Cloud Foundry profile).
    SpaceName,
}

impl ContextKey {
    /// Every key, in a stable order.
    pub const ALL: [ContextKey; 6] = [
        ContextKey::Platform,
        ContextKey::Namespace,
        ContextKey::ClusterId,
        ContextKey::InstanceName,
        ContextKey::OrganizationName,
        ContextKey::SpaceName,
    ];

    /// The key's name in the OSB context object.
    pub fn osb_name(self) -> &'static str {
        match self {
            ContextKey::Platform => "platform",
            ContextKey::Namespace => "namespace",
            ContextKey::ClusterId => "clusterid",
            ContextKey::InstanceName => "instance_name",
            ContextKey::OrganizationName => "organization_name",
            ContextKey::SpaceName => "space_name",
        }
    }
}

impl fmt::Display for ContextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.osb_name())
    }
}

/// A shell-style pattern where `*` matches any run of characters; nothing else is special.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob(String);

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// Empty patterns would only match empty values; say `*` if that is meant.
    #[error("pattern is empty; write \"*\" to match any value")]
    Empty,
}

impl FromStr for Glob {
    type Err = GlobError;
    fn from_str(s: &str) -> Result<Self, GlobError> {
        if s.is_empty() {
            return Err(GlobError::Empty);
        }
        Ok(Glob(s.to_owned()))
    }
}

impl TryFrom<String> for Glob {
    type Error = GlobError;
    fn try_from(s: String) -> Result<Self, GlobError> {
        s.parse()
    }
}

impl From<Glob> for String {
    fn from(g: Glob) -> String {
        g.0
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Glob {
    /// Whether `value` matches the whole pattern.
    pub fn matches(&self, value: &str) -> bool {
        let mut parts = self.0.split('*');
        // invariant: split always yields at least one item.
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = value.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty(); // no '*' at all: exact match
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// One match rule: every pattern given must match and every `unset` key must be absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("minProperties" = 1))]
pub struct ContextMatch {
    /// Pattern for `context.platform` (or the originating-identity platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Glob>,
    /// Pattern for `context.namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Glob>,
    /// Pattern for `context.clusterid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<Glob>,
    /// Pattern for `context.instance_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<Glob>,
    /// Pattern for `context.organization_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<Glob>,
    /// Pattern for `context.space_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_name: Option<Glob>,
    /// Keys that must be absent from the context (e.g. `[namespace]` for "no namespace given").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<ContextKey>,
}

impl ContextMatch {
    fn patterns(&self) -> impl Iterator<Item = (ContextKey, &Glob)> {
        let all = [
            (ContextKey::Platform, &self.platform),
            (ContextKey::Namespace, &self.namespace),
            (ContextKey::ClusterId, &self.cluster_id),
            (ContextKey::InstanceName, &self.instance_name),
            (ContextKey::OrganizationName, &self.organization_name),
            (ContextKey::SpaceName, &self.space_name),
        ];
        all.into_iter()
            .filter_map(|(k, g)| g.as_ref().map(|g| (k, g)))
    }

    /// If the rule matches, a human-readable account of why.
    pub fn explain_match(&self, ctx: &RequestContext) -> Option<String> {
        let mut why = Vec::new();
        for (key, glob) in self.patterns() {
            let value = ctx.get(key)?;
            if !glob.matches(value) {
                return None;
            }
            why.push(format!("{key} {value:?} matches {:?}", glob.0));
        }
        for key in &self.unset {
            if ctx.get(*key).is_some() {
                return None;
            }
            why.push(format!("{key} is unset"));
        }
        Some(why.join(" and "))
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.patterns().next().is_none() && self.unset.is_empty() {
            problems.push(path, "a rule needs at least one pattern or unset key");
        }
        for (key, _) in self.patterns() {
            if self.unset.contains(&key) {
                problems.push(path, format!("{key} is both matched and required unset"));
            }
        }
    }
}

/// The `spec` of an `Environment` resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// What this environment is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The request belongs to this environment when any rule matches.
    #[serde(rename = "match")]
    #[schemars(length(min = 1))]
    pub matches: Vec<ContextMatch>,
}

impl EnvironmentSpec {
    /// Checks what serde cannot: at least one match rule, none empty or contradictory.
    pub fn validate(&self, problems: &mut Problems) {
        if self.matches.is_empty() {
            problems.push("spec.match", "at least one rule is required");
        }
        for (i, m) in self.matches.iter().enumerate() {
            m.validate(&format!("spec.match[{i}]"), problems);
        }
    }

    /// The first matching rule's index and explanation.
    pub fn select(&self, ctx: &RequestContext) -> Option<(usize, String)> {
        self.matches
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.explain_match(ctx).map(|why| (i, why)))
    }
}

/// The string-valued context fields of one OSB request, as environment rules see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    fields: BTreeMap<ContextKey, String>,
}

impl RequestContext {
    /// Reads the known keys from an OSB `context` object; `platform` falls back to the
    /// originating-identity platform. Non-string values are ignored (the OSB profile
    /// defines these keys as strings).
    pub fn new(
        context: Option<&serde_json::Map<String, serde_json::Value>>,
        identity_platform: Option<&str>,
    ) -> Self {
        let mut fields = BTreeMap::new();
        for key in ContextKey::ALL {
            let value = context
                .and_then(|c| c.get(key.osb_name()))
                .and_then(|v| v.as_str());
            if let Some(v) = value {
                fields.insert(key, v.to_owned());
            }
        }
        if let (None, Some(p)) = (fields.get(&ContextKey::Platform), identity_platform) {
            fields.insert(ContextKey::Platform, p.to_owned());
        }
        RequestContext { fields }
    }

    /// One field's value.
    pub fn get(&self, key: ContextKey) -> Option<&str> {
        self.fields.get(&key).map(String::as_str)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn glob(s: &str) -> Glob {
        s.parse().unwrap()
    }

    #[test]
    fn glob_matching() {
        assert!(glob("dev*").matches("dev"));
        assert!(glob("dev*").matches("dev-team"));
        assert!(!glob("dev*").matches("prod-dev"));
        assert!(glob("*-prod").matches("billing-prod"));
        assert!(glob("a*b*c").matches("a-x-b-y-c"));
        assert!(!glob("a*b*c").matches("a-c"));
        assert!(glob("exact").matches("exact"));
        assert!(!glob("exact").matches("exactly"));
        assert!(glob("*").matches(""));
        assert!(!glob("ab*ba").matches("aba"));
        assert_eq!("".parse::<Glob>(), Err(GlobError::Empty));
    }

    #[test]
    fn select_explains_and_honours_unset() {
        let spec: EnvironmentSpec = serde_json::from_value(json!({
            "match": [{"namespace": "dev*"}, {"unset": ["namespace"]}]
        }))
        .unwrap();
        let ctx = json!({"namespace": "dev-a", "platform": "kubernetes"});
        let ctx = RequestContext::new(ctx.as_object(), None);
        let (i, why) = spec.select(&ctx).unwrap();
        assert_eq!(i, 0);
        assert!(why.contains("\"dev-a\""), "{why}");
        let none = RequestContext::new(None, Some("cloudfoundry"));
        assert_eq!(spec.select(&none).unwrap().0, 1);
        let prod = json!({"namespace": "prod"});
        assert!(
            spec.select(&RequestContext::new(prod.as_object(), None))
                .is_none()
        );
    }

    #[test]
    fn empty_and_contradictory_rules_are_invalid() {
        let spec: EnvironmentSpec = serde_json::from_value(json!({
            "match": [{}, {"namespace": "x", "unset": ["namespace"]}]
        }))
        .unwrap();
        let mut p = Problems::new("Environment", "e");
        spec.validate(&mut p);
        let text = p.into_result().unwrap_err().to_string();
        assert!(text.contains("spec.match[0]"), "{text}");
        assert!(text.contains("spec.match[1]: namespace is both"), "{text}");
    }
}
