//! The identity half of the control plane: the durable state (CA authorities, JWT
//! key, registration entries, join tokens, agents) and everything issued from it.
//!
//! Agents see a [`NodeView`] — entries, X.509 bundle and JWT bundle under one
//! version — published on a watch channel so their long polls wake on any change
//! (a new entry, a CA rotation step).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use api::contract::SvidResponse;
use api::contract::admin::{AuthorityStatus, JoinToken};
use api::contract::node::{Entry, NodeView};
use api::entry::RegistrationEntrySpec;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::{CaError, SpiffeId, TrustBundle, TrustDomain};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::authority::{Authorities, AuthorityError};
use crate::replica::ReplicaKey;
use crate::store::redb::RedbStore;
use crate::store::{StateError, Table};
use crate::tokens::{self, JoinRefusal};
use identity::{JwtAuthority, JwtError, JwtKeyMaterial};

/// Slack on top of one SVID lifetime before a prepared root starts signing.
const ACTIVATION_MARGIN: time::Duration = time::Duration::seconds(5);

/// Ids of entries that come from `RegistrationEntry` resources: `resource.<namespace>.<name>`.
pub const RESOURCE_ENTRY_PREFIX: &str = "resource.";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentRecord {
    joined_at: i64,
}

/// Durable identity state and the issuing it backs.
pub struct Issuer {
    store: RedbStore,
    trust_domain: TrustDomain,
    svid_ttl: time::Duration,
    authorities: RwLock<Authorities>,
    jwt: JwtAuthority,
    entries: Mutex<BTreeMap<String, RegistrationEntrySpec>>,
    view: watch::Sender<Arc<NodeView>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Opens the state file in `state_dir` and loads (or creates) the CA and JWT key.
    pub fn open(
        state_dir: &Path,
        td: &TrustDomain,
        svid_ttl: time::Duration,
    ) -> Result<Issuer, AuthorityError> {
        let store = RedbStore::open(state_dir)?;
        let now = OffsetDateTime::now_utc();
        let authorities = Authorities::load_or_create(&store, state_dir, td, now)?;
        let jwt = load_jwt(&store)?;
        let entries = store
            .all::<RegistrationEntrySpec>(Table::Entries)?
            .into_iter()
            .collect();
        let issuer = Issuer {
            store,
            trust_domain: td.clone(),
            svid_ttl,
            authorities: RwLock::new(authorities),
            jwt,
            entries: Mutex::new(entries),
            view: watch::channel(Arc::new(NodeView::default())).0,
        };
        issuer.publish()?;
        Ok(issuer)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The lifetime of issued X.509-SVIDs.
    pub fn svid_ttl(&self) -> time::Duration {
        self.svid_ttl
    }

    /// The state file.
    pub fn store(&self) -> &RedbStore {
        &self.store
    }

    /// Signs `csr_pem` for `id` with the active root; the answer carries the full bundle.
    pub fn sign(&self, csr_pem: &str, id: &SpiffeId) -> Result<SvidResponse, CaError> {
        let now = OffsetDateTime::now_utc();
        let auth = self.authorities.read().unwrap_or_else(|p| p.into_inner());
        let cert = auth.active().sign_csr(csr_pem, id, self.svid_ttl, now)?;
        Ok(SvidResponse {
            spiffe_id: id.clone(),
            cert_chain_pem: cert.to_pem(),
            bundle_pem: auth.bundle().to_pem(),
            expires_at: cert.not_after().unix_timestamp(),
        })
    }

    /// The X.509 trust bundle (every published root).
    pub fn bundle(&self) -> TrustBundle {
        self.authorities
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .bundle()
    }

    /// Mints a JWT-SVID.
    pub fn mint_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
        ttl: time::Duration,
    ) -> Result<String, JwtError> {
        self.jwt.mint(id, audience, ttl, OffsetDateTime::now_utc())
    }

    /// Every CA and its state.
    pub fn authorities(&self) -> Vec<AuthorityStatus> {
        let auth = self.authorities.read().unwrap_or_else(|p| p.into_inner());
        auth.all()
            .iter()
            .map(|a| AuthorityStatus {
                seq: a.seq,
                state: a.state,
                not_after: a.ca.not_after().unix_timestamp(),
            })
            .collect()
    }

