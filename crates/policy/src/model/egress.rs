//! `EgressPolicy`: which callers may reach which destinations outside the mesh.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::request::{PathMatcher, describe, method_matches, parse_methods, path_matches};
use super::{Errors, IdentityMatcher, PathMatcherSpec, Problem, ValidationErrors, parse_list};
use crate::cidr::Cidr;
use crate::dns::{DnsPattern, Host};
use crate::path::NormalizedPath;

/// The `spec` of an `EgressPolicy` resource: an allow-list (egress is default-deny).
///
/// ```yaml
/// from: [{ spiffeId: spiffe://meshwork.local/ns/default/sa/billing }]
/// to:
///   - host: api.stripe.com      # or "*.stripe.com" (exactly one label)
///     ports: [443]
///   - cidr: 192.0.2.0/24        # only with allowCidr: true
///     ports: [80]
///     methods: [GET]            # plain-HTTP egress only
///     paths: [{ prefix: /status }]
/// allowCidr: true
/// ```
///
/// Each `to` entry is one rule (decisions name it as `rule` = its index). An empty `from`
/// means any mesh workload. `host` rules match DNS names only, `cidr` rules IP-literal
/// destinations only. `methods`/`paths` can only be checked on plain-HTTP egress: an entry
/// that lists them never matches a CONNECT tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPolicySpec {
    /// Caller matchers; empty = any mesh workload.
    #[serde(default)]
    pub from: Vec<super::IdentityMatcherSpec>,
    /// Opt-in for `cidr` destinations.
    #[serde(default)]
    pub allow_cidr: bool,
    /// Allowed destinations; must not be empty.
    #[schemars(length(min = 1))]
    pub to: Vec<EgressDestinationSpec>,
}

/// One allowed destination: exactly one of `host`/`cidr`, plus ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = super::schema::exactly_one(&["host", "cidr"])))]
pub struct EgressDestinationSpec {
    /// A [`DnsPattern`]: `api.stripe.com` or `*.stripe.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A [`Cidr`] such as `10.0.0.0/8`; needs `allowCidr: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Destination ports; must not be empty.
    #[schemars(length(min = 1), inner(range(min = 1)))]
    pub ports: Vec<u16>,
    /// HTTP methods (plain-HTTP egress only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(super::schema::METHOD_PATTERN)))]
    pub methods: Vec<String>,
    /// Path matchers (plain-HTTP egress only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatcherSpec>,
}

/// Where a destination rule points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Host(DnsPattern),
    Cidr(Cidr),
}

/// A validated `to` entry.
#[derive(Debug, Clone)]
pub(crate) struct EgressDestination {
    pub(crate) destination: Destination,
    pub(crate) ports: Vec<u16>,
    pub(crate) methods: Vec<String>,
    pub(crate) paths: Vec<PathMatcher>,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub(crate) struct EgressPolicy {
    pub(crate) from: Vec<IdentityMatcher>,
    pub(crate) to: Vec<EgressDestination>,
}

impl EgressPolicySpec {
    /// Checks every field; the error lists each invalid field with its path.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.parse().map(drop)
    }

    pub(crate) fn parse(&self) -> Result<EgressPolicy, ValidationErrors> {
        let mut errors = Errors::default();
        let from = parse_list(&self.from, "from", &mut errors, IdentityMatcher::parse);
        if self.to.is_empty() {
            errors.push("to", Problem::Empty);
        }
        let to = parse_list(&self.to, "to", &mut errors, |d, field, errors| {
            EgressDestination::parse(d, field, self.allow_cidr, errors)
        });
        errors.finish(EgressPolicy { from, to })
    }
}

