//! The trust domain's X.509 authorities and their rotation.
//!
//! Normally one root is `Active` (it signs). `meshwork ca rotate` adds a new root as
//! `Prepared`: it is published in the trust bundle at once but signs nothing until
//! `activate_at`, one SVID lifetime (plus a margin) later — by then every holder of an
//! SVID has renewed at least once and so holds the new bundle. At activation the old
//! root becomes `Retiring`: still in the bundle until every SVID it signed has expired
//! (another SVID lifetime plus the clock-skew allowance), then it is dropped.
//!
//! Records live in the state file ([`crate::store`]); the legacy `<state>/ca/*.pem`
//! files of earlier releases are imported once (and left in place).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::contract::admin::AuthorityState;
use identity::{Ca, CaPem, TrustBundle, TrustDomain};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::redb::RedbStore;
use crate::store::{StateError, Table};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthorityRecord {
    cert_pem: String,
    key_pem: String,
    #[serde(flatten)]
    state: AuthorityState,
}

/// A stored CA that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// The state file failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A stored (or legacy) CA does not load.
    #[error("CA {what} in {}: {source}; refusing to replace it", path.display())]
    Invalid {
        /// Which record or file.
        what: String,
        /// The state file or legacy directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: identity::CaError,
    },
    /// The stored CA belongs to another trust domain than the Mesh asks for.
    #[error("CA in {} is for trust domain {found}, but the Mesh says {wanted}; move the state away to start a new CA", path.display())]
    WrongTrustDomain {
        /// The state file.
        path: PathBuf,
        /// The stored CA's trust domain.
        found: TrustDomain,
        /// The configured trust domain.
        wanted: TrustDomain,
    },
    /// The records do not have exactly one active root.
    #[error("state file {} holds {active} active CAs; exactly one is needed", path.display())]
    NotOneActive {
        /// The state file.
        path: PathBuf,
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
    /// Its key in the state file (creation order).
    pub seq: u64,
    /// The CA.
    pub ca: Arc<Ca>,
    /// Where it is in its life.
    pub state: AuthorityState,
}

/// Every root of the trust domain.
#[derive(Debug)]
pub struct Authorities {
    list: Vec<Authority>,
}

impl Authorities {
    /// Loads the stored roots; on first start imports `<state>/ca/*.pem` or generates one.
    pub fn load_or_create(
        store: &RedbStore,
        state_dir: &Path,
        td: &TrustDomain,
        now: OffsetDateTime,
    ) -> Result<Self, AuthorityError> {
        let mut list = load_all(store)?;
        if list.is_empty() {
            let (ca, imported) = match legacy_ca(state_dir)? {
                Some(ca) => (ca, true),
                None => (generate(td, now, state_dir)?, false),
            };
            let authority = Authority {
                seq: 1,
                ca: Arc::new(ca),
                state: AuthorityState::Active,
            };
            persist(store, &authority)?;
            tracing::info!(trust_domain = %td, imported, "CA stored in {}", store.path().display());
            list.push(authority);
        }
        check(store, &list, td)?;
        Ok(Authorities { list })
    }

