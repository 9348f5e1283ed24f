//! Request matchers: methods, paths and headers (HTTP) or ports (opaque TCP) of a rule's
//! `to` entry.
//!
//! An entry is either an HTTP entry (any of `methods`, `paths`, `headers`; or nothing at all)
//! or a TCP entry (`ports`); setting both kinds in one entry is refused. How each kind meets
//! each protocol (the Istio semantics for TCP):
//! - an HTTP request is matched only by entries without `ports` (the mesh addresses HTTP to
//!   the service, not to a port);
//! - an opaque TCP connection to port P is matched by an entry listing P, or by an entry that
//!   names nothing at all; an entry with HTTP fields never matches it in an ALLOW rule (its
//!   condition cannot be checked on bytes), and in a DENY rule its HTTP fields are ignored, so
//!   the DENY covers every TCP connection of its callers (failing closed, as Istio does).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Errors, Problem, parse_list};
use crate::path::NormalizedPath;
use crate::request::HeaderSource;
use crate::route::RouteTemplate;

/// One `to` entry of an authorization rule. Every field is optional; an empty list matches
/// anything. All present fields must match (methods AND paths AND headers); within a list,
/// any element may match. `ports` makes the entry a TCP entry, for opaque TCP connections
/// (docs/policy.md, "Opaque TCP"): it cannot be combined with the HTTP fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatcherSpec {
    /// HTTP methods, upper-case (`GET`, `POST`); methods are case-sensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(super::schema::METHOD_PATTERN)))]
    pub methods: Vec<String>,
    /// Path matchers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatcherSpec>,
    /// Header matchers; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcherSpec>,
    /// Destination ports of opaque TCP connections (`5432`); not with `methods`, `paths` or
    /// `headers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 1)))]
    pub ports: Vec<u16>,
}

/// One path matcher; set exactly one field. Values are normalised with the rules of
/// [`crate::path`] before comparison, so `exact: /charges/` ≡ `exact: /charges`.
///
/// - `exact`: the normalised path equals this.
/// - `prefix`: segment-wise prefix (`/charges` matches `/charges/1`, not `/chargesX`).
/// - `template`: a [`RouteTemplate`] such as `/customers/{id}/charges`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = super::schema::exactly_one(&["exact", "prefix", "template"])))]
pub struct PathMatcherSpec {
    /// Exact path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(super::schema::ABSOLUTE_PATH_PATTERN))]
    pub exact: Option<String>,
    /// Segment-wise path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(super::schema::ABSOLUTE_PATH_PATTERN))]
    pub prefix: Option<String>,
    /// Route template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(super::schema::ABSOLUTE_PATH_PATTERN))]
    pub template: Option<String>,
}

/// One header matcher: `name` plus exactly one of `exact`, `prefix`, `present`.
///
/// Names are case-insensitive. Values are compared byte-wise against the field value, with
/// several field lines of the same name combined by `", "` (RFC 9110 §5.3). `present: true`
/// requires the header, `present: false` requires its absence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = super::schema::exactly_one(&["exact", "prefix", "present"])))]
pub struct HeaderMatcherSpec {
    /// Header field name.
    #[schemars(pattern(super::schema::TOKEN_PATTERN))]
    pub name: String,
    /// The value must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value must start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The header must be present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A parsed path matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatcher {
    Exact(NormalizedPath),
    Prefix(NormalizedPath),
    Template(RouteTemplate),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderMatch {
    Exact(String),
    Prefix(String),
    Present(bool),
}

/// A parsed header matcher; `name` is lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderMatcher {
    name: String,
    matcher: HeaderMatch,
}

/// A parsed `to` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestMatcher {
    pub(crate) methods: Vec<String>,
    pub(crate) paths: Vec<PathMatcher>,
    pub(crate) headers: Vec<HeaderMatcher>,
    /// Non-empty: a TCP entry (the HTTP lists are then empty).
    pub(crate) ports: Vec<u16>,
}

