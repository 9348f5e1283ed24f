//! Decisions: candidate lookup, rule evaluation, and the verdict rules of the crate docs.

use identity::SpiffeId;

use super::index::Candidates;
#[cfg(test)]
use super::next_id;
use super::{AuthzEntry, EgressEntry, Engine, RuleId, ServiceRules};
use crate::decision::{AuditNote, AuditOutcome, Decision, DecisionKind, DecisionReason};
use crate::model::{Action, IdentityMatcher, Mode};
use crate::request::{EgressRequest, HeaderSource, Request, TcpRequest};

/// Which `from`, `to` and path matcher of a rule matched (for the explanation).
#[derive(Debug, Clone, Copy)]
struct Hit {
    from: Option<usize>,
    to: Option<usize>,
    path: Option<usize>,
}

type Found = Option<(RuleId, Hit)>;

/// The first (smallest-id) matching rule per (action, mode).
#[derive(Default)]
struct Matches {
    enforced_deny: Found,
    enforced_allow: Found,
    audited_deny: Found,
    audited_allow: Found,
}

impl Matches {
    fn slot(&mut self, action: Action, mode: Mode) -> &mut Found {
        match (action, mode) {
            (Action::Deny, Mode::Enforce) => &mut self.enforced_deny,
            (Action::Allow, Mode::Enforce) => &mut self.enforced_allow,
            (Action::Deny, Mode::Audit) => &mut self.audited_deny,
            (Action::Allow, Mode::Audit) => &mut self.audited_allow,
        }
    }
}

enum Verdict {
    Deny(RuleId, Hit),
    Allow(RuleId, Hit),
    DefaultDeny,
    NoPolicy,
}

impl Verdict {
    /// DENY beats ALLOW; a service with an ALLOW policy is default-deny.
    fn of(deny: Found, allow: Found, has_allow_policy: bool) -> Verdict {
        match (deny, allow) {
            (Some((id, hit)), _) => Verdict::Deny(id, hit),
            (None, Some((id, hit))) => Verdict::Allow(id, hit),
            (None, None) if has_allow_policy => Verdict::DefaultDeny,
            (None, None) => Verdict::NoPolicy,
        }
    }

    fn allowed(&self) -> bool {
        matches!(self, Verdict::Allow(..) | Verdict::NoPolicy)
    }
}

