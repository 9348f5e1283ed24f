//! Traffic configuration in the snapshot (issue 11): the Gateway API routes attached to a
//! service (`HTTPRoute`, `GRPCRoute`), compiled by the control plane into rules and matches
//! in precedence order with defaults applied, and the service's own resiliency knobs.
//!
//! Proxies read only this form; they never see the Gateway API's YAML shapes, so the
//! loader is the one place that knows GEP-1742 (timeouts), GEP-1731 (retries) and GEP-3388
//! (retry budgets). Durations travel as milliseconds.
//!
//! Absent from snapshots of older control planes: every field defaults to "no route
//! configured", which behaves as meshwork did before routes existed.

mod matcher;

use serde::{Deserialize, Serialize};

pub use matcher::{
    Matcher, MatcherError, REGEX_MAX_LEN, REGEX_SIZE_LIMIT, anchored_header_regex, anchored_regex,
};

/// A service's routes and resiliency settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTraffic {
    /// The rules of every route whose `parentRefs` name this service; [`RuleMatch::rule`]
    /// indexes into this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RouteRule>,
    /// Every match of every rule, in Gateway API precedence order: the first one a request
    /// satisfies selects its rule. A request no match selects goes to the service itself with
    /// no timeout and no retries (the default route).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RuleMatch>,
    /// The service's own knobs (`Service` `spec.traffic`), defaults applied.
    #[serde(default)]
    pub policy: TrafficPolicy,
}

impl ServiceTraffic {
    /// Whether no route is attached (the fast path: no matching at all).
    pub fn has_routes(&self) -> bool {
        !self.matches.is_empty()
    }

    /// Whether this is exactly what an absent `traffic` means (then it is not serialised,
    /// so snapshots without routes read as before).
    pub fn is_default(&self) -> bool {
        *self == ServiceTraffic::default()
    }
}

/// Which Gateway API kind a rule came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteKind {
    /// `HTTPRoute`.
    #[default]
    #[serde(rename = "HTTPRoute")]
    Http,
    /// `GRPCRoute`.
    #[serde(rename = "GRPCRoute")]
    Grpc,
}

/// One rule of an `HTTPRoute` or `GRPCRoute`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    /// Where the rule came from, for logs, metrics and `policy explain`:
    /// `HTTPRoute/default/billing-resilience rule 0` (`<kind>/<namespace>/<route> rule
    /// <index>`), with the rule's `name` in place of its index when it has one
    /// (`HTTPRoute/default/billing rule charges`).
    pub name: String,
    /// The route's kind.
    #[serde(default)]
    pub kind: RouteKind,
    /// Where matching requests go, by weight (`backendRefs`). Empty: the parent service.
    /// A backend of weight 0 receives nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<WeightedBackend>,
    /// `timeouts.request` (GEP-1742): the whole exchange, retries included, until the
    /// response head. None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// `timeouts.backendRequest` (GEP-1742): each try, until its response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request_timeout_ms: Option<u64>,
    /// `retry` (GEP-1731). None: no retries beyond provably-unsent replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryRule>,
}

/// A backend of a rule and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedBackend {
    /// A mesh service name (`backendRefs[].name`).
    pub service: String,
    /// `backendRefs[].weight`; 1 when omitted, as in the Gateway API.
    pub weight: u32,
}

/// A rule's retry settings (GEP-1731's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryRule {
    /// Retries after the first try (`retry.attempts`); 0 disables retries.
    pub attempts: u32,
    /// HTTP statuses that are retried (`retry.codes`); connect failures, resets before the
    /// response head and per-try timeouts are always retryable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// gRPC statuses (numeric, e.g. 14 = UNAVAILABLE) retried when a `GRPCRoute`'s
    /// response head carries them (`grpc-status` of a trailers-only response).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_codes: Vec<u32>,
    /// `retry.backoff`: the base of exponential backoff with full jitter (try n waits a
    /// random time in `[0, backoff · 2^(n-1))`, capped at [`RetryRule::max_backoff_ms`]).
    pub backoff_ms: u64,
    /// The cap on one backoff wait (meshwork: 10 × the base unless set).
    pub max_backoff_ms: u64,
}

