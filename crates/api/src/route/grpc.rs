//! `kind: GRPCRoute` (`gateway.networking.k8s.io/v1`), plus two meshwork extensions on its
//! rules: `timeouts` and `retry` (upstream `GRPCRoute` has neither), shaped like `HTTPRoute`'s
//! with `retry.codes` being gRPC status codes.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::{
    BackendRef, HeaderMatchSpec, MatchType, NotImplemented, ParentRef, RetryAttempts, RetryBackoff,
    Timeouts,
};
use crate::resource::{Name, Resource};

/// A loaded `GRPCRoute`.
pub type GrpcRoute = Resource<GrpcRouteSpec>;

/// `GRPCRouteSpec`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteSpec {
    /// The Services the route attaches to (at least one, at most 32).
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Must be empty.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// At most 16. Omitted: one rule matching every call.
    #[serde(default = "default_rules")]
    pub rules: Vec<GrpcRouteRule>,
}

fn default_rules() -> Vec<GrpcRouteRule> {
    vec![GrpcRouteRule::default()]
}

/// `GRPCRouteRule`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRule {
    /// Names the rule (unique within the route).
    #[serde(default)]
    pub name: Option<Name>,
    /// Any one of them selects the rule (at most 64). Omitted: every call.
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    /// Not implemented.
    #[serde(default)]
    pub filters: Option<NotImplemented>,
    /// Where matching calls go (at most 16). Omitted: the parent Service.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Not implemented.
    #[serde(default)]
    pub session_persistence: Option<NotImplemented>,
    /// meshwork extension: `HTTPRoute`'s GEP-1742 timeouts.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// meshwork extension: GEP-1731 retries on gRPC status codes.
    #[serde(default)]
    pub retry: Option<GrpcRetry>,
}

/// `GRPCRouteMatch`: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    /// Omitted: every method of every service.
    #[serde(default)]
    pub method: Option<GrpcMethodMatch>,
    /// All must hold (at most 16, names unique).
    #[serde(default)]
    pub headers: Vec<HeaderMatchSpec>,
}

/// `GRPCMethodMatch`: at least one of `service` and `method`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: MatchType,
    /// The fully-qualified service, e.g. `billing.v1.Charges`.
    #[serde(default)]
    pub service: Option<String>,
    /// The method, e.g. `Create`.
    #[serde(default)]
    pub method: Option<String>,
}

/// meshwork's `GRPCRoute` `retry` (an extension): `HTTPRoute`'s shape, gRPC codes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRetry {
    /// gRPC statuses retried, by name (`UNAVAILABLE`) or number (`14`). Omitted: none
    /// (connect failures, resets and per-try timeouts are always retried).
    #[serde(default)]
    pub codes: Vec<GrpcCode>,
    /// Retries after the first try, 0–10 (default 1).
    #[serde(default)]
    pub attempts: Option<RetryAttempts>,
    /// Base of the exponential backoff with full jitter, 0s–10s (default 25ms).
    #[serde(default)]
    pub backoff: Option<RetryBackoff>,
}

/// The gRPC status codes a retry may name (every one but `OK`), in number order from 1.
pub const GRPC_CODES: [&str; 16] = [
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A gRPC status code other than `OK` (1–16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrpcCode(u32);

impl GrpcCode {
    /// The code's number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// A code by name (`UNAVAILABLE`) or number (`14`).
    pub fn parse(text: &str) -> Option<GrpcCode> {
        match text.parse::<u32>() {
            Ok(n) => GrpcCode::from_number(n),
            Err(_) => (1..)
                .zip(GRPC_CODES)
                .find(|(_, name)| *name == text)
                .map(|(n, _)| GrpcCode(n)),
        }
    }

    fn from_number(n: u32) -> Option<GrpcCode> {
        (1..=16).contains(&n).then_some(GrpcCode(n))
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self
            .0
            .checked_sub(1)
            .and_then(|i| GRPC_CODES.get(i as usize));
        f.write_str(name.copied().unwrap_or("?"))
    }
}

impl<'de> Deserialize<'de> for GrpcCode {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let refuse = |what: String| {
            serde::de::Error::custom(format!(
                "{what} is not a gRPC status code to retry on: a name such as UNAVAILABLE or \
                 a number from 1 to 16 (OK, 0, is never retried)"
            ))
        };
        match serde_json::Value::deserialize(de)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .and_then(GrpcCode::from_number)
                .ok_or_else(|| refuse(n.to_string())),
            serde_json::Value::String(s) => {
                GrpcCode::parse(&s).ok_or_else(|| refuse(format!("{s:?}")))
            }
            other => Err(refuse(other.to_string())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_name_and_number() {
        assert_eq!(GrpcCode::parse("UNAVAILABLE").map(GrpcCode::get), Some(14));
        assert_eq!(GrpcCode::parse("14").map(GrpcCode::get), Some(14));
        assert_eq!(GrpcCode::parse("CANCELLED").map(GrpcCode::get), Some(1));
        assert_eq!(
            GrpcCode::parse("UNAUTHENTICATED").map(GrpcCode::get),
            Some(16)
        );
        for bad in ["OK", "0", "17", "unavailable", ""] {
            assert_eq!(GrpcCode::parse(bad), None, "{bad}");
        }
        assert_eq!(GrpcCode(4).to_string(), "DEADLINE_EXCEEDED");
        let codes: Vec<GrpcCode> = serde_json::from_str(r#"["UNAVAILABLE", 4]"#).unwrap();
        assert_eq!(codes, [GrpcCode(14), GrpcCode(4)]);
        let err = serde_json::from_str::<GrpcCode>("0").unwrap_err();
        assert!(
            err.to_string().contains("0 is not a gRPC status code"),
            "{err}"
        );
    }
}