    /// How long a new root is published before it signs: every SVID holder renews
    /// (and so receives the new bundle) within half an SVID lifetime; we wait a whole
    /// one plus a margin for propagation.
    pub fn activation_delay(&self) -> time::Duration {
        self.svid_ttl + ACTIVATION_MARGIN
    }

    /// How long a replaced root stays in the bundle: until everything it signed has
    /// expired, even for verifiers whose clocks lag by the skew allowance.
    pub fn retirement_delay(&self) -> time::Duration {
        self.svid_ttl + identity::CLOCK_SKEW_ALLOWANCE
    }

    /// Starts a CA rotation (see [`crate::authority`]).
    pub fn rotate_ca(&self) -> Result<AuthorityStatus, AuthorityError> {
        let status = {
            let mut auth = self.authorities.write().unwrap_or_else(|p| p.into_inner());
            let a = auth.rotate(
                &self.store,
                OffsetDateTime::now_utc(),
                self.activation_delay(),
            )?;
            AuthorityStatus {
                seq: a.seq,
                state: a.state,
                not_after: a.ca.not_after().unix_timestamp(),
            }
        };
        self.publish()?;
        Ok(status)
    }

    /// Applies due CA transitions; the next one's time (unix s), if any.
    pub fn tick_ca(&self) -> Result<Option<i64>, AuthorityError> {
        let (changed, next) = {
            let mut auth = self.authorities.write().unwrap_or_else(|p| p.into_inner());
            let changed = auth.tick(
                &self.store,
                OffsetDateTime::now_utc(),
                self.retirement_delay(),
            )?;
            (changed, auth.next_transition())
        };
        if changed {
            self.publish()?;
        }
        Ok(next)
    }

