//! `kind: HTTPRoute` (`gateway.networking.k8s.io/v1`).

use serde::Deserialize;

use super::{
    BackendRef, HeaderMatchSpec, NotImplemented, ParentRef, RetryAttempts, RetryBackoff, Timeouts,
};
use crate::bounded::BoundedU16;
use crate::resource::{Name, Resource};

/// A loaded `HTTPRoute`.
pub type HttpRoute = Resource<HttpRouteSpec>;

/// `HTTPRouteSpec`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    /// The Services the route attaches to (at least one, at most 32).
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Must be empty: a Service parent is addressed by its name, not by a host.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// At most 16. Omitted: one rule matching every request (upstream's default).
    #[serde(default = "default_rules")]
    pub rules: Vec<HttpRouteRule>,
}

fn default_rules() -> Vec<HttpRouteRule> {
    vec![HttpRouteRule::default()]
}

/// `HTTPRouteRule`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// Names the rule in logs, metrics and `policy explain` (unique within the route).
    #[serde(default)]
    pub name: Option<Name>,
    /// Any one of them selects the rule (at most 64). Omitted: every request.
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    /// Not implemented.
    #[serde(default)]
    pub filters: Option<NotImplemented>,
    /// Where matching requests go (at most 16). Omitted: the parent Service.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// GEP-1742.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// GEP-1731.
    #[serde(default)]
    pub retry: Option<HttpRetry>,
    /// Not implemented.
    #[serde(default)]
    pub session_persistence: Option<NotImplemented>,
}

/// `HTTPRouteMatch`: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// Omitted: `PathPrefix /` (every path), as upstream.
    #[serde(default)]
    pub path: Option<PathMatchSpec>,
    /// All must hold (at most 16, names unique).
    #[serde(default)]
    pub headers: Vec<HeaderMatchSpec>,
    /// Not implemented.
    #[serde(default)]
    pub query_params: Option<NotImplemented>,
    /// The request's method.
    #[serde(default)]
    pub method: Option<HttpMethod>,
}

/// `HTTPPathMatch`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatchSpec {
    /// `PathPrefix` when omitted.
    #[serde(default, rename = "type")]
    pub kind: PathMatchType,
    /// `/` when omitted. Exact and prefix values are paths in meshwork's normal form (the
    /// form requests are matched in); an expression matches the whole normalised path.
    #[serde(default = "root")]
    pub value: String,
}

fn root() -> String {
    "/".to_owned()
}

/// `HTTPPathMatch.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum PathMatchType {
    /// The whole path.
    Exact,
    /// Element-wise prefix (`/a` matches `/a` and `/a/b`, not `/ab`); a trailing `/` is ignored.
    #[default]
    PathPrefix,
    /// The whole path matches the expression.
    RegularExpression,
}

/// `HTTPMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    CONNECT,
    OPTIONS,
    TRACE,
    PATCH,
}

impl HttpMethod {
    /// The method's token.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::GET => "GET",
            HttpMethod::HEAD => "HEAD",
            HttpMethod::POST => "POST",
            HttpMethod::PUT => "PUT",
            HttpMethod::DELETE => "DELETE",
            HttpMethod::CONNECT => "CONNECT",
            HttpMethod::OPTIONS => "OPTIONS",
            HttpMethod::TRACE => "TRACE",
            HttpMethod::PATCH => "PATCH",
        }
    }
}

/// `retry.codes`: an HTTP status from 400 to 599.
pub type HttpRetryCode = BoundedU16<400, 599>;

/// `HTTPRouteRetry` (GEP-1731).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Statuses that are retried. Omitted: none (connect failures, resets before the response
    /// head and per-try timeouts are always retried).
    #[serde(default)]
    pub codes: Vec<HttpRetryCode>,
    /// Retries after the first try, 0–10 (default 1).
    #[serde(default)]
    pub attempts: Option<RetryAttempts>,
    /// Base of the exponential backoff with full jitter, 0s–10s (default 25ms).
    #[serde(default)]
    pub backoff: Option<RetryBackoff>,
}
