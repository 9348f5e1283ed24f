//! The service taxonomy kinds: `ServiceClass`, `Environment` and `ServicePolicy` (what the
//! broker offers and the administrator's rules for it), and `ServiceClaim` (a workload asking
//! for "a postgresql" without naming a vendor).
//!
//! The specs and their local checks live here because `api` owns resource types; the broker
//! re-exports them (`broker::taxonomy`), builds its `Taxonomy` from them and checks the
//! references between them. This module adds what needs the envelope: located errors (file,
//! line, resource, field) and the checks that involve other kinds (a claim's `bindTo` names a
//! `Workload`, its `class` a `ServiceClass`).

pub mod claim;
pub mod class;
pub mod environment;
mod loading;
pub mod policy;

use std::fmt;

pub use claim::{CLAIM_DOMAIN, ServiceClaimSpec, claim_host, parse_claim_host};
pub use class::{MaintenanceInfoSpec, ServiceClassSpec, ServiceKind, Size, SizeLimits};
pub use environment::{ContextKey, ContextMatch, EnvironmentSpec, Glob, RequestContext};
pub use loading::load_taxonomy_dir;
pub(crate) use loading::parse;
pub use policy::{PolicyRuleSpec, QuotaSpec, ServicePolicySpec, TeamSource};

use crate::resource::Resource;

/// A loaded `ServiceClass` resource.
pub type ServiceClass = Resource<ServiceClassSpec>;
/// A loaded `Environment` resource.
pub type Environment = Resource<EnvironmentSpec>;
/// A loaded `ServicePolicy` resource.
pub type ServicePolicy = Resource<ServicePolicySpec>;
/// A loaded `ServiceClaim` resource.
pub type ServiceClaim = Resource<ServiceClaimSpec>;

/// One thing wrong with one resource, located by field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `Kind/name`, e.g. `ServicePolicy/default`.
    pub resource: String,
    /// Field path, e.g. `spec.rules[0].defaultSize`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.resource, self.path, self.message)
    }
}

/// Collects the problems of one resource.
#[derive(Debug)]
pub struct Problems {
    resource: String,
    items: Vec<Problem>,
}

impl Problems {
    /// An empty collection for resource `kind/name`.
    pub fn new(kind: &str, name: &str) -> Self {
        Problems {
            resource: format!("{kind}/{name}"),
            items: Vec::new(),
        }
    }

    /// Records a problem at field `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items.push(Problem {
            resource: self.resource.clone(),
            path: path.into(),
            message: message.into(),
        });
    }

    /// The problems found, in the order they were pushed.
    pub fn into_problems(self) -> Vec<Problem> {
        self.items
    }

    #[cfg(test)]
    pub(crate) fn into_result(self) -> Result<(), String> {
        match self.items.is_empty() {
            true => Ok(()),
            false => Err(self
                .items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }
}

/// What [`is_resource_name`] requires, for error messages.
pub const NAME_RULE: &str =
    "must be 1-63 lowercase letters, digits or '-', starting and ending alphanumeric";

/// Whether `s` is a valid taxonomy name (a DNS-1123 label: policy rule names, resource names).
pub fn is_resource_name(s: &str) -> bool {
    s.parse::<crate::Name>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        assert!(is_resource_name("prod-eu1"));
        assert!(!is_resource_name("Prod"));
        assert!(!is_resource_name("-x"));
        assert!(!is_resource_name(""));
    }
}