impl RequestMatcher {
    pub(crate) fn parse(
        spec: &RequestMatcherSpec,
        field: &str,
        errors: &mut Errors,
    ) -> Option<Self> {
        let methods = parse_methods(&spec.methods, &format!("{field}.methods"), errors);
        let paths = parse_list(
            &spec.paths,
            &format!("{field}.paths"),
            errors,
            PathMatcher::parse,
        );
        let headers = parse_list(
            &spec.headers,
            &format!("{field}.headers"),
            errors,
            HeaderMatcher::parse,
        );
        let ports = parse_list(
            &spec.ports,
            &format!("{field}.ports"),
            errors,
            |&port, field, errors| {
                if port == 0 {
                    errors.push(field, Problem::PortZero);
                }
                (port != 0).then_some(port)
            },
        );
        let http = !(spec.methods.is_empty() && spec.paths.is_empty() && spec.headers.is_empty());
        if http && !spec.ports.is_empty() {
            errors.push(field, Problem::HttpAndTcp);
            return None;
        }
        Some(RequestMatcher {
            methods,
            paths,
            headers,
            ports,
        })
    }

    /// Whether the entry names an HTTP condition (a method, path or header).
    pub(crate) fn is_http(&self) -> bool {
        !(self.methods.is_empty() && self.paths.is_empty() && self.headers.is_empty())
    }

    /// Whether the entry matches an opaque TCP connection to `port` in a rule of kind
    /// `deny` (see the [module docs](self)).
    pub(crate) fn matches_tcp(&self, port: u16, deny: bool) -> bool {
        if self.is_http() {
            return deny;
        }
        self.ports.is_empty() || self.ports.contains(&port)
    }

    /// Index of the first matching path matcher (`Some(None)` if there are none: any path),
    /// or `None` if the request does not match.
    pub(crate) fn matches<H: HeaderSource + ?Sized>(
        &self,
        method: &str,
        path: &NormalizedPath,
        headers: &H,
    ) -> Option<Option<usize>> {
        if !self.ports.is_empty()
            || !method_matches(&self.methods, Some(method))
            || !self.headers.iter().all(|h| h.matches(headers))
        {
            return None;
        }
        path_matches(&self.paths, Some(path))
    }

    /// Describes the matching parts, naming only the path matcher that matched.
    pub(crate) fn describe(&self, path_index: Option<usize>) -> String {
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            return format!("tcp ports {}", ports.join("|"));
        }
        describe(&self.methods, &self.paths, path_index, &self.headers)
    }
}

/// Methods match if none are listed or `method` is listed; a request without a method
/// (a CONNECT tunnel seen from egress) only matches when none are listed.
pub(crate) fn method_matches(methods: &[String], method: Option<&str>) -> bool {
    methods.is_empty() || method.is_some_and(|m| methods.iter().any(|x| x == m))
}

/// Like [`RequestMatcher::matches`] for paths alone; no path only matches an empty list.
pub(crate) fn path_matches(
    paths: &[PathMatcher],
    path: Option<&NormalizedPath>,
) -> Option<Option<usize>> {
    if paths.is_empty() {
        return Some(None);
    }
    let path = path?;
    paths.iter().position(|p| p.matches(path)).map(Some)
}

