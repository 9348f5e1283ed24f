//! A service's route rules, compiled once per snapshot: which rule a request selects (the
//! shared [`Matcher`] of the `api` crate, so `meshwork policy explain` picks the same rule),
//! and where that rule's backends are in the route table.

use api::contract::traffic::{Matcher, RouteRule, ServiceTraffic, TrafficPolicy};
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
    policy: TrafficPolicy,
    matcher: Matcher,
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
        // Control validates routes; one that still does not compile (a version skew) is
        // left out rather than failing the snapshot: its requests take the default route.
        let matcher = Matcher::compile(traffic).unwrap_or_else(|error| {
            tracing::error!(service = name, %error, "routes do not compile; using the default route");
            Matcher::default()
        });
        CompiledTraffic {
            policy: traffic.policy.clone(),
            matcher,
            backends,
        }
    }

    /// Whether any route is attached (else nothing is matched, and the path need not be
    /// normalised for it).
    pub fn has_routes(&self) -> bool {
        !self.matcher.is_empty()
    }

    /// The service's own knobs.
    pub fn policy(&self) -> &TrafficPolicy {
        &self.policy
    }

    /// How many rules there are (indices `0..rule_count()`).
    pub fn rule_count(&self) -> usize {
        self.matcher.rules().len()
    }

    /// Rule `index`.
    pub fn rule(&self, index: usize) -> Option<&RouteRule> {
        self.matcher.rules().get(index)
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
        let header = |name: &str| headers.get(name).map(http::HeaderValue::as_bytes);
        let (index, _rule) = self
            .matcher
            .select(method.as_str(), path.as_str(), header)?;
        Some(index)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use api::contract::traffic::{HeaderMatch, HeaderMatchKind, PathMatch, RuleMatch};

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
