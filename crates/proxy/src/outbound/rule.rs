//! A service's route rules, compiled once per snapshot: which rule a request selects, and
//! where that rule's backends are in the route table.
//!
//! The selection is one function, [`CompiledTraffic::select`], so the shared matcher of
//! the `api` crate can replace it without touching the layers. Until then this one supports
//! exact and prefix paths, methods and exact header values; a regular-expression condition
//! never matches (and is logged once, when the snapshot is compiled).

use api::contract::traffic::{
    HeaderMatchKind, PathMatch, RouteRule, RuleMatch, ServiceTraffic, TrafficPolicy,
};
use http::{HeaderMap, Method};
use policy::NormalizedPath;

use crate::route_classifier::RouteClassifier;

/// One backend of a rule: the index of a mesh service in the route table (`None`: the name
/// is no mesh service, and requests split to it fail) and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// The service's index, as [`crate::routes::RouteTable::service_at`] takes it.
    pub service: Option<usize>,
    /// Its share (relative to the rule's other backends).
    pub weight: u32,
}

/// A service's traffic configuration with backends resolved to table indices.
#[derive(Debug, Default)]
pub struct CompiledTraffic {
    traffic: ServiceTraffic,
    /// Per rule, its backends; empty: the parent service.
    backends: Vec<Vec<Backend>>,
}

impl CompiledTraffic {
    /// Compiles the traffic of service `name`, resolving backend names with `services`.
    pub fn compile(name: &str, traffic: &ServiceTraffic, services: &RouteClassifier) -> Self {
        let backends = traffic
            .rules
            .iter()
            .map(|rule| {
                rule.backends
                    .iter()
                    .map(|backend| {
                        let service = services.index(&backend.service);
                        if service.is_none() {
                            tracing::warn!(service = name, rule = %rule.name, backend = %backend.service,
                                "route backend is not a mesh service; its share of requests fails");
                        }
                        Backend {
                            service,
                            weight: backend.weight,
                        }
                    })
                    .collect()
            })
            .collect();
        let unsupported = traffic.matches.iter().any(|m| {
            matches!(m.path, Some(PathMatch::RegularExpression(_)))
                || m.headers
                    .iter()
                    .any(|h| h.kind == HeaderMatchKind::RegularExpression)
        });
        if unsupported {
            tracing::warn!(
                service = name,
                "regular-expression route matches are not evaluated by this proxy yet"
            );
        }
        CompiledTraffic {
            traffic: traffic.clone(),
            backends,
        }
    }

    /// Whether any route is attached (else nothing is matched, and the path need not be
    /// normalised for it).
    pub fn has_routes(&self) -> bool {
        self.traffic.has_routes()
    }

    /// The service's own knobs.
    pub fn policy(&self) -> &TrafficPolicy {
        &self.traffic.policy
    }

    /// Rule `index`.
    pub fn rule(&self, index: usize) -> Option<&RouteRule> {
        self.traffic.rules.get(index)
    }

    /// Rule `index`'s backends (empty: the parent service).
    pub fn backends(&self, index: usize) -> &[Backend] {
        self.backends.get(index).map_or(&[], Vec::as_slice)
    }

    /// The rule the first satisfied match selects, if any.
    pub fn select(
        &self,
        method: &Method,
        path: &NormalizedPath,
        headers: &HeaderMap,
    ) -> Option<usize> {
        self.traffic
            .matches
            .iter()
            .find(|m| satisfies(m, method, path, headers))
            .map(|m| m.rule)
    }
}

fn satisfies(m: &RuleMatch, method: &Method, path: &NormalizedPath, headers: &HeaderMap) -> bool {
    let path_ok = match &m.path {
        None => true,
        Some(PathMatch::Exact(value)) => path.as_str() == value,
        Some(PathMatch::PathPrefix(prefix)) => prefix_matches(path.as_str(), prefix),
        Some(PathMatch::RegularExpression(_)) => false,
    };
    path_ok
        && m.method
            .as_deref()
            .is_none_or(|wanted| method.as_str() == wanted)
        && m.headers.iter().all(|h| {
            h.kind == HeaderMatchKind::Exact
                && headers
                    .get_all(h.name.as_str())
                    .iter()
                    .any(|v| v.as_bytes() == h.value.as_bytes())
        })
}

/// Element-wise prefix: `/a` matches `/a` and `/a/b`, not `/ab`; `/` matches everything.
fn prefix_matches(path: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    prefix.is_empty()
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use api::contract::traffic::HeaderMatch;

    use super::*;

    fn traffic() -> ServiceTraffic {
        let rule = |name: &str| RouteRule {
            name: name.to_owned(),
            ..RouteRule::default()
        };
        ServiceTraffic {
            rules: vec![rule("exact"), rule("prefix"), rule("header")],
            matches: vec![
                RuleMatch {
                    rule: 0,
                    path: Some(PathMatch::Exact("/charges".to_owned())),
                    method: Some("POST".to_owned()),
                    ..RuleMatch::default()
                },
                RuleMatch {
                    rule: 2,
                    headers: vec![HeaderMatch {
                        name: "x-canary".to_owned(),
                        kind: HeaderMatchKind::Exact,
                        value: "1".to_owned(),
                    }],
                    ..RuleMatch::default()
                },
                RuleMatch {
                    rule: 1,
                    path: Some(PathMatch::PathPrefix("/charges".to_owned())),
                    ..RuleMatch::default()
                },
            ],
            ..ServiceTraffic::default()
        }
    }

    #[test]
    fn the_first_satisfied_match_selects_its_rule() {
        let compiled = CompiledTraffic::compile("billing", &traffic(), &RouteClassifier::default());
        let select = |method: Method, path: &str, canary: bool| {
            let mut headers = HeaderMap::new();
            if canary {
                headers.insert("x-canary", "1".parse().unwrap());
            }
            compiled.select(&method, &NormalizedPath::parse(path).unwrap(), &headers)
        };
        assert_eq!(select(Method::POST, "/charges", false), Some(0));
        assert_eq!(select(Method::GET, "/charges", false), Some(1));
        assert_eq!(select(Method::GET, "/charges/7", true), Some(2));
        assert_eq!(select(Method::GET, "/charges/7", false), Some(1));
        assert_eq!(select(Method::GET, "/chargesX", false), None);
        assert!(compiled.has_routes());
        assert_eq!(compiled.backends(0), []);
    }
}
