//! The rules of a route its field types cannot state: counts, references, values that depend
//! on a sibling field (a header's expression, a path's type), `backendRequest ≤ request`.
//! Every problem of a route is reported (each at its field's line), like policies.

use std::collections::BTreeSet;

use policy::NormalizedPath;

use super::grpc::{GrpcMethodMatch, GrpcRouteSpec};
use super::http::{HttpRouteSpec, PathMatchSpec, PathMatchType};
use super::{BackendRef, HeaderMatchSpec, MatchType, ParentRef, Timeouts};
use crate::contract::traffic::{PathMatch, REGEX_MAX_LEN, anchored_header_regex, anchored_regex};
use crate::load::{LoadError, Loaded, invalid};
use crate::resource::Name;
use crate::set::ResourceSet;

/// Upstream's limits (`maxItems` in the Gateway API CRDs).
const MAX_PARENT_REFS: usize = 32;
const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 64;
const MAX_BACKEND_REFS: usize = 16;
const MAX_HEADERS: usize = 16;
const MAX_VALUE: usize = 4096;
const MAX_PATH: usize = 1024;

/// Collects a route's problems.
struct Problems<'a, S> {
    route: &'a Loaded<S>,
    resource: String,
    found: Vec<LoadError>,
}

impl<'a, S> Problems<'a, S> {
    fn new(kind: &str, route: &'a Loaded<S>) -> Self {
        let resource = format!("{kind}/{}", route.resource.metadata.name);
        Problems {
            route,
            resource,
            found: Vec::new(),
        }
    }

    fn add(&mut self, field: &str, message: &str) {
        let error = invalid(&self.route.origin, Some(&self.resource), field, message);
        self.found.push(error);
    }

    fn finish(self) -> Result<(), LoadError> {
        match self.found.is_empty() {
            true => Ok(()),
            false => Err(LoadError::from_many(self.found)),
        }
    }

    fn namespace(&self) -> &Name {
        &self.route.resource.metadata.namespace
    }
}

/// An `HTTPRoute`'s own rules (no references to other resources).
pub(crate) fn check_http(route: &Loaded<HttpRouteSpec>) -> Result<(), LoadError> {
    let mut p = Problems::new("HTTPRoute", route);
    let spec = &route.resource.spec;
    check_head(&mut p, &spec.parent_refs, &spec.hostnames, spec.rules.len());
    let names = spec.rules.iter().map(|r| r.name.as_ref());
    check_rule_names(&mut p, names);
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        check_count(
            &mut p,
            &format!("{at}.matches"),
            rule.matches.len(),
            MAX_MATCHES,
        );
        for (j, m) in rule.matches.iter().enumerate() {
            let at = format!("{at}.matches[{j}]");
            if let Some(path) = &m.path {
                check_path(&mut p, &format!("{at}.path.value"), path);
            }
            check_headers(&mut p, &format!("{at}.headers"), &m.headers);
        }
        check_backends(&mut p, &format!("{at}.backendRefs"), &rule.backend_refs);
        check_timeouts(&mut p, &format!("{at}.timeouts"), rule.timeouts.as_ref());
    }
    p.finish()
}

/// A `GRPCRoute`'s own rules.
pub(crate) fn check_grpc(route: &Loaded<GrpcRouteSpec>) -> Result<(), LoadError> {
    let mut p = Problems::new("GRPCRoute", route);
    let spec = &route.resource.spec;
    check_head(&mut p, &spec.parent_refs, &spec.hostnames, spec.rules.len());
    check_rule_names(&mut p, spec.rules.iter().map(|r| r.name.as_ref()));
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        check_count(
            &mut p,
            &format!("{at}.matches"),
            rule.matches.len(),
            MAX_MATCHES,
        );
        for (j, m) in rule.matches.iter().enumerate() {
            let at = format!("{at}.matches[{j}]");
            if let Some(method) = &m.method {
                check_grpc_method(&mut p, &format!("{at}.method"), method);
            }
            check_headers(&mut p, &format!("{at}.headers"), &m.headers);
        }
        check_backends(&mut p, &format!("{at}.backendRefs"), &rule.backend_refs);
        check_timeouts(&mut p, &format!("{at}.timeouts"), rule.timeouts.as_ref());
    }
    p.finish()
}

fn check_count<S>(p: &mut Problems<'_, S>, field: &str, n: usize, max: usize) {
    if n > max {
        p.add(
            field,
            &format!("has {n} entries; the Gateway API allows at most {max}"),
        );
    }
}

fn check_head<S>(p: &mut Problems<'_, S>, parents: &[ParentRef], hosts: &[String], rules: usize) {
    if parents.is_empty() {
        let msg = "must name at least one Service the route attaches to \
                   ({group: \"\", kind: Service, name: NAME})";
        p.add("spec.parentRefs", msg);
    }
    check_count(p, "spec.parentRefs", parents.len(), MAX_PARENT_REFS);
    if !hosts.is_empty() {
        let msg = "must be empty: a route attached to a Service (GAMMA) applies to every \
                   request to the Service, whatever its Host; meshwork does not match on hosts";
        p.add("spec.hostnames", msg);
    }
    check_count(p, "spec.rules", rules, MAX_RULES);
    for (i, parent) in parents.iter().enumerate() {
        check_parent(p, &format!("spec.parentRefs[{i}]"), parent);
    }
}

