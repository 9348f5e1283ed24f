//! Routes → each service's [`ServiceTraffic`]: the rules of every route attached to it, and
//! every match of those rules in the Gateway API's precedence order, so that a proxy (through
//! [`crate::contract::traffic::Matcher`]) only has to take the first match that holds.
//!
//! Precedence, for matches of `HTTPRoute`s and `GRPCRoute`s alike (a `GRPCRoute` method match
//! is a path match on `/service/method`):
//! 1. an `Exact` path;
//! 2. a `RegularExpression` path (implementation-specific upstream; meshwork puts it before
//!    every prefix, so that a catch-all rule does not shadow it);
//! 3. a `PathPrefix`, the longest (in characters) first; no path is the prefix `/`;
//! 4. a method condition before none;
//! 5. more header conditions before fewer;
//! 6. then the route read first (files in name order, documents in file order — meshwork's
//!    "oldest"), then `namespace/name`, then the rule's and the match's order in the route.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::check::trim_slash;
use super::grpc::{GrpcMethodMatch, GrpcRetry, GrpcRouteMatch, GrpcRouteSpec};
use super::http::{HttpRetry, HttpRouteMatch, HttpRouteSpec, PathMatchType};
use super::{BackendRef, DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_MS, MatchType, ParentRef, Timeouts};
use crate::contract::traffic::{
    HeaderMatch, HeaderMatchKind, PathMatch, RetryRule, RouteKind, RouteRule, RuleMatch,
    ServiceTraffic, WeightedBackend,
};
use crate::load::{Loaded, Origin};
use crate::resource::Name;
use crate::set::ResourceSet;

/// One route of either kind, as the compiler and the reference checks see it.
pub(crate) struct RouteView<'a> {
    pub(crate) kind: RouteKind,
    /// `HTTPRoute/billing`, for errors.
    pub(crate) resource: String,
    pub(crate) namespace: &'a Name,
    pub(crate) name: &'a Name,
    pub(crate) origin: &'a Origin,
    pub(crate) parent_refs: &'a [ParentRef],
    pub(crate) rules: Vec<RuleView<'a>>,
}

/// One rule, its matches already in the contract's form (rule index not yet known).
pub(crate) struct RuleView<'a> {
    pub(crate) name: Option<&'a Name>,
    pub(crate) matches: Vec<RuleMatch>,
    pub(crate) backend_refs: &'a [BackendRef],
    pub(crate) timeouts: Option<Timeouts>,
    pub(crate) retry: Option<RetryRule>,
}

/// Every route of `set`, `HTTPRoute`s and `GRPCRoute`s together, in the order they were read.
pub(crate) fn routes(set: &ResourceSet) -> Vec<RouteView<'_>> {
    let http = set.http_routes.iter().map(http_view);
    let grpc = set.grpc_routes.iter().map(grpc_view);
    let mut all: Vec<RouteView<'_>> = http.chain(grpc).collect();
    all.sort_by(|a, b| {
        let key = |r: &RouteView<'_>| (r.origin.file.clone(), r.origin.line);
        key(a)
            .cmp(&key(b))
            .then_with(|| (a.namespace, a.name).cmp(&(b.namespace, b.name)))
    });
    all
}

fn http_view(r: &Loaded<HttpRouteSpec>) -> RouteView<'_> {
    let meta = &r.resource.metadata;
    let rules = r.resource.spec.rules.iter().map(|rule| RuleView {
        name: rule.name.as_ref(),
        matches: rule.matches.iter().map(http_match).collect(),
        backend_refs: &rule.backend_refs,
        timeouts: rule.timeouts,
        retry: rule.retry.as_ref().map(http_retry),
    });
    RouteView {
        kind: RouteKind::Http,
        resource: format!("HTTPRoute/{}", meta.name),
        namespace: &meta.namespace,
        name: &meta.name,
        origin: &r.origin,
        parent_refs: &r.resource.spec.parent_refs,
        rules: rules.collect(),
    }
}

