//! Resolution: catalog ids + context → class → environment → policy rule → provider and size.
//! Every step is recorded so the result can explain itself; every refusal names its rule.

use serde::{Deserialize, Serialize};

use super::{
    PlanChoice, RequestContext, Rule, ServiceKind, Size, SizeLimits, Taxonomy, TeamSource,
};
use crate::originating::OriginatingIdentity;

/// Why a request could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The service id is not in the catalog (a malformed request).
    #[error("service_id {0:?} is not in the catalog")]
    UnknownService(String),
    /// The plan id is not in the catalog (a malformed request).
    #[error("plan_id {0:?} is not in the catalog")]
    UnknownPlan(String),
    /// The plan exists but belongs to another service (a malformed request).
    #[error("plan_id {plan:?} is a plan of {plan_class}, not of {class}")]
    PlanNotInService {
        /// The plan id sent.
        plan: String,
        /// The class the plan belongs to.
        plan_class: String,
        /// The class the service id names.
        class: String,
    },
    /// The administrator's taxonomy refuses the request.
    #[error("refused by {rule}: {reason}")]
    Refused {
        /// What refused: `ServicePolicy rule default/prod-postgresql`, `Environment selection`, ...
        rule: String,
        /// Why, in terms of the request.
        reason: String,
    },
}

/// What a request asks for, before the taxonomy decides.
#[derive(Debug, Clone, Copy)]
pub struct ResolveRequest<'a> {
    /// OSB `service_id`.
    pub service_id: &'a str,
    /// OSB `plan_id`.
    pub plan_id: &'a str,
    /// The request's context fields.
    pub context: &'a RequestContext,
    /// The decoded originating identity, if sent.
    pub identity: Option<&'a OriginatingIdentity>,
}

/// The outcome of resolution, recorded with the instance and shown to the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// `ServiceClass` name.
    pub class: String,
    /// The class's kind.
    pub kind: ServiceKind,
    /// Catalog plan name (`default`, `small`, ...).
    pub plan: String,
    /// `Environment` name.
    pub environment: String,
    /// Which match rule selected it and on what values.
    pub environment_reason: String,
    /// `policy/rule` id.
    pub rule: String,
    /// Provider name.
    pub provider: String,
    /// The size picked.
    pub size: Size,
    /// `requested` or `policy default`.
    pub size_reason: String,
    /// The size's limits.
    pub limits: SizeLimits,
    /// The team the quota is counted against, if the rule has a quota.
    pub team: Option<String>,
    /// The rule's per-team quota.
    pub quota: Option<u32>,
    /// The rule's deletion protection at resolution time.
    pub deletion_protection: bool,
    /// The rule's cascade-delete flag at resolution time.
    pub cascade_delete: bool,
    /// Whether the rule only allows asynchronous operations.
    pub asynchronous: bool,
    /// Binding credential lifetime.
    pub credential_ttl_seconds: Option<u64>,
}

impl Resolution {
    /// One line: class → environment → rule → provider/size.
    pub fn explain(&self) -> String {
        format!(
            "class {} → environment {} ({}) → rule {} → provider {}, size {} ({}; {})",
            self.class,
            self.environment,
            self.environment_reason,
            self.rule,
            self.provider,
            self.size,
            self.size_reason,
            self.limits
        )
    }
}

fn refused(rule: impl Into<String>, reason: impl Into<String>) -> ResolveError {
    ResolveError::Refused {
        rule: rule.into(),
        reason: reason.into(),
    }
}

impl Taxonomy {
    /// The class and plan named by catalog ids, checked to belong together.
    pub fn class_and_plan(
        &self,
        service_id: &str,
        plan_id: &str,
    ) -> Result<(&str, PlanChoice), ResolveError> {
        let class = self
            .service(service_id)
            .ok_or_else(|| ResolveError::UnknownService(service_id.to_owned()))?;
        let (plan_class, choice) = self
            .plan(plan_id)
            .ok_or_else(|| ResolveError::UnknownPlan(plan_id.to_owned()))?;
        if plan_class != class {
            return Err(ResolveError::PlanNotInService {
                plan: plan_id.to_owned(),
                plan_class: plan_class.to_owned(),
                class: class.to_owned(),
            });
        }
        Ok((class, choice))
    }

