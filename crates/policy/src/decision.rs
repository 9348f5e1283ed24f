//! The result of a decision, with everything needed to explain it.

use std::fmt;

use serde::Serialize;

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// An ALLOW rule (or an egress destination) matched.
    ExplicitAllow,
    /// A DENY rule matched.
    ExplicitDeny,
    /// The service is targeted by an ALLOW policy (or this is egress) and nothing allowed it.
    DefaultDeny,
    /// No enforced ALLOW policy targets the service and no DENY rule matched.
    NoPolicy,
}

/// Which policy, rule and matcher decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionReason {
    /// Name of the deciding policy (`None` for [`DecisionKind::DefaultDeny`]/[`DecisionKind::NoPolicy`]).
    pub policy: Option<String>,
    /// Index of the deciding rule: in `rules` for an `AuthorizationPolicy`, in `to` for an
    /// `EgressPolicy`.
    pub rule: Option<usize>,
    /// Human-readable description of what matched (or why nothing did), e.g.
    /// `from[0] spiffeId spiffe://td/ns/default/sa/store; to[0] methods POST, path exact /charges`.
    pub matcher: String,
    /// The kind of decision.
    pub kind: DecisionKind,
}

/// What an audit-mode policy would have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The request was allowed but would have been denied.
    WouldDeny,
    /// The request was denied but would have been allowed.
    WouldAllow,
}

/// A note that audit-mode policies, if enforced, would have decided differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditNote {
    /// What would have happened.
    pub outcome: AuditOutcome,
    /// The reason the hypothetical decision would have carried.
    pub reason: DecisionReason,
}

/// A decision: the outcome, its reason, and audit notes (which never change the outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// What decided.
    pub reason: DecisionReason,
    /// Audit-mode findings; empty unless an audit policy would have changed the outcome.
    pub audit: Vec<AuditNote>,
}

impl fmt::Display for DecisionReason {
    /// `policy store-charges rule 0: <matcher>`, or just the matcher text when no policy decided.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.policy, self.rule) {
            (Some(p), Some(r)) => write!(f, "policy {p} rule {r}: {}", self.matcher),
            (Some(p), None) => write!(f, "policy {p}: {}", self.matcher),
            _ => f.write_str(&self.matcher),
        }
    }
}

impl fmt::Display for Decision {
    /// `allow (policy x rule 0: ...)`, followed by `; audit: would deny (...)` notes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allow" } else { "deny" };
        write!(f, "{verdict} ({})", self.reason)?;
        for note in &self.audit {
            let would = match note.outcome {
                AuditOutcome::WouldDeny => "would deny",
                AuditOutcome::WouldAllow => "would allow",
            };
            write!(f, "; audit: {would} ({})", note.reason)?;
        }
        Ok(())
    }
}
