//! `meshwork validate DIR`: load and check a resource directory without starting anything, and
//! print one line per resource it defines, of every kind, then a count by kind.

use std::path::Path;
use std::process::ExitCode;

use api::ResourceSet;
use api::duration::format_millis;
use api::taxonomy::ServiceClassSpec;
use policy::{Action, Mode};

/// Runs `meshwork validate DIR`. An invalid directory is an error (exit 2) naming file, line,
/// resource and field.
pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let set = api::load_dir(dir)?;
    let Some(mesh) = set.mesh() else {
        anyhow::bail!("no Mesh resource")
    };
    let td = &mesh.spec.trust_domain;
    let ttl = mesh
        .spec
        .svid_ttl
        .map_or_else(|| "1h (default)".to_owned(), |t| t.to_string());
    println!(
        "mesh {} (trust domain {td}, SVID lifetime {ttl})",
        mesh.metadata.name
    );
    if let Some(tracing) = &mesh.spec.tracing {
        println!("tracing  {}", tracing_line(tracing));
    }
    for w in &set.workloads {
        let w = &w.resource;
        println!("workload {:<12} {}", w.metadata.name, w.spiffe_id(td));
    }
    for s in &set.services {
        let backends: Vec<_> = set
            .backends(&s.resource.spec)
            .map(|w| w.metadata.name.to_string())
            .collect();
        println!(
            "service  {:<12} -> {}",
            s.resource.metadata.name,
            backends.join(", ")
        );
    }
    print_traffic(&set);
    print_policies(&set);
    print_taxonomy(&set);
    for e in &set.registration_entries {
        let spec = &e.resource.spec;
        let selectors: Vec<String> = spec.selectors.iter().map(ToString::to_string).collect();
        println!(
            "entry    {:<12} {} <- {}",
            e.resource.metadata.name,
            spec.spiffe_id,
            selectors.join(" + ")
        );
    }
    println!("{}", counts(&set));
    Ok(ExitCode::SUCCESS)
}

/// `spec.tracing` in one line; what it leaves to the environment is named as such (validate
/// does not read the environment: the sidecars' may differ from this shell's).
fn tracing_line(t: &api::mesh::tracing::TracingSpec) -> String {
    let export = match &t.otlp {
        Some(o) => format!(
            "OTLP {} to {}",
            o.protocol.unwrap_or_default(),
            o.endpoint
        ),
        None => "OTLP to the sidecars' OTEL_EXPORTER_OTLP_* endpoint, else grpc to http://localhost:4317".to_owned(),
    };
    let sampling = match t.sampling.as_ref().and_then(|s| s.ratio) {
        Some(r) => format!("sampling {r} of new traces"),
        None => "sampling per OTEL_TRACES_SAMPLER, else every new trace".to_owned(),
    };
    let propagation = t.propagation.unwrap_or_default().as_str();
    format!("{export}, {sampling}, propagation {propagation}")
}

/// One line per route (`route    HTTPRoute/billing -> billing (1 rule: timeout 3s, 2 retries)`)
/// and one per Service with `spec.traffic` knobs, defaults filled in.
fn print_traffic(set: &ResourceSet) {
    let http = set.http_routes.iter().map(|r| {
        let spec = &r.resource.spec;
        let rules = spec.rules.iter().map(|rule| {
            let attempts = rule.retry.as_ref().map(|r| r.attempts);
            rule_summary(rule.timeouts, attempts, rule.backend_refs.len())
        });
        let parents = &spec.parent_refs;
        (
            "HTTPRoute",
            &r.resource.metadata.name,
            parents,
            rules.collect(),
        )
    });
    let grpc = set.grpc_routes.iter().map(|r| {
        let spec = &r.resource.spec;
        let rules = spec.rules.iter().map(|rule| {
            let attempts = rule.retry.as_ref().map(|r| r.attempts);
            rule_summary(rule.timeouts, attempts, rule.backend_refs.len())
        });
        let parents = &spec.parent_refs;
        (
            "GRPCRoute",
            &r.resource.metadata.name,
            parents,
            rules.collect(),
        )
    });
    for (kind, name, parents, rules) in http.chain(grpc) {
        let rules: Vec<String> = rules;
        let parents: Vec<String> = parents.iter().map(|p| p.name.to_string()).collect();
        println!(
            "route    {kind}/{name} -> {} ({}: {})",
            parents.join(", "),
            plural(rules.len(), "rule"),
            rules.join("; ")
        );
    }
    for s in &set.services {
        if s.resource.spec.traffic.is_some() {
            let knobs = traffic_line(&s.resource.spec.traffic_policy());
            println!("traffic  {:<12} {knobs}", s.resource.metadata.name);
        }
    }
}