impl EgressDestination {
    fn parse(
        spec: &EgressDestinationSpec,
        field: &str,
        allow_cidr: bool,
        errors: &mut Errors,
    ) -> Option<Self> {
        let destination = match (&spec.host, &spec.cidr) {
            (Some(h), None) => h
                .parse()
                .map(Destination::Host)
                .map_err(|e| errors.push(format!("{field}.host"), Problem::Dns(e)))
                .ok(),
            (None, Some(_)) if !allow_cidr => {
                errors.push(format!("{field}.cidr"), Problem::CidrNotAllowed);
                None
            }
            (None, Some(c)) => c
                .parse()
                .map(Destination::Cidr)
                .map_err(|e| errors.push(format!("{field}.cidr"), Problem::Cidr(e)))
                .ok(),
            _ => {
                errors.push(field, Problem::ExactlyOne("host, cidr"));
                None
            }
        };
        if spec.ports.is_empty() {
            errors.push(format!("{field}.ports"), Problem::Empty);
        }
        for (i, _) in spec.ports.iter().enumerate().filter(|(_, p)| **p == 0) {
            errors.push(format!("{field}.ports[{i}]"), Problem::PortZero);
        }
        let methods = parse_methods(&spec.methods, &format!("{field}.methods"), errors);
        let paths = parse_list(
            &spec.paths,
            &format!("{field}.paths"),
            errors,
            PathMatcher::parse,
        );
        Some(EgressDestination {
            destination: destination?,
            ports: spec.ports.clone(),
            methods,
            paths,
        })
    }

    /// Whether this entry allows the destination and (for plain HTTP) the request line;
    /// on a match, the index of the path matcher that matched (if any were listed).
    pub(crate) fn matches(
        &self,
        host: &Host,
        port: u16,
        method: Option<&str>,
        path: Option<&NormalizedPath>,
    ) -> Option<Option<usize>> {
        let host_ok = match (&self.destination, host) {
            (Destination::Host(pattern), Host::Dns(name)) => pattern.matches_name(name),
            (Destination::Cidr(cidr), Host::Ip(ip)) => cidr.contains(*ip),
            _ => false,
        };
        if !host_ok || !self.ports.contains(&port) || !method_matches(&self.methods, method) {
            return None;
        }
        path_matches(&self.paths, path)
    }

    /// `host api.stripe.com ports 443[, methods GET, path prefix /x]`.
    pub(crate) fn describe(&self, path_index: Option<usize>) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut s = format!("{} ports {}", self.destination, ports.join("|"));
        if !self.methods.is_empty() || path_index.is_some() {
            s.push_str(", ");
            s.push_str(&describe(&self.methods, &self.paths, path_index, &[]));
        }
        s
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Host(p) => write!(f, "host {p}"),
            Destination::Cidr(c) => write!(f, "cidr {c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> EgressPolicySpec {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn host(s: &str) -> Host {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn host_rules_match_names_and_cidr_rules_match_ips() {
        let p = spec(
            "from: [{spiffeId: spiffe://td/billing}]\nallowCidr: true\nto:\n  - {host: '*.stripe.com', ports: [443]}\n  - {cidr: 192.0.2.0/24, ports: [80], methods: [GET]}\n",
        )
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
        let [stripe, net] = &p.to[..] else {
            panic!("two destinations")
        };
        assert_eq!(
            stripe.matches(&host("api.stripe.com"), 443, None, None),
            Some(None)
        );
        assert_eq!(
            stripe.matches(&host("api.stripe.com"), 80, None, None),
            None
        );
        assert_eq!(stripe.matches(&host("192.0.2.1"), 443, None, None), None);
        assert_eq!(
            net.matches(&host("192.0.2.1"), 80, Some("GET"), None),
            Some(None)
        );
        assert_eq!(
            net.matches(&host("192.0.2.1"), 80, None, None),
            None,
            "CONNECT cannot show a method"
        );
        assert_eq!(stripe.describe(None), "host *.stripe.com ports 443");
        assert_eq!(
            net.describe(None),
            "cidr 192.0.2.0/24 ports 80, methods GET"
        );
    }

    #[test]
    fn validation_names_field_paths() {
        let s = spec(
            "to:\n  - {cidr: 10.0.0.0/8, ports: [443]}\n  - {host: 1.2.3.4, ports: []}\n  - {host: a.b, cidr: 10.0.0.0/8, ports: [0]}\n",
        );
        let errors: Vec<_> = s.validate().err().map(|e| e.0).unwrap_or_default();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "to[0].cidr",
                "to[1].host",
                "to[1].ports",
                "to[2]",
                "to[2].ports[0]"
            ]
        );
        assert_eq!(errors[0].problem, Problem::CidrNotAllowed);
        assert!(spec("to: []\n").validate().is_err());
        assert!(
            serde_saphyr::from_str::<EgressPolicySpec>("to: [{host: a.b, port: 443}]\n").is_err()
        );
    }
}
