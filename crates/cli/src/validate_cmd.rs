//! `meshwork validate DIR`: load and check a resource directory without starting anything, and
//! print one line per resource it defines, of every kind, then a count by kind.

use std::path::Path;
use std::process::ExitCode;

use api::ResourceSet;
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
    ];
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let by_kind: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    format!("{total} resources: {}", by_kind.join(", "))
}
