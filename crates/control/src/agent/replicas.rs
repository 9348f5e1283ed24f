//! The control-plane replicas an agent may talk to, and which one it talks to now.
//!
//! Any replica can serve an agent, since replicas share one store (`meshwork control
//! --etcd`, docs/scale.md), so the agent keeps one list and one current replica. It stays
//! on the current one while it answers (sticky: no rebalancing churn); when connecting to it
//! fails or does not finish within 2 s, the next in the list is tried at once, then the one
//! after, each once per call; a sync that fails transiently (5xx, a hang) also moves on.
//! Only when all fail does the call fail, and the caller's jittered backoff
//! ([`api::contract::client::Backoff`]) spaces the next round, while the agent keeps
//! serving from its last state (static stability). Agents start at a random replica so
//! a fleet spreads over the replicas.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The replicas and the current one.
#[derive(Debug)]
pub struct Replicas {
    addrs: Vec<SocketAddr>,
    current: AtomicUsize,
}

impl Replicas {
    /// The replicas at `addrs` (at least one), starting at a random one.
    pub fn new(addrs: Vec<SocketAddr>) -> Replicas {
        let start = match addrs.len() {
            0 | 1 => 0,
            n => rand::random_range(0..n),
        };
        Replicas {
            addrs,
            current: AtomicUsize::new(start),
        }
    }

    /// Every replica, in order.
    pub fn all(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The current replica's index and address (`None`: the list is empty).
    pub fn current(&self) -> Option<(usize, SocketAddr)> {
        let i = self.current.load(Ordering::Acquire) % self.addrs.len().max(1);
        self.addrs.get(i).map(|a| (i, *a))
    }

    /// The current replica answered with a transient error: move on (see [`failed`](Self::failed)).
    pub fn failed_current(&self) {
        if let Some((i, _)) = self.current() {
            self.failed(i);
        }
    }

    /// Replica `failed` did not answer: make the next one current, unless another call
    /// already moved on from it (so concurrent failures skip one replica, not several).
    pub fn failed(&self, failed: usize) {
        let next = (failed + 1) % self.addrs.len().max(1);
        if self
            .current
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && let Some(addr) = self.addrs.get(next)
        {
            tracing::warn!(failed = %self.addrs[failed], next = %addr, "control replica unreachable; failing over");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], 1000 + p)))
            .collect()
    }

    #[test]
    fn failover_moves_on_once_per_failure_and_wraps() {
        let replicas = Replicas::new(addrs(3));
        let (first, _) = replicas.current().unwrap();
        replicas.failed(first);
        let (second, _) = replicas.current().unwrap();
        assert_eq!(second, (first + 1) % 3);
        // A second caller reporting the same failure does not skip a replica.
        replicas.failed(first);
        assert_eq!(replicas.current().unwrap().0, second);
        replicas.failed(second);
        replicas.failed((second + 1) % 3);
        assert_eq!(replicas.current().unwrap().0, first, "wrapped around");
    }

    #[test]
    fn starts_are_spread_and_one_replica_is_always_current() {
        let starts: std::collections::BTreeSet<usize> = (0..64)
            .map(|_| Replicas::new(addrs(3)).current().unwrap().0)
            .collect();
        assert!(starts.len() > 1, "every agent started at the same replica");
        let one = Replicas::new(addrs(1));
        one.failed(0);
        assert_eq!(one.current().unwrap().0, 0);
        assert!(Replicas::new(Vec::new()).current().is_none());
    }
}
