//! A policy decision on the span of the request it decided (inbound authorization and
//! egress policy alike).

use opentelemetry::KeyValue;
use policy::{Decision, DecisionReason};

use super::{SpanNotes, attr};

/// Puts `decision` (whose id is `id`, as in the log line and the 403) on a span: outcome,
/// id, policy and rule; a denial marks the span as an error naming the policy; audit-mode
/// findings become `authz.audit` events.
pub fn note_decision(notes: &SpanNotes, decision: &Decision, id: &str) {
    let reason = &decision.reason;
    let outcome = if decision.allowed { "allow" } else { "deny" };
    notes.attribute(KeyValue::new(attr::DECISION, outcome));
    notes.attribute(KeyValue::new(attr::DECISION_ID, id.to_owned()));
    if let Some(policy) = &reason.policy {
        notes.attribute(KeyValue::new(attr::POLICY, policy.clone()));
    }
    if let Some(rule) = reason.rule {
        notes.attribute(KeyValue::new(attr::RULE, rule as i64));
    }
    if !decision.allowed {
        notes.error(denial_description(reason));
    }
    for finding in &decision.audit {
        let mut attributes = vec![
            KeyValue::new(attr::DECISION_ID, id.to_owned()),
            KeyValue::new("outcome", format!("{:?}", finding.outcome)),
        ];
        if let Some(policy) = &finding.reason.policy {
            attributes.push(KeyValue::new(attr::POLICY, policy.clone()));
        }
        if let Some(rule) = finding.reason.rule {
            attributes.push(KeyValue::new(attr::RULE, rule as i64));
        }
        notes.event("authz.audit", attributes);
    }
}

/// The span status of a denial: the policy and rule that denied, or the default deny.
fn denial_description(reason: &DecisionReason) -> String {
    match (&reason.policy, reason.rule) {
        (Some(policy), Some(rule)) => format!("denied by policy {policy} rule {rule}"),
        (Some(policy), None) => format!("denied by policy {policy}"),
        (None, _) => format!("denied: {}", reason.matcher),
    }
}
