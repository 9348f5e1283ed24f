//! Requests refused by policy, inbound or egress: a 403 with a JSON body that names the
//! decision, and a decision id that ties the body to the proxy's log line.

use http::{Response, StatusCode};
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

/// `403` with `{"error": code, "policy", "rule", "decision_id", "kind", "matcher", ...context}`
/// and the [`DECISION_ID_HEADER`]. `policy` and `rule` are `null` when no rule decided (a
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
    if let Ok(value) = http::HeaderValue::from_str(decision_id) {
        response.headers_mut().insert(DECISION_ID_HEADER, value);
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