    /// Resolves a new instance: selects the environment from the context, then the rule.
    pub fn resolve(&self, req: ResolveRequest<'_>) -> Result<Resolution, ResolveError> {
        let (class, choice) = self.class_and_plan(req.service_id, req.plan_id)?;
        let (environment, reason) = self.select_environment(req.context)?;
        self.resolve_in(class, choice, environment, reason, req)
    }

    /// Selects exactly one environment; none or several matching is a refusal.
    pub fn select_environment(&self, ctx: &RequestContext) -> Result<(&str, String), ResolveError> {
        let matched: Vec<(&str, String)> = self
            .environments()
            .iter()
            .filter_map(|(name, env)| {
                env.select(ctx)
                    .map(|(i, why)| (name.as_str(), format!("match[{i}]: {why}")))
            })
            .collect();
        match matched.len() {
            1 => Ok(matched.into_iter().next().unwrap_or_default()),
            0 => Err(refused(
                "Environment selection",
                format!(
                    "no Environment matches the request context ({}); environments: {}",
                    describe_context(ctx),
                    self.environments()
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            _ => Err(refused(
                "Environment selection",
                format!(
                    "the request context matches several environments ({}); their match rules must not overlap",
                    matched
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// Resolves within a known environment (also used when updating an instance).
    pub fn resolve_in(
        &self,
        class: &str,
        choice: PlanChoice,
        environment: &str,
        environment_reason: String,
        req: ResolveRequest<'_>,
    ) -> Result<Resolution, ResolveError> {
        let rule = self.rule_for(class, environment)?;
        let r = &rule.spec;
        let (size, size_reason) = pick_size(rule, choice, environment)?;
        let kind_spec = self
            .classes()
            .get(class)
            .ok_or_else(|| ResolveError::UnknownService(class.to_owned()))?;
        let limits = kind_spec.sizes.get(&size).copied().ok_or_else(|| {
            refused(
                format!("ServiceClass {class}"),
                format!("defines no size {size}"),
            )
        })?;
        Ok(Resolution {
            class: class.to_owned(),
            kind: kind_spec.kind,
            plan: choice.name().to_owned(),
            environment: environment.to_owned(),
            environment_reason,
            rule: rule.id(),
            provider: r.provider.clone(),
            size,
            size_reason: size_reason.to_owned(),
            limits,
            team: team_of(rule, req)?,
            quota: r.quota.as_ref().map(|q| q.instances_per_team.get()),
            deletion_protection: r.deletion_protection,
            cascade_delete: r.cascade_delete,
            asynchronous: r.asynchronous,
            credential_ttl_seconds: r.credential_ttl_seconds.map(|t| t.get()),
        })
    }

    fn rule_for(&self, class: &str, environment: &str) -> Result<&Rule, ResolveError> {
        self.rules()
            .iter()
            .find(|r| r.spec.class == class && r.spec.environment == environment)
            .ok_or_else(|| {
                refused(
                    "ServicePolicy",
                    format!("no rule covers class {class} in environment {environment}"),
                )
            })
    }
}

fn pick_size(
    rule: &Rule,
    choice: PlanChoice,
    environment: &str,
) -> Result<(Size, &'static str), ResolveError> {
    let r = &rule.spec;
    match choice {
        PlanChoice::Default => Ok((r.default_size, "policy default")),
        PlanChoice::Sized(s) if r.sizes.contains(&s) => Ok((s, "requested")),
        PlanChoice::Sized(s) => {
            let allowed: Vec<&str> = r.sizes.iter().map(|s| s.as_str()).collect();
            Err(refused(
                format!("ServicePolicy rule {}", rule.id()),
                format!(
                    "size {s} is not allowed in environment {environment} (sizes: {})",
                    allowed.join(", ")
                ),
            ))
        }
    }
}

fn team_of(rule: &Rule, req: ResolveRequest<'_>) -> Result<Option<String>, ResolveError> {
    let Some(quota) = &rule.spec.quota else {
        return Ok(None);
    };
    let team = match &quota.team_from {
        TeamSource::Context(key) => req.context.get(*key),
        TeamSource::Identity(field) => req.identity.and_then(|i| i.field(field)),
    };
    match team {
        Some(t) if !t.is_empty() => Ok(Some(t.to_owned())),
        _ => Err(refused(
            format!("ServicePolicy rule {}", rule.id()),
            format!(
                "its quota counts instances per team from {}, but the request carries none",
                quota.team_from
            ),
        )),
    }
}

fn describe_context(ctx: &RequestContext) -> String {
    let parts: Vec<String> = super::ContextKey::ALL
        .iter()
        .filter_map(|k| ctx.get(*k).map(|v| format!("{k}={v:?}")))
        .collect();
    if parts.is_empty() {
        "no recognised fields".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::taxonomy::ids;
    use serde_json::json;

    fn req<'a>(plan: &'a str, ctx: &'a RequestContext) -> ResolveRequest<'a> {
        ResolveRequest {
            service_id: "",
            plan_id: plan,
            context: ctx,
            identity: None,
        }
    }

    fn resolve(plan: PlanChoice, ctx: serde_json::Value) -> Result<Resolution, ResolveError> {
        let t = Taxonomy::demo();
        let ctx = RequestContext::new(ctx.as_object(), None);
        let service = ids::service_id("postgresql");
        let plan = ids::plan_id("postgresql", plan);
        t.resolve(ResolveRequest {
            service_id: &service,
            ..req(&plan, &ctx)
        })
    }

    #[test]
    fn dev_and_prod_pick_different_providers_and_sizes() {
        let dev = resolve(PlanChoice::Default, json!({"namespace": "dev-a"})).unwrap();
        assert_eq!(
            (dev.provider.as_str(), dev.size),
            ("postgres-shared", Size::Small)
        );
        let prod = resolve(PlanChoice::Default, json!({"namespace": "prod-a"})).unwrap();
        assert_eq!(
            (prod.provider.as_str(), prod.size),
            ("postgres-prod", Size::Medium)
        );
        assert_eq!(prod.team.as_deref(), Some("prod-a"));
        let text = prod.explain();
        assert!(
            text.contains("environment prod (match[0]: namespace \"prod-a\" matches \"prod*\")"),
            "{text}"
        );
        assert!(text.contains("rule default/prod-postgresql"), "{text}");
    }

    #[test]
    fn refusals_name_the_rule() {
        let err = resolve(
            PlanChoice::Sized(Size::Small),
            json!({"namespace": "prod-a"}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("ServicePolicy rule default/prod-postgresql: size small is not allowed"),
            "{err}"
        );
        let err = resolve(PlanChoice::Default, json!({"namespace": "staging"})).unwrap_err();
        assert!(
            err.to_string()
                .contains("Environment selection: no Environment matches"),
            "{err}"
        );
        assert!(err.to_string().contains("namespace=\"staging\""), "{err}");
    }

    #[test]
    fn mismatched_ids_are_malformed() {
        let t = Taxonomy::demo();
        let ctx = RequestContext::default();
        let service = ids::service_id("mysql");
        let plan = ids::plan_id("postgresql", PlanChoice::Default);
        let err = t
            .resolve(ResolveRequest {
                service_id: &service,
                ..req(&plan, &ctx)
            })
            .unwrap_err();
        assert!(
            matches!(err, ResolveError::PlanNotInService { .. }),
            "{err}"
        );
        let err = t
            .resolve(ResolveRequest {
                service_id: "nope",
                ..req(&plan, &ctx)
            })
            .unwrap_err();
        assert_eq!(err, ResolveError::UnknownService("nope".into()));
    }
}
