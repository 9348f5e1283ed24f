//! The portable taxonomy: `ServiceClass`, `Environment` and `ServicePolicy` specs, their
//! validation, and the resolution of an OSB request to a provider and size.
//!
//! The specs (and each spec's own checks) are resource types, so they live in the `api` crate
//! (`api::taxonomy`) with the envelope and YAML loading; they are re-exported here. The CLI
//! hands the parsed specs to [`Taxonomy::new`] as [`Named`] values, which checks the references
//! between them.

pub mod demo;
pub mod ids;
mod resolve;

pub use api::taxonomy::{Problem, Problems, class, environment, policy};

use std::collections::BTreeMap;

pub use class::{MaintenanceInfoSpec, ServiceClassSpec, ServiceKind, Size, SizeLimits};
pub use environment::{ContextKey, ContextMatch, EnvironmentSpec, Glob, RequestContext};
pub use ids::PlanChoice;
pub use policy::{PolicyRuleSpec, QuotaSpec, ServicePolicySpec, TeamSource};
pub use resolve::{Resolution, ResolveError, ResolveRequest};

/// A spec with the resource name from its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<S> {
    /// `metadata.name`.
    pub name: String,
    /// The resource's spec.
    pub spec: S,
}

impl<S> Named<S> {
    /// Pairs a name with a spec.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Named {
            name: name.into(),
            spec,
        }
    }
}

/// The taxonomy is invalid; every problem found is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid taxonomy: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct TaxonomyError {
    /// All problems, in resource order.
    pub problems: Vec<Problem>,
}

/// A policy rule together with the policy that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The `ServicePolicy` name.
    pub policy: String,
    /// The rule.
    pub spec: PolicyRuleSpec,
}

impl Rule {
    /// `policy/rule`, the id explanations and errors cite.
    pub fn id(&self) -> String {
        format!("{}/{}", self.policy, self.spec.name)
    }
}

/// A validated taxonomy: the catalog and the administrator's policy.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    classes: BTreeMap<String, ServiceClassSpec>,
    environments: BTreeMap<String, EnvironmentSpec>,
    rules: Vec<Rule>,
    services: BTreeMap<String, String>,
    plans: BTreeMap<String, (String, PlanChoice)>,
}

impl Taxonomy {
    /// Validates the specs (each alone, then their cross references) and builds the taxonomy.
    pub fn new(
        classes: Vec<Named<ServiceClassSpec>>,
        environments: Vec<Named<EnvironmentSpec>>,
        policies: Vec<Named<ServicePolicySpec>>,
    ) -> Result<Self, TaxonomyError> {
        let mut problems = Vec::new();
        let classes = collect("ServiceClass", classes, &mut problems, |s, p| s.validate(p));
        let environments = collect("Environment", environments, &mut problems, |s, p| {
            s.validate(p)
        });
        let policies = collect("ServicePolicy", policies, &mut problems, |s, p| {
            s.validate(p)
        });
        let rules: Vec<Rule> = policies
            .into_iter()
            .flat_map(|(policy, spec)| {
                spec.rules.into_iter().map(move |r| Rule {
                    policy: policy.clone(),
                    spec: r,
                })
            })
            .collect();
        check_references(&classes, &environments, &rules, &mut problems);
        if !problems.is_empty() {
            return Err(TaxonomyError { problems });
        }
        Ok(Self::index(classes, environments, rules))
    }

    fn index(
        classes: BTreeMap<String, ServiceClassSpec>,
        environments: BTreeMap<String, EnvironmentSpec>,
        rules: Vec<Rule>,
    ) -> Self {
        let mut services = BTreeMap::new();
        let mut plans = BTreeMap::new();
        for (name, spec) in &classes {
            services.insert(ids::service_id(name), name.clone());
            for choice in Self::plan_choices(spec) {
                plans.insert(ids::plan_id(name, choice), (name.clone(), choice));
            }
        }
        Taxonomy {
            classes,
            environments,
            rules,
            services,
            plans,
        }
    }