fn grpc_view(r: &Loaded<GrpcRouteSpec>) -> RouteView<'_> {
    let meta = &r.resource.metadata;
    let rules = r.resource.spec.rules.iter().map(|rule| RuleView {
        name: rule.name.as_ref(),
        matches: rule.matches.iter().map(grpc_match).collect(),
        backend_refs: &rule.backend_refs,
        timeouts: rule.timeouts,
        retry: rule.retry.as_ref().map(grpc_retry),
    });
    RouteView {
        kind: RouteKind::Grpc,
        resource: format!("GRPCRoute/{}", meta.name),
        namespace: &meta.namespace,
        name: &meta.name,
        origin: &r.origin,
        parent_refs: &r.resource.spec.parent_refs,
        rules: rules.collect(),
    }
}

fn header_matches(headers: &[super::HeaderMatchSpec]) -> Vec<HeaderMatch> {
    headers
        .iter()
        .map(|h| HeaderMatch {
            name: h.name.as_str().to_owned(),
            kind: match h.kind {
                MatchType::Exact => HeaderMatchKind::Exact,
                MatchType::RegularExpression => HeaderMatchKind::RegularExpression,
            },
            value: h.value.clone(),
        })
        .collect()
}

fn http_match(m: &HttpRouteMatch) -> RuleMatch {
    let path = m.path.as_ref().and_then(|p| match p.kind {
        PathMatchType::Exact => Some(PathMatch::Exact(trim_slash(&p.value).to_owned())),
        // `/` is every path: the same as no condition, and cheaper to test.
        PathMatchType::PathPrefix => match trim_slash(&p.value) {
            "/" => None,
            prefix => Some(PathMatch::PathPrefix(prefix.to_owned())),
        },
        PathMatchType::RegularExpression => Some(PathMatch::RegularExpression(p.value.clone())),
    });
    RuleMatch {
        rule: 0,
        path,
        method: m.method.map(|m| m.as_str().to_owned()),
        headers: header_matches(&m.headers),
    }
}

fn grpc_match(m: &GrpcRouteMatch) -> RuleMatch {
    RuleMatch {
        rule: 0,
        path: m.method.as_ref().and_then(grpc_path),
        method: None,
        headers: header_matches(&m.headers),
    }
}

/// A gRPC method match as a path match on `/package.Service/Method`.
pub(crate) fn grpc_path(m: &GrpcMethodMatch) -> Option<PathMatch> {
    let service = m
        .service
        .as_deref()
        .map(|s| s.strip_prefix('.').unwrap_or(s));
    let method = m.method.as_deref();
    match m.kind {
        MatchType::Exact => match (service, method) {
            (Some(s), Some(m)) => Some(PathMatch::Exact(format!("/{s}/{m}"))),
            (Some(s), None) => Some(PathMatch::PathPrefix(format!("/{s}"))),
            // Identifiers hold no expression syntax: no escaping needed.
            (None, Some(m)) => Some(PathMatch::RegularExpression(format!("/[^/]+/{m}"))),
            (None, None) => None,
        },
        MatchType::RegularExpression => {
            let part =
                |p: Option<&str>| p.map_or_else(|| "[^/]+".to_owned(), |p| format!("(?:{p})"));
            Some(PathMatch::RegularExpression(format!(
                "/{}/{}",
                part(service),
                part(method)
            )))
        }
    }
}

fn backoff(base: Option<super::RetryBackoff>) -> (u64, u64) {
    let base = base.map_or(DEFAULT_BACKOFF_MS, super::RetryBackoff::as_millis);
    (base, base.saturating_mul(10))
}

fn http_retry(r: &HttpRetry) -> RetryRule {
    let (backoff_ms, max_backoff_ms) = backoff(r.backoff);
    RetryRule {
        attempts: r.attempts.map_or(DEFAULT_ATTEMPTS, |a| a.get()),
        codes: r.codes.iter().map(|c| c.get()).collect(),
        grpc_codes: Vec::new(),
        backoff_ms,
        max_backoff_ms,
    }
}

