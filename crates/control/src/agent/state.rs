//! What the agent knows, published on a watch channel: entries, bundles and the
//! X.509-SVIDs it holds for them. Workload API streams subscribe to it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::entry::ProcessFacts;
use identity::{Svid, TrustBundle};
use rand::Rng;
use time::OffsetDateTime;

use api::contract::node::Entry;
use identity::JwtBundle;

/// Everything Workload API answers are made of.
#[derive(Debug, Clone)]
pub struct AgentState {
    /// Registration entries from control.
    pub entries: Vec<Entry>,
    /// X.509-SVIDs by entry id (an entry just added may not have one yet).
    pub svids: BTreeMap<String, Arc<Svid>>,
    /// The trust domain's X.509 bundle.
    pub bundle: TrustBundle,
    /// The JWT bundle as received (JWKS).
    pub jwks: String,
    /// The JWT bundle, parsed.
    pub jwt_bundle: JwtBundle,
    /// Whether the last exchange with control succeeded.
    pub control_connected: bool,
    /// When control last answered a sync.
    pub last_sync: Option<OffsetDateTime>,
}

/// What one caller is entitled to right now.
#[derive(Debug, Clone)]
pub enum Identities {
    /// No entry matches: answer `PermissionDenied`.
    None,
    /// Entries match but their SVIDs are still being minted: wait for the next state.
    Pending,
    /// `(entry, svid)` pairs, in entry-id order (the first is the default identity).
    Ready(Vec<(Entry, Arc<Svid>)>),
}

impl PartialEq for AgentState {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
            && self.bundle == other.bundle
            && self.jwks == other.jwks
            && self.svids.len() == other.svids.len()
            && self
                .svids
                .iter()
                .zip(&other.svids)
                .all(|(a, b)| a.0 == b.0 && Arc::ptr_eq(a.1, b.1))
    }
}

impl AgentState {
    /// Entries whose every selector matches `caller`.
    pub fn matching(&self, caller: &ProcessFacts) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.spec.matches(caller))
            .collect()
    }

    /// What `caller` may be issued.
    pub fn identities(&self, caller: &ProcessFacts) -> Identities {
        let matching = self.matching(caller);
        if matching.is_empty() {
            return Identities::None;
        }
        let ready: Vec<_> = matching
            .into_iter()
            .filter_map(|e| Some((e.clone(), Arc::clone(self.svids.get(&e.id)?))))
            .collect();
        if ready.is_empty() {
            Identities::Pending
        } else {
            Identities::Ready(ready)
        }
    }
}

impl PartialEq for Identities {
    /// Same entries holding the very same SVIDs (a renewal is a change).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Identities::None, Identities::None) | (Identities::Pending, Identities::Pending) => {
                true
            }
            (Identities::Ready(a), Identities::Ready(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x.0 == y.0 && Arc::ptr_eq(&x.1, &y.1))
            }
            _ => false,
        }
    }
}

/// When to renew an SVID issued now and expiring at `not_after`: at 40–50 % of its
/// remaining life (half-life minus up to 10 % jitter, so a fleet issued together
/// does not renew in lockstep), never sooner than one second.
pub fn renewal_delay(not_after: OffsetDateTime, now: OffsetDateTime) -> Duration {
    let jitter = rand::rng().random_range(0.4..=0.5);
    renewal_delay_with(not_after, now, jitter)
}

/// [`renewal_delay`] with a given fraction (deterministic; for tests).
pub fn renewal_delay_with(
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    fraction: f64,
) -> Duration {
    let remaining =
        Duration::try_from((not_after - now).max(time::Duration::ZERO)).unwrap_or_default();
    remaining.mul_f64(fraction).max(Duration::from_secs(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn renewal_is_at_half_life_minus_jitter() {
        let now = datetime!(2026-01-01 00:00 UTC);
        let exp = now + time::Duration::hours(1);
        assert_eq!(renewal_delay_with(exp, now, 0.5), Duration::from_secs(1800));
        assert_eq!(renewal_delay_with(exp, now, 0.4), Duration::from_secs(1440));
        let d = renewal_delay(exp, now);
        assert!(
            d >= Duration::from_secs(1440) && d <= Duration::from_secs(1800),
            "{d:?}"
        );
        assert_eq!(renewal_delay_with(now, now, 0.5), Duration::from_secs(1));
    }
}
