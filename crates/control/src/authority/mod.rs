//! The trust domain's X.509 authorities and their rotation.
//!
//! Normally one root is `Active` (it signs). `meshwork ca rotate` adds a new root as
//! `Prepared`: it is published in the trust bundle at once but signs nothing until
//! `activate_at`, one SVID lifetime (plus a margin) later — by then every holder of an
//! SVID has renewed at least once and so holds the new bundle. At activation the old
//! root becomes `Retiring`: still in the bundle until every SVID it signed has expired
//! (another SVID lifetime plus the clock-skew allowance), then it is dropped.
//!
//! This module only reads records and plans changes as store operations; the issuer
//! commits them (with the identity version marker), and every replica rebuilds its
//! [`Authorities`] from the records its cache then holds. Private keys are stored as
//! [`KeyStorage`] says (sealed in a shared store). The legacy `<state>/ca/*.pem` files of
//! earlier releases are imported once (and left in place).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::contract::admin::AuthorityState;
use identity::{Ca, CaPem, TrustBundle, TrustDomain};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::keys::{KeyError, KeyStorage, StoredKey};
use crate::store::typed::encode;
use crate::store::{Expect, Op, Record, Revision, StoreError, Table};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthorityRecord {
    cert_pem: String,
    key_pem: StoredKey,
    #[serde(flatten)]
    state: AuthorityState,
}

