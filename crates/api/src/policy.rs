//! Policy kinds: `AuthorizationPolicy` (who may call a mesh service, with which requests) and
//! `EgressPolicy` (which workloads may reach which destinations outside the mesh).
//!
//! Their `spec`s are the `policy` crate's [`AuthorizationPolicySpec`] and [`EgressPolicySpec`]
//! (the decision semantics are written down once, in `docs/policy.md`). This module adds what
//! needs the envelope and the other resources: located validation errors, the check that
//! `targetService` names a `Service`, and [`ResourceSet::policy_set`].
//!
//! **Names.** In a [`PolicySet`] — hence in decisions, 403 bodies and logs — a policy is called
//! `<namespace>/<name>` (`default/billing-charges`): metadata names are unique only within a
//! namespace, and the decision must name exactly one resource.

use policy::{AuthorizationPolicySpec, EgressPolicySpec, PolicySet, ValidationErrors};

use crate::load::{LoadError, Loaded, Origin};
use crate::resource::{ObjectMeta, Resource};
use crate::set::ResourceSet;

/// A loaded `AuthorizationPolicy` resource.
pub type AuthorizationPolicy = Resource<AuthorizationPolicySpec>;

/// A loaded `EgressPolicy` resource.
pub type EgressPolicy = Resource<EgressPolicySpec>;

/// The name a policy resource has in a [`PolicySet`] and in decisions: `<namespace>/<name>`.
pub fn policy_name(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace, meta.name)
}

/// A policy spec type, as far as loading is concerned.
pub(crate) trait PolicySpec {
    /// The resource kind.
    const KIND: &'static str;
    /// The `policy` crate's validation.
    fn check(&self) -> Result<(), ValidationErrors>;
}

impl PolicySpec for AuthorizationPolicySpec {
    const KIND: &'static str = "AuthorizationPolicy";
    fn check(&self) -> Result<(), ValidationErrors> {
        self.validate()
    }
}

impl PolicySpec for EgressPolicySpec {
    const KIND: &'static str = "EgressPolicy";
    fn check(&self) -> Result<(), ValidationErrors> {
        self.validate()
    }
}

/// Validates one policy's spec. Every invalid field becomes its own [`LoadError::Invalid`]
/// naming `spec.<field>`, at the field's line.
pub(crate) fn validate_spec<S: PolicySpec>(loaded: &Loaded<S>) -> Result<(), LoadError> {
    let Err(errors) = loaded.resource.spec.check() else {
        return Ok(());
    };
    let resource = format!("{}/{}", S::KIND, loaded.resource.metadata.name);
    let located = errors
        .errors()
        .iter()
        .map(|e| {
            let field = if e.field.is_empty() {
                String::from("spec")
            } else {
                format!("spec.{}", e.field)
            };
            located(&loaded.origin, &resource, field, e.problem.to_string())
        })
        .collect();
    Err(LoadError::from_many(located))
}

/// Per-spec validation and cross-references of every policy.
pub(crate) fn validate_policies(set: &ResourceSet) -> Result<(), LoadError> {
    let mut errors = Vec::new();
    for p in &set.authorization_policies {
        errors.extend(validate_spec(p).err());
        let target = &p.resource.spec.target_service;
        if !set
            .services
            .iter()
            .any(|s| s.resource.metadata.name.as_str() == target)
        {
            let known: Vec<&str> = set
                .services
                .iter()
                .map(|s| s.resource.metadata.name.as_str())
                .collect();
            let message = format!(
                "{target:?} names no Service; known services: {}",
                known.join(", ")
            );
            let resource = format!("AuthorizationPolicy/{}", p.resource.metadata.name);
            errors.push(located(
                &p.origin,
                &resource,
                "spec.targetService".into(),
                message,
            ));
        }
    }
    for p in &set.egress_policies {
        errors.extend(validate_spec(p).err());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LoadError::from_many(errors))
    }
}

fn located(origin: &Origin, resource: &str, field: String, message: String) -> LoadError {
    origin.error(Some(resource), &field, message)
}

impl ResourceSet {
    /// Every policy of the set, named `<namespace>/<name>` (see the [module docs](self)), ready
    /// for `policy::Engine::compile`. A validated set always compiles.
    pub fn policy_set(&self) -> PolicySet {
        PolicySet {
            authorization: self
                .authorization_policies
                .iter()
                .map(|p| (policy_name(&p.resource.metadata), p.resource.spec.clone()))
                .collect(),
            egress: self
                .egress_policies
                .iter()
                .map(|p| (policy_name(&p.resource.metadata), p.resource.spec.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::load::load_str;
    use crate::set::ResourceSet;

    const HEAD: &str = "apiVersion: meshwork.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {trustDomain: meshwork.local}
---
apiVersion: meshwork.dev/v1alpha1
kind: Service
metadata: {name: billing}
spec: {selector: {app: billing}}
---
";

    fn load(text: &str) -> Result<ResourceSet, String> {
        let mut set = ResourceSet::default();
        load_str(Path::new("p.yaml"), &format!("{HEAD}{text}"), &mut set)
            .and_then(|()| set.validate())
            .map(|()| set)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn policies_load_into_a_policy_set_named_by_namespace() {
        let set = load(
            "apiVersion: meshwork.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: charges, namespace: shop}
spec:
  targetService: billing
  action: ALLOW
  rules: [{to: [{methods: [POST]}]}]
---
apiVersion: meshwork.dev/v1alpha1
kind: EgressPolicy
metadata: {name: stripe}
spec:
  to: [{host: api.stripe.com, ports: [443]}]
",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let policies = set.policy_set();
        assert_eq!(
            policies.authorization.keys().collect::<Vec<_>>(),
            ["shop/charges"]
        );
        assert_eq!(
            policies.egress.keys().collect::<Vec<_>>(),
            ["default/stripe"]
        );
        assert!(policy::Engine::compile(&policies).is_ok());
    }

    #[test]
    fn every_invalid_field_is_reported_at_its_own_line() {
        let err = load(
            "apiVersion: meshwork.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: charges}
spec:
  targetService: billing
  action: ALLOW
  rules:
    - from: [{spiffeId: 'spiffe://meshwork.local/*'}]
      to:
        - paths: [{prefix: charges}]
",
        )
        .err()
        .unwrap_or_default();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(lines[0].starts_with("p.yaml:18:15: AuthorizationPolicy/charges field `spec.rules[0].from[0].spiffeId`: '*' is only allowed"), "{err}");
        assert!(lines[1].starts_with("p.yaml:20:20: AuthorizationPolicy/charges field `spec.rules[0].to[0].paths[0].prefix`: path must start with '/'"), "{err}");
    }

    #[test]
    fn target_service_must_name_a_service() {
        let err = load(
            "apiVersion: meshwork.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: charges}
spec: {targetService: biling, action: DENY}
",
        )
        .err()
        .unwrap_or_default();
        assert_eq!(
            err,
            "p.yaml:14:8: AuthorizationPolicy/charges field `spec.targetService`: \"biling\" names no Service; known services: billing"
        );
    }

    #[test]
    fn schema_errors_name_the_field() {
        let err = load(
            "apiVersion: meshwork.dev/v1alpha1
kind: EgressPolicy
metadata: {name: e}
spec:
  to: [{host: api.stripe.com, port: 443}]
",
        )
        .err()
        .unwrap_or_default();
        assert!(
            err.starts_with("p.yaml:15:") && err.contains("EgressPolicy/e") && err.contains("port"),
            "{err}"
        );
    }
}
