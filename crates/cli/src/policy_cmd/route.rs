//! The route part of `meshwork policy explain`: which `HTTPRoute`/`GRPCRoute` rule the
//! caller's sidecar applies to the request being explained (through the same
//! [`Matcher`] the proxy uses), with its timeouts and retries, or the default route.

use api::contract::traffic::{Matcher, RouteRule, ServiceTraffic};
use api::duration::format_millis;
use serde_json::json;

/// What the caller's sidecar does with the request.
pub enum RouteVerdict {
    /// The service has no such name (so no routes either).
    UnknownService,
    /// No rule matches (or none is attached): no timeout, no retries.
    Default,
    /// This rule matches.
    Rule(Box<RouteRule>),
    /// The service's traffic does not compile (a running mesh of another version, say).
    Broken(String),
}

impl RouteVerdict {
    /// Selects the rule for `method path` (normalised) with `headers` (lower-case names).
    pub fn select(
        traffic: Option<&ServiceTraffic>,
        method: &str,
        path: &str,
        headers: &[(String, String)],
    ) -> RouteVerdict {
        let Some(traffic) = traffic else {
            return RouteVerdict::UnknownService;
        };
        let matcher = match Matcher::compile(traffic) {
            Ok(m) => m,
            Err(e) => return RouteVerdict::Broken(e.to_string()),
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_bytes())
        };
        match matcher.select(method, path, header) {
            Some((_, rule)) => RouteVerdict::Rule(Box::new(rule.clone())),
            None => RouteVerdict::Default,
        }
    }

    /// `route     HTTPRoute/default/billing rule charges: timeout 3s, …` (one line).
    pub fn text(&self) -> String {
        match self {
            RouteVerdict::UnknownService => "route     - (no such service)\n".to_owned(),
            RouteVerdict::Default => {
                "route     default route (no timeout, no retries)\n".to_owned()
            }
            RouteVerdict::Broken(e) => format!("route     not explained: {e}\n"),
            RouteVerdict::Rule(rule) => format!("route     {}: {}\n", rule.name, describe(rule)),
        }
    }

    /// The verdict as JSON: `null` for an unknown service, `{"rule": null}` for the default.
    pub fn json(&self) -> serde_json::Value {
        match self {
            RouteVerdict::UnknownService => serde_json::Value::Null,
            RouteVerdict::Default => json!({"rule": null, "default": true}),
            RouteVerdict::Broken(e) => json!({"error": e}),
            RouteVerdict::Rule(rule) => json!({
                "rule": rule.name, "default": false,
                "request_timeout_ms": rule.request_timeout_ms,
                "backend_request_timeout_ms": rule.backend_request_timeout_ms,
                "retry": rule.retry,
                "backends": rule.backends,
            }),
        }
    }
}

/// `timeout 3s, per try 1s, 2 retries on 502, 503, 504 (backoff 25ms up to 250ms)`.
fn describe(rule: &RouteRule) -> String {
    let mut parts = Vec::new();
    parts.push(match rule.request_timeout_ms {
        Some(ms) => format!("timeout {}", format_millis(ms)),
        None => "no timeout".to_owned(),
    });
    if let Some(ms) = rule.backend_request_timeout_ms {
        parts.push(format!("per try {}", format_millis(ms)));
    }
    parts.push(match &rule.retry {
        Some(r) if r.attempts > 0 => {
            let mut codes: Vec<String> = r.codes.iter().map(u16::to_string).collect();
            codes.extend(r.grpc_codes.iter().map(|c| format!("grpc-status {c}")));
            let on = match codes.is_empty() {
                true => "connect failures and resets only".to_owned(),
                false => format!("on {}", codes.join(", ")),
            };
            let tries = match r.attempts {
                1 => "1 retry".to_owned(),
                n => format!("{n} retries"),
            };
            format!(
                "{tries} {on} (backoff {} up to {})",
                format_millis(r.backoff_ms),
                format_millis(r.max_backoff_ms)
            )
        }
        _ => "no retries".to_owned(),
    });
    if !rule.backends.is_empty() {
        let split: Vec<String> = rule
            .backends
            .iter()
            .map(|b| format!("{} ×{}", b.service, b.weight))
            .collect();
        parts.push(format!("backends {}", split.join(", ")));
    }
    parts.join(", ")
}