/// The earlier of two matches.
fn first(a: Found, b: Found) -> Found {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// Position of the first `from` matcher selecting `caller`; `Some(None)` for an empty list.
fn caller_matches(from: &[IdentityMatcher], caller: Option<&SpiffeId>) -> Option<Option<usize>> {
    if from.is_empty() {
        return Some(None);
    }
    let caller = caller?;
    from.iter().position(|m| m.matches(caller)).map(Some)
}

impl AuthzEntry {
    fn matches<H: HeaderSource + ?Sized>(&self, req: &Request<'_, H>) -> Option<Hit> {
        let from = caller_matches(&self.from, req.caller)?;
        if self.to.is_empty() {
            return Some(Hit {
                from,
                to: None,
                path: None,
            });
        }
        self.to.iter().enumerate().find_map(|(i, to)| {
            to.matches(req.method, req.path, req.headers)
                .map(|path| Hit {
                    from,
                    to: Some(i),
                    path,
                })
        })
    }
}

impl AuthzEntry {
    /// As [`AuthzEntry::matches`] for an opaque TCP connection.
    fn matches_tcp(&self, req: &TcpRequest<'_>) -> Option<Hit> {
        let from = caller_matches(&self.from, req.caller)?;
        let deny = self.action == Action::Deny;
        let to = match self.to.is_empty() {
            true => None,
            false => Some(
                self.to
                    .iter()
                    .position(|to| to.matches_tcp(req.port, deny))?,
            ),
        };
        Some(Hit {
            from,
            to,
            path: None,
        })
    }
}

impl Engine {
    /// Decides an opaque TCP connection (see the crate docs for the semantics).
    pub fn authorize_tcp(&self, req: &TcpRequest<'_>) -> Decision {
        let Some(service) = self.services.get(req.target_service) else {
            return self.decision(Verdict::NoPolicy, req.target_service, Vec::new());
        };
        // Connections are rare next to requests: the caller index alone narrows enough.
        let mut candidates = Candidates::new();
        service.by_caller.candidates(req.caller, &mut candidates);
        let mut matches = Matches::default();
        for id in candidates.iter() {
            let Some(rule) = self.authz_rules.get(id as usize) else {
                continue;
            };
            let slot = matches.slot(rule.action, rule.mode);
            if slot.is_some_and(|(found, _)| found <= id) {
                continue;
            }
            if let Some(hit) = rule.matches_tcp(req) {
                *slot = Some((id, hit));
            }
        }
        self.authz_decision(service, matches, req.target_service)
    }

    /// Decides an inbound request (see the crate docs for the semantics).
    pub fn authorize<H: HeaderSource + ?Sized>(&self, req: &Request<'_, H>) -> Decision {
        match self.services.get(req.target_service) {
            Some(service) => self.authz_decision(
                service,
                self.authz_matches(service, req),
                req.target_service,
            ),
            None => self.decision(Verdict::NoPolicy, req.target_service, Vec::new()),
        }
    }

    /// [`Engine::authorize`] without indexes: evaluates every rule. The reference the
    /// indexed path is property-tested against (sets with one target service only).
    #[cfg(test)]
    pub(super) fn authorize_linear<H: HeaderSource + ?Sized>(
        &self,
        req: &Request<'_, H>,
    ) -> Decision {
        match self.services.get(req.target_service) {
            Some(service) => {
                let all = 0..next_id(self.authz_rules.len());
                self.authz_decision(service, self.scan_authz(all, req), req.target_service)
            }
            None => self.decision(Verdict::NoPolicy, req.target_service, Vec::new()),
        }
    }

    /// Applies the verdict rules to the matches, adding an audit note when the audit-mode
    /// policies would have changed the outcome.
    fn authz_decision(&self, service: &ServiceRules, matches: Matches, name: &str) -> Decision {
        let enforced = Verdict::of(
            matches.enforced_deny,
            matches.enforced_allow,
            service.enforced_allow,
        );
        let hypothetical = Verdict::of(
            first(matches.enforced_deny, matches.audited_deny),
            first(matches.enforced_allow, matches.audited_allow),
            service.enforced_allow || service.audited_allow,
        );
        let mut audit = Vec::new();
        if hypothetical.allowed() != enforced.allowed() {
            let outcome = if hypothetical.allowed() {
                AuditOutcome::WouldAllow
            } else {
                AuditOutcome::WouldDeny
            };
            let reason = self.decision(hypothetical, name, Vec::new()).reason;
            audit.push(AuditNote { outcome, reason });
        }
        self.decision(enforced, name, audit)
    }

    /// Scans the smaller of the caller-side and path-side candidate sets.
    fn authz_matches<H: HeaderSource + ?Sized>(
        &self,
        service: &ServiceRules,
        req: &Request<'_, H>,
    ) -> Matches {
        let mut by_caller = Candidates::new();
        service.by_caller.candidates(req.caller, &mut by_caller);
        let mut by_path = Candidates::new();
        service.by_path.candidates(req.path, &mut by_path);
        let candidates = if by_caller.len() <= by_path.len() {
            by_caller
        } else {
            by_path
        };
        self.scan_authz(candidates.iter(), req)
    }

    /// Evaluates `candidates` fully, keeping the first match per (action, mode).
    fn scan_authz<H: HeaderSource + ?Sized>(
        &self,
        candidates: impl Iterator<Item = RuleId>,
        req: &Request<'_, H>,
    ) -> Matches {
        let mut matches = Matches::default();
        for id in candidates {
            let Some(rule) = self.authz_rules.get(id as usize) else {
                continue;
            };
            let slot = matches.slot(rule.action, rule.mode);
            if slot.is_some_and(|(found, _)| found <= id) {
                continue;
            }
            if let Some(hit) = rule.matches(req) {
                *slot = Some((id, hit));
            }
        }
        matches
    }

    fn decision(&self, verdict: Verdict, service: &str, audit: Vec<AuditNote>) -> Decision {
        let allowed = verdict.allowed();
        let reason = match verdict {
            Verdict::Deny(id, hit) | Verdict::Allow(id, hit) => {
                let kind = if allowed {
                    DecisionKind::ExplicitAllow
                } else {
                    DecisionKind::ExplicitDeny
                };
                self.authz_reason(id, hit, kind)
            }
            Verdict::DefaultDeny => DecisionReason {
                policy: None,
                rule: None,
                matcher: format!(
                    "default deny: service {service} is targeted by ALLOW policies and no ALLOW rule matched"
                ),
                kind: DecisionKind::DefaultDeny,
            },
            Verdict::NoPolicy => DecisionReason {
                policy: None,
                rule: None,
                matcher: format!(
                    "no ALLOW policy targets service {service} and no DENY rule matched"
                ),
                kind: DecisionKind::NoPolicy,
            },
        };
        Decision {
            allowed,
            reason,
            audit,
        }
    }

    fn authz_reason(&self, id: RuleId, hit: Hit, kind: DecisionKind) -> DecisionReason {
        let rule = self.authz_rules.get(id as usize);
        DecisionReason {
            policy: rule.and_then(|r| self.authz_names.get(r.policy)).cloned(),
            rule: rule.map(|r| r.rule),
            matcher: rule
                .map(|r| r.texts.render(hit.from, hit.to, hit.path))
                .unwrap_or_default(),
            kind,
        }
    }

    /// Decides an egress request: allowed only when an `EgressPolicy` destination matches.
    pub fn egress(&self, req: &EgressRequest<'_>) -> Decision {
        let mut by_caller = Candidates::new();
        self.egress_by_caller
            .candidates(Some(req.caller), &mut by_caller);
        let mut by_host = Candidates::new();
        self.egress_by_host.candidates(req.host, &mut by_host);
        let candidates = if by_caller.len() <= by_host.len() {
            by_caller
        } else {
            by_host
        };
        self.egress_decision(self.scan_egress(candidates.iter(), req), req)
    }

    /// [`Engine::egress`] without indexes, the reference for property tests.
    #[cfg(test)]
    pub(super) fn egress_linear(&self, req: &EgressRequest<'_>) -> Decision {
        let all = 0..next_id(self.egress_rules.len());
        self.egress_decision(self.scan_egress(all, req), req)
    }

    fn egress_decision(&self, found: Found, req: &EgressRequest<'_>) -> Decision {
        let reason =
            match found.and_then(|(id, hit)| Some((self.egress_rules.get(id as usize)?, hit))) {
                Some((entry, hit)) => self.egress_reason(entry, hit),
                None => DecisionReason {
                    policy: None,
                    rule: None,
                    matcher: format!(
                        "default deny: no EgressPolicy allows {} to reach {}:{}",
                        req.caller, req.host, req.port
                    ),
                    kind: DecisionKind::DefaultDeny,
                },
            };
        Decision {
            allowed: found.is_some(),
            reason,
            audit: Vec::new(),
        }
    }

    /// Evaluates `candidates` fully; the first (smallest-id) match.
    fn scan_egress(
        &self,
        candidates: impl Iterator<Item = RuleId>,
        req: &EgressRequest<'_>,
    ) -> Found {
        let mut found: Found = None;
        for id in candidates {
            if found.is_some_and(|(f, _)| f <= id) {
                continue;
            }
            let Some(entry) = self.egress_rules.get(id as usize) else {
                continue;
            };
            if let Some(hit) = self.egress_matches(entry, req) {
                found = Some((id, hit));
            }
        }
        found
    }

    fn egress_matches(&self, entry: &EgressEntry, req: &EgressRequest<'_>) -> Option<Hit> {
        let from = self.egress_from.get(entry.policy)?;
        let from = caller_matches(from, Some(req.caller))?;
        let path = entry
            .destination
            .matches(req.host, req.port, req.method, req.path)?;
        // `to: 0`: an entry's texts hold its one destination at position 0.
        Some(Hit {
            from,
            to: Some(0),
            path,
        })
    }

    fn egress_reason(&self, entry: &EgressEntry, hit: Hit) -> DecisionReason {
        DecisionReason {
            policy: self.egress_names.get(entry.policy).cloned(),
            rule: Some(entry.rule),
            matcher: entry.texts.render(hit.from, hit.to, hit.path),
            kind: DecisionKind::ExplicitAllow,
        }
    }
}
