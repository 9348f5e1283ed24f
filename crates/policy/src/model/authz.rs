//! `AuthorizationPolicy`: who may call a mesh service, with which requests.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Errors, IdentityMatcher, Problem, RequestMatcher, ValidationErrors, parse_list};

/// The `spec` of an `AuthorizationPolicy` resource.
///
/// ```yaml
/// targetService: billing
/// action: ALLOW          # or DENY
/// mode: enforce          # or audit; default enforce
/// rules:
///   - from: [{ spiffeId: spiffe://meshwork.local/ns/default/sa/store }]
///     to:   [{ methods: [POST], paths: [{ exact: /charges }] }]
/// ```
///
/// A rule matches when any `from` entry matches the caller AND any `to` entry matches the
/// request; an empty `from` or `to` list matches anything (an empty `from` also matches a
/// caller without identity). A policy without rules matches nothing. The decision semantics
/// are documented once, in the [crate docs](crate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// The mesh service this policy applies to (e.g. `billing`).
    #[schemars(pattern(super::schema::SERVICE_NAME_PATTERN))]
    pub target_service: String,
    /// `ALLOW` or `DENY`.
    pub action: Action,
    /// `enforce` (default) or `audit`.
    #[serde(default)]
    pub mode: Mode,
    /// The rules; the policy applies when any rule matches.
    #[serde(default)]
    pub rules: Vec<AuthorizationRuleSpec>,
}

/// What a matching rule does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Action {
    /// Allow the request (and make the target service default-deny).
    #[serde(rename = "ALLOW")]
    Allow,
    /// Deny the request; beats any ALLOW.
    #[serde(rename = "DENY")]
    Deny,
}

/// Whether a policy changes decisions or only records what it would have done.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The policy takes part in the decision.
    #[default]
    Enforce,
    /// The policy only adds audit notes ("would deny"/"would allow") to decisions.
    Audit,
}

/// One rule: callers (`from`) and requests (`to`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRuleSpec {
    /// Caller matchers; empty = any caller.
    #[serde(default)]
    pub from: Vec<super::IdentityMatcherSpec>,
    /// Request matchers; empty = any request.
    #[serde(default)]
    pub to: Vec<super::RequestMatcherSpec>,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub(crate) struct AuthzPolicy {
    pub(crate) target_service: String,
    pub(crate) action: Action,
    pub(crate) mode: Mode,
    pub(crate) rules: Vec<AuthzRule>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub(crate) struct AuthzRule {
    pub(crate) from: Vec<IdentityMatcher>,
    pub(crate) to: Vec<RequestMatcher>,
}

impl AuthorizationPolicySpec {
    /// Checks every field; the error lists each invalid field with its path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.parse().map(drop)
    }

    pub(crate) fn parse(&self) -> Result<AuthzPolicy, ValidationErrors> {
        let mut errors = Errors::default();
        if self.target_service.is_empty()
            || !self.target_service.bytes().all(|b| b.is_ascii_graphic())
        {
            errors.push(
                "targetService",
                Problem::ServiceName(self.target_service.clone()),
            );
        }
        let rules = parse_list(&self.rules, "rules", &mut errors, |rule, field, errors| {
            Some(AuthzRule {
                from: parse_list(
                    &rule.from,
                    &format!("{field}.from"),
                    errors,
                    IdentityMatcher::parse,
                ),
                to: parse_list(
                    &rule.to,
                    &format!("{field}.to"),
                    errors,
                    RequestMatcher::parse,
                ),
            })
        });
        errors.finish(AuthzPolicy {
            target_service: self.target_service.clone(),
            action: self.action,
            mode: self.mode,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AuthorizationPolicySpec {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn yaml_with_defaults() {
        let s = spec(
            "targetService: billing\naction: ALLOW\nrules:\n  - from: [{spiffeId: spiffe://td/ns/default/sa/store}]\n    to: [{methods: [POST], paths: [{exact: /charges}]}]\n",
        );
        assert_eq!(s.mode, Mode::Enforce);
        assert_eq!(s.rules.len(), 1);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_and_bad_enums_are_refused() {
        assert!(
            serde_saphyr::from_str::<AuthorizationPolicySpec>(
                "targetService: b\naction: ALLOW\nrulez: []\n"
            )
            .is_err()
        );
        assert!(
            serde_saphyr::from_str::<AuthorizationPolicySpec>("targetService: b\naction: allow\n")
                .is_err()
        );
        assert!(
            serde_saphyr::from_str::<AuthorizationPolicySpec>(
                "targetService: b\naction: DENY\nmode: dryrun\n"
            )
            .is_err()
        );
        assert!(
            serde_saphyr::from_str::<AuthorizationPolicySpec>(
                "targetService: b\naction: DENY\nrules: [{from: [{spiffeID: x}]}]\n"
            )
            .is_err()
        );
    }

    #[test]
    fn validation_names_field_paths() {
        let s = spec(
            "targetService: billing\naction: DENY\nmode: audit\nrules:\n  - from: [{spiffeId: spiffe://td/a}, {spiffeIdGlob: 'spiffe://*/a'}]\n    to: [{paths: [{prefix: nope}]}]\n",
        );
        let errors = s
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            errors
                .contains("rules[0].from[1].spiffeIdGlob: '*' is not allowed in the trust domain"),
            "{errors}"
        );
        assert!(
            errors.contains("rules[0].to[0].paths[0].prefix: path must start with '/'"),
            "{errors}"
        );
    }
}