    /// Creates or replaces an entry durably, then publishes it to agents.
    pub fn put_entry(&self, entry: Entry) -> Result<(), StateError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.store.put_now(Table::Entries, &entry.id, &entry.spec)?;
        entries.insert(entry.id, entry.spec);
        drop(entries);
        self.publish()
    }

    /// Deletes an entry durably; whether it existed.
    pub fn delete_entry(&self, id: &str) -> Result<bool, StateError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let existed = self.store.delete_now(Table::Entries, id)?;
        entries.remove(id);
        drop(entries);
        self.publish()?;
        Ok(existed)
    }

    /// Makes the stored entries with ids `resource.*` exactly the `RegistrationEntry`
    /// resources of the directory (declarative; API-made entries are left alone).
    pub fn apply_resource_entries(&self, resources: &api::ResourceSet) -> Result<(), StateError> {
        let wanted: BTreeMap<String, RegistrationEntrySpec> = resources
            .registration_entries
            .iter()
            .map(|e| {
                let meta = &e.resource.metadata;
                (
                    format!("{RESOURCE_ENTRY_PREFIX}{}.{}", meta.namespace, meta.name),
                    e.resource.spec.clone(),
                )
            })
            .collect();
        let stale: Vec<String> = self
            .entries()
            .into_iter()
            .filter(|e| e.id.starts_with(RESOURCE_ENTRY_PREFIX) && !wanted.contains_key(&e.id))
            .map(|e| e.id)
            .collect();
        for id in stale {
            self.delete_entry(&id)?;
        }
        for (id, spec) in wanted {
            if self.entry(&id).as_ref() != Some(&spec) {
                self.put_entry(Entry { id, spec })?;
            }
        }
        Ok(())
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|(id, spec)| Entry {
                id: id.clone(),
                spec: spec.clone(),
            })
            .collect()
    }

    /// One entry.
    pub fn entry(&self, id: &str) -> Option<RegistrationEntrySpec> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// A new join token, stored before it is returned.
    pub fn create_token(&self, ttl: time::Duration) -> Result<JoinToken, StateError> {
        tokens::create(&self.store, ttl, OffsetDateTime::now_utc())
    }

    /// Redeems a join token and records the agent; the agent's SPIFFE ID.
    pub fn join(&self, token: &str) -> Result<SpiffeId, JoinRefusal> {
        let now = OffsetDateTime::now_utc();
        let id = tokens::agent_id(&self.trust_domain, token);
        let record = AgentRecord {
            joined_at: now.unix_timestamp(),
        };
        tokens::redeem_recording(
            &self.store,
            token,
            now,
            Some((Table::Agents, id.as_str(), &record)),
        )?;
        tracing::info!(agent = %id, "agent joined");
        Ok(id)
    }

    /// Whether `id` is an agent that joined (and was not removed).
    pub fn is_agent(&self, id: &SpiffeId) -> bool {
        matches!(
            self.store
                .read_now::<AgentRecord>(Table::Agents, id.as_str()),
            Ok(Some(_))
        )
    }

    /// How many agents have joined.
    pub fn agent_count(&self) -> usize {
        self.store
            .all::<AgentRecord>(Table::Agents)
            .map(|a| a.len())
            .unwrap_or(0)
    }

    /// The sidecar endpoints registered so far, by workload replica (they survive
    /// restarts, so a restarted control plane publishes complete routes before sidecars
    /// re-register). Keys of state files from before replicas read as replica 0.
    pub fn endpoints(&self) -> Result<BTreeMap<ReplicaKey, std::net::SocketAddr>, StateError> {
        self.store
            .all(Table::Endpoints)?
            .into_iter()
            .map(|(key, addr)| match key.parse::<ReplicaKey>() {
                Ok(replica) => Ok((replica, addr)),
                Err(e) => Err(self.store.bad_key(Table::Endpoints, &key, e)),
            })
            .collect()
    }

    /// Records a sidecar endpoint durably, replacing that replica's earlier one.
    pub fn put_endpoint(
        &self,
        replica: &ReplicaKey,
        addr: std::net::SocketAddr,
    ) -> Result<(), StateError> {
        self.store
            .put_now(Table::Endpoints, &replica.to_string(), &addr)
    }

    /// A receiver of every new [`NodeView`].
    pub fn subscribe(&self) -> watch::Receiver<Arc<NodeView>> {
        self.view.subscribe()
    }

    /// The next (persisted) version number.
    pub fn next_version(&self) -> Result<u64, StateError> {
        self.store.next_version()
    }

    fn publish(&self) -> Result<(), StateError> {
        let version = self.store.next_version()?;
        let view = NodeView {
            version,
            entries: self.entries(),
            bundle_pem: self.bundle().to_pem(),
            jwks: self.jwt.jwks(),
        };
        self.view.send_replace(Arc::new(view));
        Ok(())
    }
}

/// The stored form of the JWT signing key: its id and its PKCS#8 DER, base64 (standard
/// alphabet), as in every state file so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JwtKeyRecord {
    kid: String,
    pkcs8: String,
}

impl JwtKeyRecord {
    fn new(material: &JwtKeyMaterial) -> JwtKeyRecord {
        JwtKeyRecord {
            kid: material.kid.clone(),
            pkcs8: B64.encode(&material.pkcs8),
        }
    }

    fn material(&self) -> Result<JwtKeyMaterial, JwtError> {
        let pkcs8 = B64
            .decode(&self.pkcs8)
            .map_err(|_| JwtError::Crypto("decoding the stored JWT key"))?;
        Ok(JwtKeyMaterial {
            kid: self.kid.clone(),
            pkcs8,
        })
    }
}

fn load_jwt(store: &RedbStore) -> Result<JwtAuthority, AuthorityError> {
    let invalid = |e: JwtError| {
        AuthorityError::State(StateError::Record {
            path: store.path().to_owned(),
            table: "jwt_keys".into(),
            key: String::new(),
            source: serde_json::Error::io(std::io::Error::other(e.to_string())),
        })
    };
    if let Some((_, rec)) = store
        .all::<JwtKeyRecord>(Table::JwtKeys)?
        .into_iter()
        .next()
    {
        return JwtAuthority::from_material(&rec.material().map_err(invalid)?).map_err(invalid);
    }
    let (jwt, material) = JwtAuthority::generate().map_err(invalid)?;
    let rec = JwtKeyRecord::new(&material);
    store.put_now(Table::JwtKeys, &rec.kid, &rec)?;
    Ok(jwt)
}