/// A parent is a Service of this namespace, its group and kind given explicitly.
fn check_parent<S>(p: &mut Problems<'_, S>, at: &str, parent: &ParentRef) {
    match parent.group.as_deref() {
        Some("" | "core" | crate::crd::GROUP) => {}
        Some(other) => p.add(
            &format!("{at}.group"),
            &format!(
                "{other:?}: a route attaches to a Service of group \"\" (core) or meshwork.dev"
            ),
        ),
        None => p.add(
            &format!("{at}.group"),
            "is required: the Gateway API's default is gateway.networking.k8s.io (a Gateway), \
             and meshwork routes attach to Services: write group: \"\" (or meshwork.dev)",
        ),
    }
    match parent.kind.as_deref() {
        Some("Service") => {}
        Some(other) => p.add(
            &format!("{at}.kind"),
            &format!("{other:?}: meshwork routes attach to a Service (kind: Service)"),
        ),
        None => p.add(
            &format!("{at}.kind"),
            "is required: the Gateway API's default is Gateway, which meshwork does not \
             have; write kind: Service",
        ),
    }
    check_namespace(p, &format!("{at}.namespace"), parent.namespace.as_ref());
}

fn check_namespace<S>(p: &mut Problems<'_, S>, field: &str, namespace: Option<&Name>) {
    if let Some(ns) = namespace
        && ns != p.namespace()
    {
        let msg = format!(
            "{:?} is not the route's namespace {:?}: cross-namespace references need a \
             ReferenceGrant, which meshwork does not implement",
            ns.as_str(),
            p.namespace().as_str()
        );
        p.add(field, &msg);
    }
}

fn check_rule_names<'n, S>(p: &mut Problems<'_, S>, names: impl Iterator<Item = Option<&'n Name>>) {
    let mut seen = BTreeSet::new();
    for (i, name) in names.enumerate() {
        if let Some(name) = name
            && !seen.insert(name)
        {
            p.add(
                &format!("spec.rules[{i}].name"),
                &format!(
                    "{:?} names another rule of this route already; rule names are unique",
                    name.as_str()
                ),
            );
        }
    }
}

fn check_path<S>(p: &mut Problems<'_, S>, field: &str, path: &PathMatchSpec) {
    let value = path.value.as_str();
    if value.len() > MAX_PATH {
        p.add(
            field,
            &format!("is {} bytes long; at most {MAX_PATH}", value.len()),
        );
        return;
    }
    match path.kind {
        PathMatchType::RegularExpression => check_regex(p, field, value),
        PathMatchType::Exact | PathMatchType::PathPrefix => {
            if !value.starts_with('/') {
                p.add(field, &format!("{value:?} must start with '/'"));
                return;
            }
            match NormalizedPath::parse(value) {
                Err(e) => p.add(
                    field,
                    &format!("{value:?} is not a path meshwork accepts: {e}"),
                ),
                // Requests are matched in normal form; a trailing `/` is ignored (as upstream
                // says of prefixes, and a normalised path never ends in one).
                Ok(normal) if normal.as_str() != trim_slash(value) => p.add(
                    field,
                    &format!(
                        "{value:?} is not in normal form, so no request would match it as \
                         written; write {:?}",
                        normal.as_str()
                    ),
                ),
                Ok(_) => {}
            }
        }
    }
}

