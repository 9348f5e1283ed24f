//! The Gateway API's route kinds as meshwork reads them (issue 11): `HTTPRoute` and
//! `GRPCRoute` of `gateway.networking.k8s.io/v1`, attached to a meshwork `Service` through
//! `parentRefs` (GAMMA, GEP-1426), with timeouts (GEP-1742), retries (GEP-1731) and weighted
//! `backendRefs`.
//!
//! The spec types follow the upstream v1 API field for field. What meshwork does not implement
//! (`filters`, `queryParams`, `sessionPersistence`, `sectionName`, non-empty `hostnames`) is
//! refused with an error naming the field ([`NotImplemented`]), never ignored: a route that
//! loads does everything it says. [`check`] holds the rules a field's type cannot state,
//! [`compile`] turns the routes of a [`crate::ResourceSet`] into each service's
//! [`crate::contract::traffic::ServiceTraffic`]. docs/resiliency.md is the reference.

pub mod check;
pub mod compile;
pub mod grpc;
pub mod http;

use serde::{Deserialize, Deserializer};

use crate::bounded::{BoundedU16, BoundedU32};
use crate::duration::GatewayDuration;
use crate::resource::Name;

pub use grpc::{GrpcRoute, GrpcRouteSpec};
pub use http::{HttpRoute, HttpRouteSpec};

/// The Gateway API's group and version, the `apiVersion` of `HTTPRoute` and `GRPCRoute`.
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// A route's `timeouts.request` / `timeouts.backendRequest`: 0 s (no limit, as GEP-1742
/// says) to 24 h.
pub type RouteTimeout = GatewayDuration<0, { 24 * 3_600_000 }>;

/// `retry.backoff`: 0 s to 10 s.
pub type RetryBackoff = GatewayDuration<0, 10_000>;

/// `retry.attempts`: 0 to 10 retries after the first try.
pub type RetryAttempts = BoundedU32<0, 10>;

/// `backendRefs[].weight`: 0 to 1,000,000, as in the Gateway API.
pub type Weight = BoundedU32<0, 1_000_000>;

/// A port in a reference: 1–65535.
pub type RefPort = BoundedU16<1, 65_535>;

/// A Gateway API field meshwork does not implement. Absent, `null` or empty is fine;
/// anything else is refused while the document is read, so the error names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotImplemented;

impl<'de> Deserialize<'de> for NotImplemented {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(de)?;
        let empty = match &value {
            serde_json::Value::Null => true,
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            _ => false,
        };
        match empty {
            true => Ok(NotImplemented),
            false => Err(serde::de::Error::custom(
                "is a Gateway API field meshwork does not implement; remove it \
                 (docs/resiliency.md lists what is supported)",
            )),
        }
    }
}

/// `ParentReference`: what a route attaches to. meshwork routes attach to a meshwork
/// `Service` (GAMMA): `kind: Service` and `group: ""` (core, also written `core`) or
/// `meshwork.dev`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentRef {
    /// Upstream's default is `gateway.networking.k8s.io`, so a Service parent must say it.
    #[serde(default)]
    pub group: Option<String>,
    /// Upstream's default is `Gateway`, so a Service parent must say it.
    #[serde(default)]
    pub kind: Option<String>,
    /// The route's own namespace when omitted (the only one meshwork accepts: cross-namespace
    /// references need a `ReferenceGrant`, which meshwork does not implement).
    #[serde(default)]
    pub namespace: Option<Name>,
    /// The Service.
    pub name: Name,
    /// A meshwork Service has no named sections.
    #[serde(default)]
    pub section_name: Option<NotImplemented>,
    /// Accepted for manifests written for Kubernetes Services; a meshwork Service has one
    /// port, so this selects nothing.
    #[serde(default)]
    pub port: Option<RefPort>,
}

/// `BackendRef`: where a rule's traffic goes, and how much of it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// `""` (core, the default) or `meshwork.dev`.
    #[serde(default)]
    pub group: Option<String>,
    /// `Service` (the default).
    #[serde(default)]
    pub kind: Option<String>,
    /// The Service.
    pub name: Name,
    /// The route's own namespace when omitted (the only one accepted).
    #[serde(default)]
    pub namespace: Option<Name>,
    /// As in [`ParentRef::port`]: accepted, selects nothing.
    #[serde(default)]
    pub port: Option<RefPort>,
    /// Share of the rule's traffic, relative to the other backends' (default 1).
    #[serde(default)]
    pub weight: Option<Weight>,
    /// Per-backend filters: not implemented.
    #[serde(default)]
    pub filters: Option<NotImplemented>,
}

/// How a header's value (or a path) is compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MatchType {
    /// Byte for byte.
    #[default]
    Exact,
    /// The whole value matches the expression (Rust `regex` syntax, anchored).
    RegularExpression,
}

/// `HTTPHeaderMatch` / `GRPCHeaderMatch`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatchSpec {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: MatchType,
    /// The header's name (case-insensitive).
    pub name: HeaderName,
    /// The value, or the expression (at most 4096 bytes).
    pub value: String,
}

/// A valid HTTP header name, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderName(String);

/// Why a string is not a [`HeaderName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid HTTP header name (RFC 9110 token: letters, digits and !#$%&'*+-.^_`|~)"
)]
pub struct HeaderNameError(String);

impl TryFrom<String> for HeaderName {
    type Error = HeaderNameError;
    fn try_from(s: String) -> Result<Self, HeaderNameError> {
        match ::http::HeaderName::from_bytes(s.as_bytes()) {
            Ok(name) if s.len() <= 256 => Ok(HeaderName(name.as_str().to_owned())),
            _ => Err(HeaderNameError(s)),
        }
    }
}

impl HeaderName {
    /// The lower-case name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `HTTPRouteTimeouts` (GEP-1742); a meshwork extension on `GRPCRoute`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// The whole exchange, retries included, until the response head; `0s`: no limit.
    #[serde(default)]
    pub request: Option<RouteTimeout>,
    /// Each try, until its response head; `0s`: no limit. At most `request`.
    #[serde(default)]
    pub backend_request: Option<RouteTimeout>,
}

impl Timeouts {
    /// The timeouts in milliseconds, `0s` (no limit) as `None`.
    pub fn millis(&self) -> (Option<u64>, Option<u64>) {
        let ms = |t: Option<RouteTimeout>| t.filter(|t| !t.is_zero()).map(RouteTimeout::as_millis);
        (ms(self.request), ms(self.backend_request))
    }
}

/// The backoff base when `retry.backoff` is omitted.
pub const DEFAULT_BACKOFF_MS: u64 = 25;
/// Retries after the first try when `retry.attempts` is omitted.
pub const DEFAULT_ATTEMPTS: u32 = 1;