    /// The signing root.
    pub fn active(&self) -> &Arc<Ca> {
        // invariant: load_or_create and tick keep exactly one Active authority.
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

    /// Prepares a new root, published now and signing from `now + activate_after`.
    pub fn rotate(
        &mut self,
        store: &RedbStore,
        now: OffsetDateTime,
        activate_after: time::Duration,
    ) -> Result<&Authority, AuthorityError> {
        if let Some(AuthorityState::Prepared { activate_at }) = self
            .list
            .iter()
            .map(|a| a.state)
            .find(|s| matches!(s, AuthorityState::Prepared { .. }))
        {
            return Err(AuthorityError::RotationInProgress { activate_at });
        }
        let td = self.active().trust_domain().clone();
        let ca = generate(&td, now, store.path())?;
        let seq = self.list.iter().map(|a| a.seq).max().unwrap_or(0) + 1;
        let activate_at = (now + activate_after).unix_timestamp();
        let authority = Authority {
            seq,
            ca: Arc::new(ca),
            state: AuthorityState::Prepared { activate_at },
        };
        persist(store, &authority)?;
        tracing::info!(
            seq,
            activate_at,
            "new CA prepared: in the bundle now, signing later"
        );
        let index = self.list.len();
        self.list.push(authority);
        Ok(&self.list[index])
    }

    /// Applies due transitions (activate a prepared root, drop a retired one);
    /// whether anything changed (the bundle or the signer).
    pub fn tick(
        &mut self,
        store: &RedbStore,
        now: OffsetDateTime,
        retire_after: time::Duration,
    ) -> Result<bool, AuthorityError> {
        let t = now.unix_timestamp();
        let mut changed = false;
        let due = |a: &Authority| matches!(a.state, AuthorityState::Prepared { activate_at } if activate_at <= t);
        if let Some(pos) = self.list.iter().position(due) {
            let retire_at = (now + retire_after).unix_timestamp();
            for a in self
                .list
                .iter_mut()
                .filter(|a| a.state == AuthorityState::Active)
            {
                a.state = AuthorityState::Retiring { retire_at };
                persist(store, a)?;
            }
            self.list[pos].state = AuthorityState::Active;
            persist(store, &self.list[pos])?;
            tracing::info!(
                seq = self.list[pos].seq,
                "new CA active; the previous one retires at {retire_at}"
            );
            changed = true;
        }
        let retired: Vec<u64> = self
            .list
            .iter()
            .filter(|a| matches!(a.state, AuthorityState::Retiring { retire_at } if retire_at <= t))
            .map(|a| a.seq)
            .collect();
        for seq in retired {
            store.delete_now(Table::Authorities, &key(seq))?;
            self.list.retain(|a| a.seq != seq);
            tracing::info!(seq, "old CA left the trust bundle");
            changed = true;
        }
        Ok(changed)
    }

    /// The next time [`Authorities::tick`] has something to do.
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

/// Every stored root, oldest first.
fn load_all(store: &RedbStore) -> Result<Vec<Authority>, AuthorityError> {
    let mut list = Vec::new();
    for (key, rec) in store.all::<AuthorityRecord>(Table::Authorities)? {
        let ca = Ca::from_pem(&rec.cert_pem, &rec.key_pem).map_err(|source| {
            AuthorityError::Invalid {
                what: format!("authorities/{key}"),
                path: store.path().to_owned(),
                source,
            }
        })?;
        let seq = key.parse().unwrap_or_default();
        list.push(Authority {
            seq,
            ca: Arc::new(ca),
            state: rec.state,
        });
    }
    Ok(list)
}

/// Every root is of `td`, and exactly one is active.
fn check(store: &RedbStore, list: &[Authority], td: &TrustDomain) -> Result<(), AuthorityError> {
    for a in list {
        if a.ca.trust_domain() != td {
            let found = a.ca.trust_domain().clone();
            return Err(AuthorityError::WrongTrustDomain {
                path: store.path().to_owned(),
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
            path: store.path().to_owned(),
            active,
        });
    }
    Ok(())
}

fn key(seq: u64) -> String {
    format!("{seq:020}")
}

fn persist(store: &RedbStore, a: &Authority) -> Result<(), AuthorityError> {
    let CaPem { cert_pem, key_pem } = a.ca.to_pem();
    let rec = AuthorityRecord {
        cert_pem,
        key_pem,
        state: a.state,
    };
    store.put_now(Table::Authorities, &key(a.seq), &rec)?;
    Ok(())
}

fn generate(td: &TrustDomain, now: OffsetDateTime, path: &Path) -> Result<Ca, AuthorityError> {
    Ca::generate(td.clone(), now).map_err(|source| AuthorityError::Invalid {
        what: "generation".into(),
        path: path.to_owned(),
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
            path: dir.clone(),
            source,
        }
    })?;
    Ok(Some(ca))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HOUR: time::Duration = time::Duration::hours(1);

    fn setup() -> (tempfile::TempDir, RedbStore, TrustDomain, OffsetDateTime) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        (
            dir,
            store,
            "example.org".parse().unwrap(),
            OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn the_ca_is_created_once_and_reloaded() {
        let (dir, store, td, now) = setup();
        let first = Authorities::load_or_create(&store, dir.path(), &td, now).unwrap();
        let again = Authorities::load_or_create(&store, dir.path(), &td, now).unwrap();
        assert_eq!(first.active().certificate(), again.active().certificate());
        let other: TrustDomain = "other.org".parse().unwrap();
        let err = Authorities::load_or_create(&store, dir.path(), &other, now).unwrap_err();
        assert!(
            matches!(err, AuthorityError::WrongTrustDomain { .. }),
            "{err}"
        );
    }

    #[test]
    fn rotation_publishes_first_then_signs_then_retires() {
        let (dir, store, td, now) = setup();
        let mut auth = Authorities::load_or_create(&store, dir.path(), &td, now).unwrap();
        let old = auth.active().certificate().clone();
        let new = auth
            .rotate(&store, now, HOUR)
            .unwrap()
            .ca
            .certificate()
            .clone();
        assert!(matches!(
            auth.rotate(&store, now, HOUR),
            Err(AuthorityError::RotationInProgress { .. })
        ));
        // Published before it signs.
        assert_eq!(auth.bundle().roots(), [old.clone(), new.clone()]);
        assert_eq!(auth.active().certificate(), &old);
        assert!(!auth.tick(&store, now + HOUR / 2, HOUR).unwrap());
        // Signs after the overlap; the old root stays trusted.
        assert!(auth.tick(&store, now + HOUR, HOUR).unwrap());
        assert_eq!(auth.active().certificate(), &new);
        assert_eq!(auth.bundle().roots().len(), 2);
        // The state survives a restart mid-rotation.
        let reloaded = Authorities::load_or_create(&store, dir.path(), &td, now).unwrap();
        assert_eq!(reloaded.active().certificate(), &new);
        // Gone once everything it signed has expired.
        assert!(auth.tick(&store, now + HOUR * 2, HOUR).unwrap());
        assert_eq!(auth.bundle().roots(), [new]);
        assert_eq!(auth.next_transition(), None);
    }

    #[test]
    fn legacy_pem_files_are_imported() {
        let (dir, store, td, now) = setup();
        let ca = Ca::generate(td.clone(), now).unwrap();
        std::fs::create_dir(dir.path().join("ca")).unwrap();
        std::fs::write(dir.path().join("ca/cert.pem"), ca.to_pem().cert_pem).unwrap();
        std::fs::write(dir.path().join("ca/key.pem"), ca.to_pem().key_pem).unwrap();
        let auth = Authorities::load_or_create(&store, dir.path(), &td, now).unwrap();
        assert_eq!(auth.active().certificate(), ca.certificate());
    }
}
