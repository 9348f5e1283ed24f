//! The compiled policy engine: [`Engine::compile`] a [`PolicySet`], then ask
//! [`Engine::authorize`] / [`Engine::egress`]. Semantics are documented in the [crate docs](crate).
//!
//! Compilation assigns every rule a rule id in canonical order (policies by name, rules in
//! order), so "the first matching rule" is simply the smallest id — independent of hash-map
//! iteration order, which keeps decisions deterministic.

mod decide;
mod index;
mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hasher::FxHashMap as HashMap;
use crate::model::{
    Action, AuthorizationPolicySpec, EgressDestination, EgressPolicySpec, IdentityMatcher, Mode,
    RequestMatcher, ValidationErrors,
};
use index::{HostIndex, IdentityIndex, PathIndex};
use text::MatcherTexts;

/// Index of a rule in canonical order.
type RuleId = u32;

/// Named policies, as loaded from resources (the name is whatever identifies the resource to
/// users, e.g. `default/store-may-charge`). Ordered maps make the set canonical, which is what
/// [`Engine::hash`] hashes. Serde (camelCase) lets the control plane ship it in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySet {
    /// `AuthorizationPolicy` specs by name.
    #[serde(default)]
    pub authorization: BTreeMap<String, AuthorizationPolicySpec>,
    /// `EgressPolicy` specs by name.
    #[serde(default)]
    pub egress: BTreeMap<String, EgressPolicySpec>,
}

impl PolicySet {
    /// The content hash an engine compiled from this set reports ([`Engine::hash`]), without
    /// compiling it: what the control plane publishes beside the set in its snapshots.
    pub fn hash(&self) -> EngineHash {
        hash_set(self)
    }

    /// Whether the set holds no policies at all.
    pub fn is_empty(&self) -> bool {
        self.authorization.is_empty() && self.egress.is_empty()
    }
}

/// Which kind of resource a [`PolicyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// An `AuthorizationPolicy`.
    Authorization,
    /// An `EgressPolicy`.
    Egress,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyKind::Authorization => "AuthorizationPolicy",
            PolicyKind::Egress => "EgressPolicy",
        })
    }
}

/// One invalid policy of a set.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} {name:?}: {errors}")]
pub struct PolicyError {
    /// Resource kind.
    pub kind: PolicyKind,
    /// Policy name (the key in the [`PolicySet`]).
    pub name: String,
    /// Every invalid field.
    pub errors: ValidationErrors,
}