    /// The plans a class offers: `default`, then each size it defines.
    pub fn plan_choices(spec: &ServiceClassSpec) -> impl Iterator<Item = PlanChoice> + '_ {
        std::iter::once(PlanChoice::Default).chain(spec.sizes.keys().map(|s| PlanChoice::Sized(*s)))
    }

    /// Classes by name.
    pub fn classes(&self) -> &BTreeMap<String, ServiceClassSpec> {
        &self.classes
    }

    /// Environments by name.
    pub fn environments(&self) -> &BTreeMap<String, EnvironmentSpec> {
        &self.environments
    }

    /// All policy rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by its `policy/rule` id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id() == id)
    }

    /// The class name a catalog service id stands for.
    pub fn service(&self, service_id: &str) -> Option<&str> {
        self.services.get(service_id).map(String::as_str)
    }

    /// The class name and plan a catalog plan id stands for.
    pub fn plan(&self, plan_id: &str) -> Option<(&str, PlanChoice)> {
        self.plans.get(plan_id).map(|(c, p)| (c.as_str(), *p))
    }

    /// Checks every rule's provider against the configured providers' kinds.
    pub fn check_providers(
        &self,
        kind_of: impl Fn(&str) -> Option<ServiceKind>,
    ) -> Result<(), TaxonomyError> {
        let mut problems = Vec::new();
        for rule in &self.rules {
            let Some(class) = self.classes.get(&rule.spec.class) else {
                continue;
            };
            let message = match kind_of(&rule.spec.provider) {
                None => format!("no provider named {:?} is configured", rule.spec.provider),
                Some(k) if k != class.kind => format!(
                    "provider {:?} provisions {k}, but class {} is {}",
                    rule.spec.provider, rule.spec.class, class.kind
                ),
                Some(_) => continue,
            };
            problems.push(rule_problem(rule, "provider", message));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(TaxonomyError { problems }),
        }
    }
}

fn collect<S>(
    kind: &str,
    items: Vec<Named<S>>,
    problems: &mut Vec<Problem>,
    validate: impl Fn(&S, &mut Problems),
) -> BTreeMap<String, S> {
    let mut out = BTreeMap::new();
    for Named { name, spec } in items {
        let mut p = Problems::new(kind, &name);
        if !api::taxonomy::is_resource_name(&name) {
            p.push("metadata.name", api::taxonomy::NAME_RULE);
        }
        if out.contains_key(&name) {
            p.push("metadata.name", "defined twice");
        }
        validate(&spec, &mut p);
        problems.extend(p.into_problems());
        out.insert(name, spec);
    }
    out
}

fn rule_problem(rule: &Rule, field: &str, message: String) -> Problem {
    let index = rule.spec.name.clone();
    Problem {
        resource: format!("ServicePolicy/{}", rule.policy),
        path: format!("spec.rules[name={index}].{field}"),
        message,
    }
}

fn check_references(
    classes: &BTreeMap<String, ServiceClassSpec>,
    environments: &BTreeMap<String, EnvironmentSpec>,
    rules: &[Rule],
    problems: &mut Vec<Problem>,
) {
    for (i, rule) in rules.iter().enumerate() {
        let r = &rule.spec;
        match classes.get(&r.class) {
            None => problems.push(rule_problem(
                rule,
                "class",
                format!("no ServiceClass {:?}", r.class),
            )),
            Some(class) => {
                for size in r.sizes.iter().filter(|s| !class.sizes.contains_key(s)) {
                    let msg = format!("ServiceClass {} defines no size {size}", r.class);
                    problems.push(rule_problem(rule, "sizes", msg));
                }
            }
        }
        if !environments.contains_key(&r.environment) {
            let msg = format!("no Environment {:?}", r.environment);
            problems.push(rule_problem(rule, "environment", msg));
        }
        let clash = rules[..i]
            .iter()
            .find(|o| o.spec.class == r.class && o.spec.environment == r.environment);
        if let Some(other) = clash {
            let msg = format!(
                "rule {} already covers class {} in environment {}",
                other.id(),
                r.class,
                r.environment
            );
            problems.push(rule_problem(rule, "class", msg));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn demo_taxonomy_is_valid_and_indexes_plans() {
        let t = Taxonomy::demo();
        let pg = ids::service_id("postgresql");
        assert_eq!(t.service(&pg), Some("postgresql"));
        let small = ids::plan_id("postgresql", PlanChoice::Sized(Size::Small));
        assert_eq!(
            t.plan(&small),
            Some(("postgresql", PlanChoice::Sized(Size::Small)))
        );
        assert!(t.rule("default/prod-postgresql").is_some());
    }

    #[test]
    fn cross_references_are_checked() {
        let mut classes = demo::classes();
        classes.retain(|c| c.name != "redis");
        let err = Taxonomy::new(classes, demo::environments(), demo::policies()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("spec.rules[name=dev-redis].class: no ServiceClass \"redis\""),
            "{text}"
        );
    }

    #[test]
    fn overlapping_rules_are_invalid() {
        let mut policies = demo::policies();
        let mut extra = policies[0].clone();
        extra.name = "second".into();
        extra.spec.rules.truncate(1);
        policies.push(extra);
        let err = Taxonomy::new(demo::classes(), demo::environments(), policies).unwrap_err();
        assert!(err.to_string().contains("already covers class"), "{err}");
    }

    #[test]
    fn provider_kinds_are_checked() {
        let t = Taxonomy::demo();
        let err = t
            .check_providers(|p| p.starts_with("redis").then_some(ServiceKind::Redis))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no provider named \"postgres-shared\""),
            "{text}"
        );
        assert!(t.check_providers(|_| Some(ServiceKind::Mysql)).is_err());
    }
}
