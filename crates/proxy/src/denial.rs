//! Requests refused by policy, inbound or egress: a 403 with a JSON body that names the
//! decision, and a decision id that ties the body to the proxy's log line.
//!
//! The refusal also carries a [`Denied`] response extension: what telemetry, `/decisions`
//! and the tap count as this sidecar's own denial. The [`DECISION_ID_HEADER`] is for the
//! caller; a response header proves nothing on this side (the app, or an egress server,
//! could set it), so this sidecar never reads it for its own decisions, and strips
//! `x-meshwork-*` from the app's and egress servers' responses
//! ([`crate::reserved_headers::strip_reserved_response`]).

use http::{HeaderValue, Response, StatusCode};
use policy::DecisionReason;
use serde_json::{Value, json};

use crate::body::{ProxyBody, json_response};

/// A fresh id for one decision (64 random bits, hex): quoted in the 403 body and the log.
pub fn decision_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The response header carrying the decision id (clients that hide a CONNECT's 403 body,
/// like curl, still show headers with `-v`).
pub const DECISION_ID_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-meshwork-decision-id");

/// Response extension: this sidecar's own policy refusal (set only by [`forbidden`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The decision id (as in the body, the header and the log line).
    pub decision_id: HeaderValue,
    /// The policy that refused (`namespace/name`); `None` for a default deny, and for a
    /// peer's denial seen outbound (the caller's side only saw the 403).
    pub policy: Option<String>,
    /// The rule of that policy, from 0.
    pub rule: Option<u32>,
}

/// `403` with `{"error": code, "policy", "rule", "decision_id", "kind", "matcher", ...context}`
/// and the [`DECISION_ID_HEADER`], and the [`Denied`] extension. `policy` and `rule` are `null` when no rule decided (a
/// default deny).
pub fn forbidden(
    code: &'static str,
    decision_id: &str,
    reason: &DecisionReason,
    context: Value,
) -> Response<ProxyBody> {
    let mut body = json!({
        "error": code,
        "policy": reason.policy,
        "rule": reason.rule,
        "decision_id": decision_id,
        "kind": reason.kind,
        "matcher": reason.matcher,
    });
    if let (Some(body), Value::Object(context)) = (body.as_object_mut(), context) {
        body.extend(context);
    }
    let mut response = json_response(StatusCode::FORBIDDEN, &body);
    if let Ok(value) = HeaderValue::from_str(decision_id) {
        response
            .headers_mut()
            .insert(DECISION_ID_HEADER, value.clone());
        response.extensions_mut().insert(Denied {
            decision_id: value,
            policy: reason.policy.clone(),
            rule: reason.rule.and_then(|rule| u32::try_from(rule).ok()),
        });
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use policy::DecisionKind;

    #[tokio::test]
    async fn body_names_policy_rule_and_decision_id() {
        let reason = DecisionReason {
            policy: Some("default/p".to_owned()),
            rule: Some(1),
            matcher: "to[0] methods POST".to_owned(),
            kind: DecisionKind::ExplicitDeny,
        };
        let response = forbidden("forbidden", "00ff", &reason, json!({"service": "billing"}));
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[DECISION_ID_HEADER], "00ff");
        assert_eq!(
            response.extensions().get::<Denied>(),
            Some(&Denied {
                decision_id: HeaderValue::from_static("00ff"),
                policy: Some("default/p".to_owned()),
                rule: Some(1),
            })
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            json!({"error": "forbidden", "policy": "default/p", "rule": 1, "decision_id": "00ff",
                   "kind": "explicit_deny", "matcher": "to[0] methods POST", "service": "billing"})
        );
        assert_eq!(decision_id().len(), 16);
    }
}