/// Why a [`PolicySet`] did not compile: every invalid policy, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct CompileError(pub Vec<PolicyError>);

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Content hash of the canonical [`PolicySet`] an engine was compiled from (FNV-1a, 128 bit,
/// over its JSON serialisation). Identifies a snapshot across processes of the same meshwork
/// version; it is an identifier, not a security property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EngineHash(pub u128);

impl fmt::Display for EngineHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// An authorization rule, flattened out of its policy.
#[derive(Debug)]
struct AuthzEntry {
    policy: usize,
    rule: usize,
    action: Action,
    mode: Mode,
    from: Vec<IdentityMatcher>,
    to: Vec<RequestMatcher>,
    texts: MatcherTexts,
}

/// The rules targeting one service, with their candidate indexes.
#[derive(Debug, Default)]
struct ServiceRules {
    by_caller: IdentityIndex,
    by_path: PathIndex,
    enforced_allow: bool,
    audited_allow: bool,
}

/// An egress destination, flattened out of its policy (`rule` = index in `to`).
#[derive(Debug)]
struct EgressEntry {
    policy: usize,
    rule: usize,
    destination: EgressDestination,
    texts: MatcherTexts,
}

/// A compiled, immutable policy set. Cheap to share (`Arc<Engine>`); swap a new one in to
/// apply updates. `Engine::default()` has no policies: every inbound request is allowed
/// ([`crate::DecisionKind::NoPolicy`]) and all egress is denied.
#[derive(Debug, Default)]
pub struct Engine {
    authz_names: Vec<String>,
    authz_rules: Vec<AuthzEntry>,
    services: HashMap<String, ServiceRules>,
    egress_names: Vec<String>,
    egress_from: Vec<Vec<IdentityMatcher>>,
    egress_rules: Vec<EgressEntry>,
    egress_by_caller: IdentityIndex,
    egress_by_host: HostIndex,
    hash: EngineHash,
}

impl Default for EngineHash {
    fn default() -> Self {
        hash_set(&PolicySet::default())
    }
}

impl Engine {
    /// Validates and compiles `set`. Errors list every invalid field of every policy.
    pub fn compile(set: &PolicySet) -> Result<Engine, CompileError> {
        let mut failures = Vec::new();
        let mut engine = Engine {
            hash: hash_set(set),
            ..Engine::default()
        };
        for (name, spec) in &set.authorization {
            match spec.parse() {
                Ok(policy) => engine.add_authorization(name, policy),
                Err(errors) => failures.push(PolicyError {
                    kind: PolicyKind::Authorization,
                    name: name.clone(),
                    errors,
                }),
            }
        }
        for (name, spec) in &set.egress {
            match spec.parse() {
                Ok(policy) => engine.add_egress(name, policy),
                Err(errors) => failures.push(PolicyError {
                    kind: PolicyKind::Egress,
                    name: name.clone(),
                    errors,
                }),
            }
        }
        if failures.is_empty() {
            Ok(engine)
        } else {
            Err(CompileError(failures))
        }
    }

    /// The content hash of the policy set this engine was compiled from.
    pub fn hash(&self) -> EngineHash {
        self.hash
    }

    /// Number of compiled rules: authorization rules plus egress destinations.
    pub fn rule_count(&self) -> usize {
        self.authz_rules.len() + self.egress_rules.len()
    }

    fn add_authorization(&mut self, name: &str, policy: crate::model::AuthzPolicy) {
        let policy_index = self.authz_names.len();
        self.authz_names.push(name.to_owned());
        let service = self.services.entry(policy.target_service).or_default();
        if policy.action == Action::Allow {
            match policy.mode {
                Mode::Enforce => service.enforced_allow = true,
                Mode::Audit => service.audited_allow = true,
            }
        }
        for (rule_index, rule) in policy.rules.into_iter().enumerate() {
            let id = next_id(self.authz_rules.len());
            service.by_caller.insert(&rule.from, id);
            service.by_path.insert(&rule.to, id);
            self.authz_rules.push(AuthzEntry {
                policy: policy_index,
                rule: rule_index,
                action: policy.action,
                mode: policy.mode,
                texts: MatcherTexts::authz(&rule.from, &rule.to),
                from: rule.from,
                to: rule.to,
            });
        }
    }

    fn add_egress(&mut self, name: &str, policy: crate::model::EgressPolicy) {
        let policy_index = self.egress_names.len();
        self.egress_names.push(name.to_owned());
        for (rule_index, destination) in policy.to.into_iter().enumerate() {
            let id = next_id(self.egress_rules.len());
            self.egress_by_caller.insert(&policy.from, id);
            self.egress_by_host.insert(&destination.destination, id);
            let texts = MatcherTexts::egress(&policy.from, rule_index, &destination);
            self.egress_rules.push(EgressEntry {
                policy: policy_index,
                rule: rule_index,
                destination,
                texts,
            });
        }
        self.egress_from.push(policy.from);
    }
}

/// Rule ids are `u32` to keep candidate lists small; more than 4 billion rules cannot be
/// loaded from YAML on one machine, so saturating is unreachable in practice.
fn next_id(len: usize) -> RuleId {
    RuleId::try_from(len).unwrap_or(RuleId::MAX)
}

/// FNV-1a 128 over the JSON serialisation of the (ordered, hence canonical) set.
fn hash_set(set: &PolicySet) -> EngineHash {
    struct Fnv(u128);
    impl io::Write for Fnv {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
            for &b in buf {
                self.0 = (self.0 ^ u128::from(b)).wrapping_mul(PRIME);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut fnv = Fnv(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
    // invariant: the spec types serialise to JSON infallibly (string map keys, no custom
    // serialisers that fail) and the writer never errors; on the impossible error the hash
    // covers the prefix written so far, which is still deterministic.
    let _ = serde_json::to_writer(&mut fnv, set);
    EngineHash(fnv.0)
}

#[cfg(test)]
mod tcp_tests;
#[cfg(test)]
mod tests;