/// `methods POST|PUT, path template /x/{id}, header x-a present`, or `any request`.
pub(crate) fn describe(
    methods: &[String],
    paths: &[PathMatcher],
    path_index: Option<usize>,
    headers: &[HeaderMatcher],
) -> String {
    let mut parts = Vec::new();
    if !methods.is_empty() {
        parts.push(format!("methods {}", methods.join("|")));
    }
    if let Some(p) = path_index.and_then(|i| paths.get(i)) {
        parts.push(format!("path {p}"));
    }
    parts.extend(headers.iter().map(|h| format!("header {h}")));
    if parts.is_empty() {
        "any request".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Parses a method list: upper-case RFC 9110 tokens.
pub(crate) fn parse_methods(methods: &[String], field: &str, errors: &mut Errors) -> Vec<String> {
    parse_list(methods, field, errors, |m, field, errors| {
        let valid = !m.is_empty()
            && m.bytes()
                .all(|b| is_token_byte(b) && !b.is_ascii_lowercase());
        if !valid {
            errors.push(field, Problem::Method(m.clone()));
        }
        valid.then(|| m.clone())
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl PathMatcher {
    pub(crate) fn parse(spec: &PathMatcherSpec, field: &str, errors: &mut Errors) -> Option<Self> {
        let parsed = match (&spec.exact, &spec.prefix, &spec.template) {
            (Some(p), None, None) => parse_path(p)
                .map(PathMatcher::Exact)
                .map_err(|e| (e, "exact")),
            (None, Some(p), None) => parse_path(p)
                .map(PathMatcher::Prefix)
                .map_err(|e| (e, "prefix")),
            (None, None, Some(t)) => t
                .parse()
                .map(PathMatcher::Template)
                .map_err(|e| (Problem::RouteTemplate(e), "template")),
            _ => Err((Problem::ExactlyOne("exact, prefix, template"), "")),
        };
        parsed
            .map_err(|(problem, name)| errors.push_at(field, name, problem))
            .ok()
    }

    pub(crate) fn matches(&self, path: &NormalizedPath) -> bool {
        match self {
            PathMatcher::Exact(p) => p == path,
            PathMatcher::Prefix(p) => path.starts_with(p),
            PathMatcher::Template(t) => t.matches(path),
        }
    }
}

fn parse_path(raw: &str) -> Result<NormalizedPath, Problem> {
    if raw.contains(['?', '#']) {
        return Err(Problem::PathWithQuery);
    }
    NormalizedPath::parse(raw).map_err(Problem::Path)
}

impl fmt::Display for PathMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatcher::Exact(p) => write!(f, "exact {p}"),
            PathMatcher::Prefix(p) => write!(f, "prefix {p}"),
            PathMatcher::Template(t) => write!(f, "template {t}"),
        }
    }
}

impl HeaderMatcher {
    fn parse(spec: &HeaderMatcherSpec, field: &str, errors: &mut Errors) -> Option<Self> {
        let name_ok = !spec.name.is_empty() && spec.name.bytes().all(is_token_byte);
        if !name_ok {
            errors.push(
                format!("{field}.name"),
                Problem::HeaderName(spec.name.clone()),
            );
        }
        let matcher = match (&spec.exact, &spec.prefix, spec.present) {
            (Some(v), None, None) => HeaderMatch::Exact(v.clone()),
            (None, Some(v), None) => HeaderMatch::Prefix(v.clone()),
            (None, None, Some(p)) => HeaderMatch::Present(p),
            _ => {
                errors.push(field, Problem::ExactlyOne("exact, prefix, present"));
                return None;
            }
        };
        name_ok.then(|| HeaderMatcher {
            name: spec.name.to_ascii_lowercase(),
            matcher,
        })
    }

    fn matches<H: HeaderSource + ?Sized>(&self, headers: &H) -> bool {
        let value = headers.combined_value(&self.name);
        match (&self.matcher, value) {
            (HeaderMatch::Present(want), v) => *want == v.is_some(),
            (HeaderMatch::Exact(x), Some(v)) => *v == *x.as_bytes(),
            (HeaderMatch::Prefix(x), Some(v)) => v.starts_with(x.as_bytes()),
            (_, None) => false,
        }
    }
}

impl fmt::Display for HeaderMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.matcher {
            HeaderMatch::Exact(v) => write!(f, "{} exact {v:?}", self.name),
            HeaderMatch::Prefix(v) => write!(f, "{} prefix {v:?}", self.name),
            HeaderMatch::Present(true) => write!(f, "{} present", self.name),
            HeaderMatch::Present(false) => write!(f, "{} absent", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::NoHeaders;

    fn matcher(spec: RequestMatcherSpec) -> Result<RequestMatcher, Vec<super::super::FieldError>> {
        let mut errors = Errors::default();
        let m = RequestMatcher::parse(&spec, "rules[0].to[0]", &mut errors);
        errors
            .finish(m)
            .map(|m| m.unwrap_or_else(|| panic!("no matcher")))
            .map_err(|e| e.0)
    }

    fn path(s: &str) -> NormalizedPath {
        NormalizedPath::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn spec_paths(paths: &[(&str, &str)]) -> Vec<PathMatcherSpec> {
        paths
            .iter()
            .map(|&(kind, v)| match kind {
                "exact" => PathMatcherSpec {
                    exact: Some(v.into()),
                    ..Default::default()
                },
                "prefix" => PathMatcherSpec {
                    prefix: Some(v.into()),
                    ..Default::default()
                },
                _ => PathMatcherSpec {
                    template: Some(v.into()),
                    ..Default::default()
                },
            })
            .collect()
    }

    #[test]
    fn methods_paths_and_headers_all_must_match() {
        let m = matcher(RequestMatcherSpec {
            methods: vec!["POST".into()],
            paths: spec_paths(&[
                ("exact", "/charges/"),
                ("template", "/customers/{id}/charges"),
            ]),
            headers: vec![HeaderMatcherSpec {
                name: "X-Tenant".into(),
                prefix: Some("acme".into()),
                ..Default::default()
            }],
            ports: vec![],
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
        let hdrs: &[(&str, &str)] = &[("x-tenant", "acme-1")];
        assert_eq!(m.matches("POST", &path("/charges"), hdrs), Some(Some(0)));
        assert_eq!(
            m.matches("POST", &path("/customers/7/charges"), hdrs),
            Some(Some(1))
        );
        assert_eq!(m.matches("GET", &path("/charges"), hdrs), None);
        assert_eq!(m.matches("post", &path("/charges"), hdrs), None);
        assert_eq!(m.matches("POST", &path("/charges"), &NoHeaders), None);
        assert_eq!(m.matches("POST", &path("/refunds"), hdrs), None);
        assert_eq!(
            m.describe(Some(1)),
            "methods POST, path template /customers/{id}/charges, header x-tenant prefix \"acme\""
        );
    }

    #[test]
    fn empty_matcher_matches_any_request() {
        let m = matcher(RequestMatcherSpec::default()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.matches("DELETE", &path("/x"), &NoHeaders), Some(None));
        assert_eq!(m.describe(None), "any request");
    }

    #[test]
    fn absent_header() {
        let m = matcher(RequestMatcherSpec {
            headers: vec![HeaderMatcherSpec {
                name: "x-debug".into(),
                present: Some(false),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
        let hdrs: &[(&str, &str)] = &[("X-Debug", "1")];
        assert_eq!(m.matches("GET", &path("/"), hdrs), None);
        assert_eq!(m.matches("GET", &path("/"), &NoHeaders), Some(None));
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let errors = matcher(RequestMatcherSpec {
            methods: vec!["post".into(), "GET".into(), "".into()],
            paths: spec_paths(&[("exact", "/a?b"), ("prefix", "x"), ("template", "/v{n}")]),
            headers: vec![
                HeaderMatcherSpec {
                    name: "bad name".into(),
                    present: Some(true),
                    ..Default::default()
                },
                HeaderMatcherSpec {
                    name: "x".into(),
                    ..Default::default()
                },
            ],
            ports: vec![],
        })
        .err()
        .unwrap_or_default();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].to[0].methods[0]",
                "rules[0].to[0].methods[2]",
                "rules[0].to[0].paths[0].exact",
                "rules[0].to[0].paths[1].prefix",
                "rules[0].to[0].paths[2].template",
                "rules[0].to[0].headers[0].name",
                "rules[0].to[0].headers[1]",
            ]
        );
        assert!(
            errors[0]
                .to_string()
                .starts_with("rules[0].to[0].methods[0]: \"post\" is not an upper-case")
        );
    }
}