/// One match of a rule, in the precedence-ordered [`ServiceTraffic::matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleMatch {
    /// Index of the rule in [`ServiceTraffic::rules`].
    pub rule: usize,
    /// Path condition, against the normalised path. None: any path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Method condition (upper-case token). None: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// `HTTPPathMatch`; a `GRPCRoute` method match compiles to `Exact`
/// (`/pkg.Service/Method`), `PathPrefix` (`/pkg.Service/`) or `RegularExpression`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    /// The whole path equals the value.
    Exact(String),
    /// The path starts with the value, element-wise (`/a` matches `/a` and `/a/b`, not `/ab`).
    PathPrefix(String),
    /// The whole path matches this regular expression (Rust `regex` syntax, anchored).
    RegularExpression(String),
}

/// `HTTPHeaderMatch`: a header (name lower-cased) and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    /// How the value is compared.
    #[serde(rename = "type", default)]
    pub kind: HeaderMatchKind,
    /// The value (or pattern).
    pub value: String,
}

/// How a header's value is compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeaderMatchKind {
    /// Equal, byte for byte.
    #[default]
    Exact,
    /// The whole value matches the expression (anchored).
    RegularExpression,
}

/// A service's own resiliency knobs (`Service` `spec.traffic`, where the Gateway API has
/// none), with defaults applied by the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficPolicy {
    /// TCP + TLS + HTTP handshake to one endpoint.
    pub connect_timeout_ms: u64,
    /// An idle pooled connection to an endpoint is closed after this long.
    pub idle_timeout_ms: u64,
    /// Caps retries across all requests to the service (GEP-3388's shape).
    pub retry_budget: RetryBudget,
    /// Ejects endpoints that keep failing.
    pub outlier_detection: OutlierDetection,
    /// Per-endpoint concurrency caps.
    pub circuit_breaker: CircuitBreaker,
}

impl Default for TrafficPolicy {
    fn default() -> Self {
        TrafficPolicy {
            connect_timeout_ms: 5_000,
            idle_timeout_ms: 90_000,
            retry_budget: RetryBudget::default(),
            outlier_detection: OutlierDetection::default(),
            circuit_breaker: CircuitBreaker::default(),
        }
    }
}

/// GEP-3388's `retryConstraint`: retries may add at most `percent` % of the requests seen
/// over `interval`, plus `min_retry_rate_count` per `min_retry_rate_interval_ms` regardless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryBudget {
    /// `budget.percent` (default 20).
    pub percent: u32,
    /// `budget.interval` (default 10 s).
    pub interval_ms: u64,
    /// `minRetryRate.count` (default 10).
    pub min_retry_rate_count: u32,
    /// `minRetryRate.interval` (default 1 s).
    pub min_retry_rate_interval_ms: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            percent: 20,
            interval_ms: 10_000,
            min_retry_rate_count: 10,
            min_retry_rate_interval_ms: 1_000,
        }
    }
}

/// Outlier ejection: an endpoint with `consecutive_failures` consecutive 5xx answers or
/// connect failures is ejected for `base_ejection_ms · 2^(times ejected before)`, at most
/// `max_ejection_ms`; never more than `max_ejected_percent` % of a service's endpoints (and
/// never the last one) are ejected at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutlierDetection {
    /// 0 disables ejection.
    pub consecutive_failures: u32,
    /// First ejection's length.
    pub base_ejection_ms: u64,
    /// The longest ejection.
    pub max_ejection_ms: u64,
    /// At most this share of endpoints is ejected at once (rounded down, the last endpoint never).
    pub max_ejected_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejected_percent: 50,
        }
    }
}

/// Per-endpoint caps; a full endpoint answers a retryable `503` instead of queueing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CircuitBreaker {
    /// Requests sent to the endpoint and still waiting for their response head.
    pub max_pending_requests: u32,
    /// Requests in flight on the endpoint.
    pub max_requests: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            max_pending_requests: 1_024,
            max_requests: 1_024,
        }
    }
}