/// The value without a trailing `/` (the root stays `/`).
pub(crate) fn trim_slash(value: &str) -> &str {
    match value.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

fn check_regex<S>(p: &mut Problems<'_, S>, field: &str, pattern: &str) {
    check_compiles(p, field, pattern, anchored_regex(pattern).err());
}

fn check_compiles<S>(
    p: &mut Problems<'_, S>,
    field: &str,
    pattern: &str,
    error: Option<regex::Error>,
) {
    if pattern.len() > REGEX_MAX_LEN {
        let msg = format!(
            "is a {} byte expression; at most {REGEX_MAX_LEN} bytes are accepted",
            pattern.len()
        );
        p.add(field, &msg);
    } else if let Some(e) = error {
        let why = e.to_string();
        let why = why.lines().last().unwrap_or_default().trim().to_owned();
        p.add(field, &format!("{pattern:?} is not a regular expression meshwork accepts (Rust regex syntax, at most 1024 bytes and 256 KiB compiled): {why}"));
    }
}

fn check_headers<S>(p: &mut Problems<'_, S>, field: &str, headers: &[HeaderMatchSpec]) {
    check_count(p, field, headers.len(), MAX_HEADERS);
    let mut seen = BTreeSet::new();
    for (k, h) in headers.iter().enumerate() {
        let at = format!("{field}[{k}]");
        if !seen.insert(h.name.as_str()) {
            let msg = format!(
                "{:?} is matched twice in this match; header names are unique (case-insensitive)",
                h.name.as_str()
            );
            p.add(&format!("{at}.name"), &msg);
        }
        if h.value.len() > MAX_VALUE {
            p.add(
                &format!("{at}.value"),
                &format!("is {} bytes long; at most {MAX_VALUE}", h.value.len()),
            );
        } else if h.kind == MatchType::RegularExpression {
            let error = anchored_header_regex(&h.value).err();
            check_compiles(p, &format!("{at}.value"), &h.value, error);
        }
    }
}

fn check_backends<S>(p: &mut Problems<'_, S>, field: &str, backends: &[BackendRef]) {
    check_count(p, field, backends.len(), MAX_BACKEND_REFS);
    for (k, b) in backends.iter().enumerate() {
        let at = format!("{field}[{k}]");
        if let Some(group) = b.group.as_deref()
            && !matches!(group, "" | "core" | crate::crd::GROUP)
        {
            let msg =
                format!("{group:?}: a backend is a Service of group \"\" (core) or meshwork.dev");
            p.add(&format!("{at}.group"), &msg);
        }
        if let Some(kind) = b.kind.as_deref()
            && kind != "Service"
        {
            p.add(
                &format!("{at}.kind"),
                &format!("{kind:?}: a backend is a Service"),
            );
        }
        check_namespace(p, &format!("{at}.namespace"), b.namespace.as_ref());
    }
    let all_zero = backends
        .iter()
        .all(|b| b.weight.is_some_and(|w| w.get() == 0));
    if !backends.is_empty() && all_zero {
        let msg = "every backend has weight 0, so no request could be served; give one a weight";
        p.add(field, msg);
    }
}

fn check_timeouts<S>(p: &mut Problems<'_, S>, field: &str, timeouts: Option<&Timeouts>) {
    let Some(t) = timeouts else { return };
    // GEP-1742: backendRequest ≤ request, unless request is 0s (no limit).
    if let (Some(request), Some(backend)) = (t.request, t.backend_request)
        && !request.is_zero()
        && backend > request
    {
        let msg = format!(
            "{backend} is longer than timeouts.request {request}: each try must fit in the whole \
             exchange (GEP-1742)"
        );
        p.add(&format!("{field}.backendRequest"), &msg);
    }
}

/// A gRPC service name (`pkg.v1.Service`, upstream's pattern for `Exact` matches).
fn is_grpc_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    !s.is_empty() && s.split('.').all(is_grpc_ident)
}

fn is_grpc_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_grpc_method<S>(p: &mut Problems<'_, S>, field: &str, m: &GrpcMethodMatch) {
    let before = p.found.len();
    if m.service.is_none() && m.method.is_none() {
        p.add(field, "must give service, method or both");
    }
    let parts = [("service", &m.service), ("method", &m.method)];
    for (name, value) in parts {
        let Some(value) = value else { continue };
        let at = format!("{field}.{name}");
        match m.kind {
            MatchType::RegularExpression => check_regex(p, &at, value),
            MatchType::Exact => {
                let ok = match name {
                    "service" => is_grpc_service(value),
                    _ => is_grpc_ident(value),
                };
                if !ok {
                    let want = match name {
                        "service" => "a dotted name such as billing.v1.Charges",
                        _ => "an identifier such as Create",
                    };
                    p.add(&at, &format!("{value:?} is not a gRPC {name} name: {want}"));
                }
            }
        }
    }
    // Each part compiles; so must the path expression they make together (the size limit).
    if p.found.len() == before
        && let Some(PathMatch::RegularExpression(re)) = super::compile::grpc_path(m)
    {
        check_regex(p, field, &re);
    }
}

/// Every route's `parentRefs` and `backendRefs` name a Service of the set.
pub(crate) fn check_references(set: &ResourceSet) -> Result<(), LoadError> {
    let mut found = Vec::new();
    let known = |ns: &Name, name: &Name| {
        set.services
            .iter()
            .any(|s| &s.resource.metadata.namespace == ns && &s.resource.metadata.name == name)
    };
    let routes = super::compile::routes(set);
    for route in &routes {
        let ns = &route.namespace;
        let missing = |field: String, name: &Name| {
            let msg = format!(
                "{:?} names no Service in namespace {:?}",
                name.as_str(),
                ns.as_str()
            );
            invalid(route.origin, Some(&route.resource), &field, &msg)
        };
        for (i, parent) in route.parent_refs.iter().enumerate() {
            if !known(ns, &parent.name) {
                found.push(missing(format!("spec.parentRefs[{i}].name"), &parent.name));
            }
        }
        for (i, rule) in route.rules.iter().enumerate() {
            for (k, b) in rule.backend_refs.iter().enumerate() {
                if !known(ns, &b.name) {
                    let field = format!("spec.rules[{i}].backendRefs[{k}].name");
                    found.push(missing(field, &b.name));
                }
            }
        }
    }
    match found.is_empty() {
        true => Ok(()),
        false => Err(LoadError::from_many(found)),
    }
}

#[cfg(test)]
mod tests;