fn grpc_retry(r: &GrpcRetry) -> RetryRule {
    let (backoff_ms, max_backoff_ms) = backoff(r.backoff);
    RetryRule {
        attempts: r.attempts.map_or(DEFAULT_ATTEMPTS, |a| a.get()),
        codes: Vec::new(),
        grpc_codes: r.codes.iter().map(|c| c.get()).collect(),
        backoff_ms,
        max_backoff_ms,
    }
}

/// `HTTPRoute/default/billing rule 0`, or the rule's `name` in place of its index.
fn rule_name(route: &RouteView<'_>, index: usize, rule: &RuleView<'_>) -> String {
    let kind = match route.kind {
        RouteKind::Http => "HTTPRoute",
        RouteKind::Grpc => "GRPCRoute",
    };
    let which = rule.name.map_or_else(|| index.to_string(), Name::to_string);
    format!("{kind}/{}/{} rule {which}", route.namespace, route.name)
}

/// A rule in the contract's form.
fn route_rule(route: &RouteView<'_>, index: usize, rule: &RuleView<'_>) -> RouteRule {
    let (request_timeout_ms, backend_request_timeout_ms) =
        rule.timeouts.map_or((None, None), |t| t.millis());
    RouteRule {
        name: rule_name(route, index, rule),
        kind: route.kind,
        backends: rule
            .backend_refs
            .iter()
            .map(|b| WeightedBackend {
                service: b.name.to_string(),
                weight: b.weight.map_or(1, |w| w.get()),
            })
            .collect(),
        request_timeout_ms,
        backend_request_timeout_ms,
        retry: rule.retry.clone(),
    }
}

/// The precedence key of a match (smaller first); see the module docs.
fn precedence(m: &RuleMatch) -> (u8, Reverse<usize>, bool, Reverse<usize>) {
    let (rank, len) = match &m.path {
        Some(PathMatch::Exact(_)) => (0, 0),
        Some(PathMatch::RegularExpression(_)) => (1, 0),
        Some(PathMatch::PathPrefix(p)) => (2, p.len()),
        None => (2, 1),
    };
    (
        rank,
        Reverse(len),
        m.method.is_none(),
        Reverse(m.headers.len()),
    )
}

/// Whether `parent` names the Service `namespace/name`.
fn attaches(route: &RouteView<'_>, parent: &ParentRef, namespace: &Name, name: &Name) -> bool {
    parent.namespace.as_ref().unwrap_or(route.namespace) == namespace && &parent.name == name
}

/// The traffic of one service: every rule of every route attached to it, matches in
/// precedence order, and its own knobs.
pub fn service_traffic(set: &ResourceSet, namespace: &Name, name: &Name) -> ServiceTraffic {
    let mut traffic = ServiceTraffic::default();
    let mut keyed = Vec::new();
    for (order, route) in routes(set).iter().enumerate() {
        if !route
            .parent_refs
            .iter()
            .any(|p| attaches(route, p, namespace, name))
        {
            continue;
        }
        for (i, rule) in route.rules.iter().enumerate() {
            let index = traffic.rules.len();
            traffic.rules.push(route_rule(route, i, rule));
            // A rule without matches matches every request.
            let catch_all = [RuleMatch::default()];
            let matches = match rule.matches.is_empty() {
                true => &catch_all[..],
                false => &rule.matches[..],
            };
            for (j, m) in matches.iter().enumerate() {
                let m = RuleMatch {
                    rule: index,
                    ..m.clone()
                };
                keyed.push(((precedence(&m), order, i, j), m));
            }
        }
    }
    keyed.sort_by_key(|(key, _)| *key);
    traffic.matches = keyed.into_iter().map(|(_, m)| m).collect();
    traffic
}

/// Every Service's traffic, by service name (as [`crate::contract::Snapshot`] keys them),
/// with each Service's `spec.traffic` knobs.
pub fn traffic(set: &ResourceSet) -> BTreeMap<String, ServiceTraffic> {
    set.services
        .iter()
        .map(|s| {
            let meta = &s.resource.metadata;
            let mut traffic = service_traffic(set, &meta.namespace, &meta.name);
            traffic.policy = s.resource.spec.traffic_policy();
            (meta.name.to_string(), traffic)
        })
        .collect()
}

#[cfg(test)]
mod tests;