/// `timeout 3s, 2 retries, 2 backends`; `no timeout, no retries` for a rule that sets nothing.
fn rule_summary(
    timeouts: Option<api::route::Timeouts>,
    attempts: Option<Option<api::route::RetryAttempts>>,
    backends: usize,
) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = timeouts.and_then(|t| t.millis().0) {
        parts.push(format!("timeout {}", format_millis(ms)));
    }
    match attempts.map(|a| a.map_or(api::route::DEFAULT_ATTEMPTS, |a| a.get())) {
        Some(1) => parts.push("1 retry".to_owned()),
        Some(n) if n > 1 => parts.push(format!("{n} retries")),
        _ => {}
    }
    if backends > 0 {
        parts.push(plural(backends, "backend"));
    }
    match parts.is_empty() {
        true => "no timeout, no retries".to_owned(),
        false => parts.join(", "),
    }
}

/// A Service's knobs in one line.
fn traffic_line(p: &api::contract::traffic::TrafficPolicy) -> String {
    let (b, o, c) = (&p.retry_budget, &p.outlier_detection, &p.circuit_breaker);
    format!(
        "connect timeout {}, idle {}, retry budget {}% + {} per {}, eject after {} failures for {} to {} (at most {}%), at most {} pending and {} in flight per endpoint",
        format_millis(p.connect_timeout_ms),
        format_millis(p.idle_timeout_ms),
        b.percent,
        b.min_retry_rate_count,
        format_millis(b.min_retry_rate_interval_ms),
        o.consecutive_failures,
        format_millis(o.base_ejection_ms),
        format_millis(o.max_ejection_ms),
        o.max_ejected_percent,
        c.max_pending_requests,
        c.max_requests,
    )
}

fn print_policies(set: &ResourceSet) {
    for p in &set.authorization_policies {
        let spec = &p.resource.spec;
        let action = match spec.action {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
        };
        let audit = match spec.mode {
            Mode::Enforce => "",
            Mode::Audit => ", audit only",
        };
        println!(
            "authz    {:<12} -> {} ({action}, {}{audit})",
            api::policy::policy_name(&p.resource.metadata),
            spec.target_service,
            plural(spec.rules.len(), "rule")
        );
    }
    for p in &set.egress_policies {
        println!(
            "egress   {:<12} {}",
            api::policy::policy_name(&p.resource.metadata),
            plural(p.resource.spec.to.len(), "destination")
        );
    }
}

fn print_taxonomy(set: &ResourceSet) {
    for c in &set.service_classes {
        println!(
            "class    {:<12} {}",
            c.resource.metadata.name,
            class_line(&c.resource.spec)
        );
    }
    for e in &set.environments {
        println!(
            "env      {:<12} {}",
            e.resource.metadata.name,
            plural(e.resource.spec.matches.len(), "match rule")
        );
    }
    for p in &set.service_policies {
        let rules: Vec<String> = p.resource.spec.rules.iter().map(rule_line).collect();
        println!(
            "svcpol   {:<12} {}",
            p.resource.metadata.name,
            rules.join("; ")
        );
    }
    for c in &set.service_claims {
        let spec = &c.resource.spec;
        let size = spec
            .size
            .map_or_else(|| "policy default".to_owned(), |s| s.to_string());
        println!(
            "claim    {:<12} {} (size {size}) -> {}",
            c.resource.metadata.name, spec.class, spec.bind_to
        );
    }
}

fn class_line(spec: &ServiceClassSpec) -> String {
    let sizes: Vec<String> = spec
        .sizes
        .iter()
        .map(|(size, limits)| format!("{size}: {limits}"))
        .collect();
    format!("{} [{}]", spec.kind, sizes.join("; "))
}

fn rule_line(r: &api::taxonomy::PolicyRuleSpec) -> String {
    format!(
        "{}: {} in {} -> {}",
        r.name, r.class, r.environment, r.provider
    )
}

/// `1 rule`, `2 rules`.
fn plural(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// `18 resources: 1 Mesh, 4 Workload, …`, every kind the directory has.
fn counts(set: &ResourceSet) -> String {
    let counts = [
        ("Mesh", set.meshes.len()),
        ("Workload", set.workloads.len()),
        ("Service", set.services.len()),
        ("AuthorizationPolicy", set.authorization_policies.len()),
        ("EgressPolicy", set.egress_policies.len()),
        ("ServiceClass", set.service_classes.len()),
        ("Environment", set.environments.len()),
        ("ServicePolicy", set.service_policies.len()),
        ("ServiceClaim", set.service_claims.len()),
        ("RegistrationEntry", set.registration_entries.len()),
        ("HTTPRoute", set.http_routes.len()),
        ("GRPCRoute", set.grpc_routes.len()),
    ];
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let by_kind: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    format!("{total} resources: {}", by_kind.join(", "))
}
