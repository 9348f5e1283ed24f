//! Which sidecar an endpoint belongs to: a workload and one of its replicas.
//!
//! Endpoints are kept (in memory and in the state file's `endpoints` table) by
//! [`ReplicaKey`], so each replica of a `Workload` with `spec.replicas` has its own entry
//! and a replica that registers again (restarted, or after a control-plane restart)
//! replaces only its own. The persisted key is the workload's name for replica 0 — what
//! every state file written before replicas existed holds — and `<name>.<replica>` for
//! the others (a `Workload` name is a DNS label: it never contains a dot).

use std::fmt;
use std::str::FromStr;

/// A workload's replica, as registered by its sidecar.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaKey {
    /// The workload's `metadata.name`.
    pub workload: String,
    /// The replica, from 0.
    pub replica: u16,
}

/// A persisted endpoint key that is not `<name>` or `<name>.<replica>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint key {key:?} is not <workload> or <workload>.<replica 0-65535>")]
pub struct ReplicaKeyError {
    /// The key as stored.
    pub key: String,
}

impl ReplicaKey {
    /// `workload`'s replica `replica`.
    pub fn new(workload: impl Into<String>, replica: u16) -> ReplicaKey {
        ReplicaKey {
            workload: workload.into(),
            replica,
        }
    }
}

impl fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.replica {
            0 => f.write_str(&self.workload),
            n => write!(f, "{}.{n}", self.workload),
        }
    }
}

impl FromStr for ReplicaKey {
    type Err = ReplicaKeyError;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        let error = || ReplicaKeyError {
            key: key.to_owned(),
        };
        let (workload, replica) = match key.split_once('.') {
            None => (key, 0),
            Some((workload, replica)) => {
                // `0` is spelled without a suffix, so exactly one spelling exists per key.
                let replica: u16 = replica.parse().map_err(|_| error())?;
                if replica == 0 || replica.to_string().len() != key.len() - workload.len() - 1 {
                    return Err(error());
                }
                (workload, replica)
            }
        };
        if workload.is_empty() {
            return Err(error());
        }
        Ok(ReplicaKey::new(workload, replica))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_zero_is_the_bare_name_older_state_files_hold() {
        let key: ReplicaKey = "billing".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key, ReplicaKey::new("billing", 0));
        assert_eq!(key.to_string(), "billing");
    }

    #[test]
    fn other_replicas_carry_their_index() {
        let key = ReplicaKey::new("billing", 3);
        assert_eq!(key.to_string(), "billing.3");
        assert_eq!("billing.3".parse::<ReplicaKey>(), Ok(key));
    }

    #[test]
    fn every_key_has_one_spelling_and_garbage_is_refused() {
        for bad in [
            "billing.0",
            "billing.03",
            "billing.+3",
            "billing.",
            ".1",
            "",
            "a.b",
        ] {
            assert!(bad.parse::<ReplicaKey>().is_err(), "{bad:?} was accepted");
        }
        assert!("billing.70000".parse::<ReplicaKey>().is_err());
    }
}