/// A stored CA that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored (or legacy) CA does not load.
    #[error("CA {what} in {store}: {source}; refusing to replace it")]
    Invalid {
        /// Which record or file.
        what: String,
        /// The store or legacy directory.
        store: String,
        /// Why.
        #[source]
        source: identity::CaError,
    },
    /// A stored CA's private key cannot be opened.
    #[error("CA in {store}: {source}; refusing to replace it")]
    Key {
        /// The store.
        store: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The stored CA belongs to another trust domain than the Mesh asks for.
    #[error(
        "CA in {store} is for trust domain {found}, but the Mesh says {wanted}; move the state away to start a new CA"
    )]
    WrongTrustDomain {
        /// The store.
        store: String,
        /// The stored CA's trust domain.
        found: TrustDomain,
        /// The configured trust domain.
        wanted: TrustDomain,
    },
    /// The records do not have exactly one active root.
    #[error("{store} holds {active} active CAs; exactly one is needed")]
    NotOneActive {
        /// The store.
        store: String,
        /// How many were found.
        active: usize,
    },
    /// A rotation is already under way.
    #[error("a CA rotation is already in progress (new root activates at {activate_at})")]
    RotationInProgress {
        /// When the prepared root activates (unix s).
        activate_at: i64,
    },
    /// Reading a legacy PEM file failed.
    #[error("legacy CA file {}: {source}", path.display())]
    Legacy {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One root and its state.
#[derive(Debug, Clone)]
pub struct Authority {
    /// Its key in the store (creation order).
    pub seq: u64,
    /// The CA.
    pub ca: Arc<Ca>,
    /// Where it is in its life.
    pub state: AuthorityState,
    /// The revision of its record's last change (for guarded writes).
    revision: Revision,
    /// Its record as stored (a state change rewrites it with the key as it was stored).
    stored: AuthorityRecord,
}

/// Every root of the trust domain.
#[derive(Debug)]
pub struct Authorities {
    list: Vec<Authority>,
}

impl Authorities {
    /// The roots `records` (the authorities table, in key order) hold, checked: all of
    /// `td`, exactly one active. `store` names the store in errors.
    pub fn from_records(
        records: &[Record],
        keys: &KeyStorage,
        td: &TrustDomain,
        store: &str,
    ) -> Result<Authorities, AuthorityError> {
        let list = records
            .iter()
            .map(|rec| decode(rec, keys, store))
            .collect::<Result<Vec<_>, _>>()?;
        check(store, &list, td)?;
        Ok(Authorities { list })
    }

    /// The first root of a new trust domain: imported from `<state>/ca/*.pem` if there,
    /// otherwise generated; the operation that creates it only if no root exists yet
    /// (the loser of two replicas starting at once reads the winner's).
    pub fn first(
        state_dir: &Path,
        td: &TrustDomain,
        now: OffsetDateTime,
        keys: &KeyStorage,
    ) -> Result<Op, AuthorityError> {
        let (ca, imported) = match legacy_ca(state_dir)? {
            Some(ca) => (ca, true),
            None => (generate(td, now, state_dir)?, false),
        };
        tracing::info!(trust_domain = %td, imported, "new CA");
        Ok(put(1, &ca, AuthorityState::Active, keys, Expect::Absent))
    }

    /// The signing root.
    pub fn active(&self) -> &Arc<Ca> {
        // invariant: from_records keeps exactly one Active authority.
        let active = self.list.iter().find(|a| a.state == AuthorityState::Active);
        &active.unwrap_or(&self.list[0]).ca
    }

    /// Every root and its state, oldest first.
    pub fn all(&self) -> &[Authority] {
        &self.list
    }

    /// The trust bundle: every root still in it (prepared, active, retiring).
    pub fn bundle(&self) -> TrustBundle {
        let td = self.active().trust_domain().clone();
        let roots = self
            .list
            .iter()
            .map(|a| a.ca.certificate().clone())
            .collect();
        // invariant: every root already formed a one-root bundle when it was loaded.
        TrustBundle::new(td, roots).unwrap_or_else(|_| self.active().bundle())
    }

    /// Plans a new root, published now and signing from `now + activate_after`: the new
    /// root's sequence number, its activation time and the operation (which fails as a
    /// conflict if another replica prepared that root first).
    pub fn plan_rotation(
        &self,
        now: OffsetDateTime,
        activate_after: time::Duration,
        keys: &KeyStorage,
        store: &str,
    ) -> Result<(u64, i64, Op), AuthorityError> {
        if let Some(AuthorityState::Prepared { activate_at }) = self
            .list
            .iter()
            .map(|a| a.state)
            .find(|s| matches!(s, AuthorityState::Prepared { .. }))
        {
            return Err(AuthorityError::RotationInProgress { activate_at });
        }
        let td = self.active().trust_domain().clone();
        let ca = generate(&td, now, Path::new(store))?;
        let seq = self.list.iter().map(|a| a.seq).max().unwrap_or(0) + 1;
        let activate_at = (now + activate_after).unix_timestamp();
        let state = AuthorityState::Prepared { activate_at };
        Ok((seq, activate_at, put(seq, &ca, state, keys, Expect::Absent)))
    }

    /// Plans the due transitions (activate a prepared root, drop a retired one) as
    /// operations that apply only if no record changed since it was read; empty when
    /// nothing is due.
    pub fn plan_tick(&self, now: OffsetDateTime, retire_after: time::Duration) -> Vec<Op> {
        let t = now.unix_timestamp();
        let mut ops = Vec::new();
        let due = |a: &Authority| matches!(a.state, AuthorityState::Prepared { activate_at } if activate_at <= t);
        if let Some(next) = self.list.iter().find(|a| due(a)) {
            let retire_at = (now + retire_after).unix_timestamp();
            for a in self
                .list
                .iter()
                .filter(|a| a.state == AuthorityState::Active)
            {
                ops.push(a.with_state(AuthorityState::Retiring { retire_at }));
            }
            ops.push(next.with_state(AuthorityState::Active));
            tracing::info!(
                seq = next.seq,
                "new CA activates; the previous one retires at {retire_at}"
            );
        }
        for a in &self.list {
            if matches!(a.state, AuthorityState::Retiring { retire_at } if retire_at <= t) {
                tracing::info!(seq = a.seq, "old CA leaves the trust bundle");
                ops.push(Op::Delete {
                    table: Table::Authorities,
                    key: key(a.seq),
                    expect: Expect::At(a.revision),
                });
            }
        }
        ops
    }

    /// The next time [`Authorities::plan_tick`] has something to do.
    pub fn next_transition(&self) -> Option<i64> {
        self.list
            .iter()
            .filter_map(|a| match a.state {
                AuthorityState::Prepared { activate_at } => Some(activate_at),
                AuthorityState::Retiring { retire_at } => Some(retire_at),
                AuthorityState::Active => None,
            })
            .min()
    }
}

impl Authority {
    /// The operation that moves this root to `state`, if its record is unchanged.
    fn with_state(&self, state: AuthorityState) -> Op {
        let record = AuthorityRecord {
            state,
            ..self.stored.clone()
        };
        Op::Put {
            table: Table::Authorities,
            key: key(self.seq),
            value: encode(&record),
            expect: Expect::At(self.revision),
        }
    }
}

fn put(seq: u64, ca: &Ca, state: AuthorityState, keys: &KeyStorage, expect: Expect) -> Op {
    let CaPem { cert_pem, key_pem } = ca.to_pem();
    let key_pem = keys.store(Table::Authorities, &key(seq), &key_pem);
    let record = AuthorityRecord {
        cert_pem,
        key_pem,
        state,
    };
    Op::Put {
        table: Table::Authorities,
        key: key(seq),
        value: encode(&record),
        expect,
    }
}

/// One stored root.
fn decode(rec: &Record, keys: &KeyStorage, store: &str) -> Result<Authority, AuthorityError> {
    let stored: AuthorityRecord =
        serde_json::from_slice(&rec.value).map_err(|e| StoreError::Record {
            store: store.to_owned(),
            table: Table::Authorities.name(),
            key: rec.key.clone(),
            reason: e.to_string(),
        })?;
    let key_pem = keys
        .open(Table::Authorities, &rec.key, &stored.key_pem)
        .map_err(|source| AuthorityError::Key {
            store: store.to_owned(),
            source,
        })?;
    let ca =
        Ca::from_pem(&stored.cert_pem, &key_pem).map_err(|source| AuthorityError::Invalid {
            what: format!("authorities/{}", rec.key),
            store: store.to_owned(),
            source,
        })?;
    Ok(Authority {
        seq: rec.key.parse().unwrap_or_default(),
        ca: Arc::new(ca),
        state: stored.state,
        revision: rec.mod_revision,
        stored,
    })
}

/// Every root is of `td`, and exactly one is active.
fn check(store: &str, list: &[Authority], td: &TrustDomain) -> Result<(), AuthorityError> {
    for a in list {
        if a.ca.trust_domain() != td {
            let found = a.ca.trust_domain().clone();
            return Err(AuthorityError::WrongTrustDomain {
                store: store.to_owned(),
                found,
                wanted: td.clone(),
            });
        }
    }
    let active = list
        .iter()
        .filter(|a| a.state == AuthorityState::Active)
        .count();
    if active != 1 {
        return Err(AuthorityError::NotOneActive {
            store: store.to_owned(),
            active,
        });
    }
    Ok(())
}

fn key(seq: u64) -> String {
    format!("{seq:020}")
}

fn generate(td: &TrustDomain, now: OffsetDateTime, path: &Path) -> Result<Ca, AuthorityError> {
    Ca::generate(td.clone(), now).map_err(|source| AuthorityError::Invalid {
        what: "generation".into(),
        store: path.display().to_string(),
        source,
    })
}

/// `<state>/ca/{cert,key}.pem` from before the state file existed, if present.
fn legacy_ca(state_dir: &Path) -> Result<Option<Ca>, AuthorityError> {
    let dir = state_dir.join("ca");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert_path.exists() && !key_path.exists() {
        return Ok(None);
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| AuthorityError::Legacy {
            path: p.to_owned(),
            source,
        })
    };
    let ca = Ca::from_pem(&read(&cert_path)?, &read(&key_path)?).map_err(|source| {
        AuthorityError::Invalid {
            what: "ca/*.pem".into(),
            store: dir.display().to_string(),
            source,
        }
    })?;
    Ok(Some(ca))
}

#[cfg(test)]
mod tests;
