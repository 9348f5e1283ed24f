//! The identity half of the control plane: the durable state (CA authorities, JWT
//! key, registration entries, join tokens, agents) and everything issued from it.
//!
//! Every replica reads from its [`StateCache`] and rebuilds what it signs with when the
//! identity version marker moves ([`crate::versions`]); writes are store commits that
//! end with that marker. Agents see a [`NodeView`] (entries, X.509 bundle and JWT bundle
//! under one version, the marker's revision) published on a watch channel so their long
//! polls wake on any change, whichever replica made it.

mod bootstrap;
mod state;

pub(crate) use bootstrap::latest_change;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use api::contract::SvidResponse;
use api::contract::admin::{AuthorityStatus, JoinToken};
use api::contract::node::{Entry, NodeView};
use api::entry::RegistrationEntrySpec;
use identity::{CaError, JwtError, SpiffeId, TrustBundle, TrustDomain};
use time::OffsetDateTime;
use tokio::sync::watch;

use self::state::IdentityState;
use crate::authority::AuthorityError;
use crate::keys::KeyStorage;
use crate::replica::ReplicaKey;
use crate::store::cache::StateCache;
use crate::store::typed::encode;
use crate::store::{Backend, Commit, Expect, Op, Revision, Store, StoreError, Table};
use crate::tokens::{self, JoinRefusal};
use crate::versions::View;

/// Slack on top of one SVID lifetime before a prepared root starts signing.
const ACTIVATION_MARGIN: time::Duration = time::Duration::seconds(5);

/// How long a write waits for this replica's cache to hold it before answering (the
/// write is durable either way; this only gives read-your-writes).
const SETTLE: Duration = Duration::from_secs(2);

/// How often a CA rotation is planned again after the identity state changed under it.
const ROTATE_ROUNDS: u32 = 5;

/// Ids of entries that come from `RegistrationEntry` resources: `resource.<namespace>.<name>`.
pub const RESOURCE_ENTRY_PREFIX: &str = "resource.";

/// Durable identity state and the issuing it backs.
pub struct Issuer {
    store: Arc<Store>,
    cache: Arc<StateCache>,
    keys: KeyStorage,
    trust_domain: TrustDomain,
    svid_ttl: time::Duration,
    current: RwLock<Arc<IdentityState>>,
    view: watch::Sender<Arc<NodeView>>,
    /// Serialises rebuilding, so views are published in version order.
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Creates the CA and JWT key if the store has none (importing `<state>/ca/*.pem` if
    /// there), then loads them and the entries from `cache`.
    pub async fn open(
        store: Arc<Store>,
        cache: Arc<StateCache>,
        keys: KeyStorage,
        state_dir: &Path,
        td: &TrustDomain,
        svid_ttl: time::Duration,
    ) -> Result<Issuer, AuthorityError> {
        bootstrap::bootstrap(&store, &cache, &keys, state_dir, td).await?;
        let version = View::Identity.version(&cache);
        let state = IdentityState::load(&cache, &keys, td, &store.describe())?;
        let issuer = Issuer {
            store,
            cache,
            keys,
            trust_domain: td.clone(),
            svid_ttl,
            current: RwLock::new(Arc::new(state)),
            view: watch::channel(Arc::new(NodeView::default())).0,
            refreshing: Mutex::new(()),
        };
        issuer.publish(version);
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

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// This replica's copy of the store.
    pub fn cache(&self) -> &Arc<StateCache> {
        &self.cache
    }

    fn state(&self) -> Arc<IdentityState> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Signs `csr_pem` for `id` with the active root; the answer carries the full bundle.
    pub fn sign(&self, csr_pem: &str, id: &SpiffeId) -> Result<SvidResponse, CaError> {
        let now = OffsetDateTime::now_utc();
        let state = self.state();
        let cert = state
            .authorities
            .active()
            .sign_csr(csr_pem, id, self.svid_ttl, now)?;
        Ok(SvidResponse {
            spiffe_id: id.clone(),
            cert_chain_pem: cert.to_pem(),
            bundle_pem: state.authorities.bundle().to_pem(),
            expires_at: cert.not_after().unix_timestamp(),
        })
    }

    /// The X.509 trust bundle (every published root).
    pub fn bundle(&self) -> TrustBundle {
        self.state().authorities.bundle()
    }

    /// Mints a JWT-SVID.
    pub fn mint_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
        ttl: time::Duration,
    ) -> Result<String, JwtError> {
        self.state()
            .jwt
            .mint(id, audience, ttl, OffsetDateTime::now_utc())
    }

    /// Every CA and its state.
    pub fn authorities(&self) -> Vec<AuthorityStatus> {
        self.state()
            .authorities
            .all()
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

    /// Starts a CA rotation (see [`crate::authority`]); any replica may.
    pub async fn rotate_ca(&self) -> Result<AuthorityStatus, AuthorityError> {
        let store = self.store.describe();
        for _ in 0..ROTATE_ROUNDS {
            let (state, version) = (self.state(), self.view.borrow().version);
            let now = OffsetDateTime::now_utc();
            let (seq, activate_at, op) = state.authorities.plan_rotation(
                now,
                self.activation_delay(),
                &self.keys,
                &store,
            )?;
            if let Commit::Applied(_) = self.commit_planned(vec![op], version).await? {
                tracing::info!(
                    seq,
                    activate_at,
                    "new CA prepared: in the bundle now, signing later"
                );
                let not_after = self.authorities().into_iter().find(|a| a.seq == seq);
                return Ok(AuthorityStatus {
                    seq,
                    state: api::contract::admin::AuthorityState::Prepared { activate_at },
                    not_after: not_after.map_or(0, |a| a.not_after),
                });
            }
            // Another replica rotated first and this one's cache had not seen it yet.
            self.catch_up().await;
        }
        Err(AuthorityError::Store(StoreError::Contended {
            store,
            table: Table::Authorities.name(),
            key: "(next root)".to_owned(),
            rounds: ROTATE_ROUNDS,
        }))
    }

    /// Applies due CA transitions (a leader's duty; `fence` guards the commit); the next
    /// transition's time (unix s), if any.
    pub async fn tick_ca(&self, fence: Option<Op>) -> Result<Option<i64>, AuthorityError> {
        let (state, version) = (self.state(), self.view.borrow().version);
        let mut ops = state
            .authorities
            .plan_tick(OffsetDateTime::now_utc(), self.retirement_delay());
        if !ops.is_empty() {
            ops.extend(fence);
            if let Commit::Conflict { index, .. } = self.commit_planned(ops, version).await? {
                tracing::debug!(
                    index,
                    "CA transition raced another write; retrying at the next tick"
                );
            }
        }
        Ok(self.state().authorities.next_transition())
    }

    /// Creates or replaces an entry durably, then publishes it to agents.
    pub async fn put_entry(&self, entry: Entry) -> Result<(), StoreError> {
        let op = Op::Put {
            table: Table::Entries,
            key: entry.id,
            value: encode(&entry.spec),
            expect: Expect::Any,
        };
        self.commit(vec![op], View::Identity).await.map(drop)
    }

    /// Deletes an entry durably; whether it existed.
    pub async fn delete_entry(&self, id: &str) -> Result<bool, StoreError> {
        for _ in 0..4 {
            let Some(rec) = self.store.get(Table::Entries, id).await? else {
                return Ok(false);
            };
            let op = Op::Delete {
                table: Table::Entries,
                key: id.to_owned(),
                expect: Expect::At(rec.mod_revision),
            };
            if let Commit::Applied(_) = self.commit(vec![op], View::Identity).await? {
                return Ok(true);
            }
        }
        Err(StoreError::Contended {
            store: self.store.describe(),
            table: Table::Entries.name(),
            key: id.to_owned(),
            rounds: 4,
        })
    }

    /// Makes the stored entries with ids `resource.*` exactly the `RegistrationEntry`
    /// resources of the directory (declarative; API-made entries are left alone), in one
    /// commit.
    pub async fn apply_resource_entries(
        &self,
        resources: &api::ResourceSet,
        fence: Option<Op>,
    ) -> Result<(), StoreError> {
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
        let state = self.state();
        let stale = state
            .entries
            .keys()
            .filter(|id| id.starts_with(RESOURCE_ENTRY_PREFIX) && !wanted.contains_key(*id))
            .map(|id| Op::Delete {
                table: Table::Entries,
                key: id.clone(),
                expect: Expect::Any,
            })
            .collect::<Vec<_>>();
        let changed = wanted
            .into_iter()
            .filter(|(id, spec)| state.entries.get(id) != Some(spec))
            .map(|(id, spec)| Op::Put {
                table: Table::Entries,
                value: encode(&spec),
                key: id,
                expect: Expect::Any,
            });
        let mut ops: Vec<Op> = stale.into_iter().chain(changed).collect();
        if !ops.is_empty() {
            ops.extend(fence);
            self.commit(ops, View::Identity).await?;
        }
        Ok(())
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<Entry> {
        self.state()
            .entries
            .iter()
            .map(|(id, spec)| Entry {
                id: id.clone(),
                spec: spec.clone(),
            })
            .collect()
    }

    /// One entry.
    pub fn entry(&self, id: &str) -> Option<RegistrationEntrySpec> {
        self.state().entries.get(id).cloned()
    }

    /// A new join token, stored before it is returned.
    pub async fn create_token(&self, ttl: time::Duration) -> Result<JoinToken, StoreError> {
        tokens::create(&self.store, ttl, OffsetDateTime::now_utc()).await
    }

    /// Redeems a join token and records the agent; the agent's SPIFFE ID.
    pub async fn join(&self, token: &str) -> Result<SpiffeId, JoinRefusal> {
        let now = OffsetDateTime::now_utc();
        let id = tokens::agent_id(&self.trust_domain, token);
        let record = tokens::agent_record(&id, now);
        tokens::redeem(&self.store, token, now, vec![record]).await?;
        tracing::info!(agent = %id, "agent joined");
        Ok(id)
    }

    /// Whether `id` is an agent that joined (and was not removed). From the cache; an
    /// agent that joined through another replica a moment ago is looked up in the store.
    pub async fn is_agent(&self, id: &SpiffeId) -> bool {
        if self.cache.get(Table::Agents, id.as_str()).is_some() {
            return true;
        }
        matches!(
            self.store.get(Table::Agents, id.as_str()).await,
            Ok(Some(_))
        )
    }

    /// How many agents have joined.
    pub fn agent_count(&self) -> usize {
        self.cache.all(Table::Agents).len()
    }

    /// The sidecar endpoints registered so far, by workload replica (they survive
    /// restarts, so a restarted control plane publishes complete routes before sidecars
    /// re-register). Keys of state files from before replicas read as replica 0.
    pub fn endpoints(&self) -> Result<BTreeMap<ReplicaKey, std::net::SocketAddr>, StoreError> {
        let store = self.store.describe();
        self.cache
            .all(Table::Endpoints)
            .into_iter()
            .map(|rec| {
                let replica = rec
                    .key
                    .parse::<ReplicaKey>()
                    .map_err(|e| StoreError::Record {
                        store: store.clone(),
                        table: Table::Endpoints.name(),
                        key: rec.key.clone(),
                        reason: e.to_string(),
                    })?;
                Ok((replica, state::decode(&rec, Table::Endpoints, &store)?))
            })
            .collect()
    }

    /// A receiver of every new [`NodeView`].
    pub fn subscribe(&self) -> watch::Receiver<Arc<NodeView>> {
        self.view.subscribe()
    }

    /// Commits `ops` followed by `view`'s marker; once applied, waits (briefly) until
    /// this replica's cache holds the commit and republishes, so the writer reads its
    /// own write.
    pub(crate) async fn commit(&self, mut ops: Vec<Op>, view: View) -> Result<Commit, StoreError> {
        ops.push(view.mark());
        let commit = self.store.commit(ops).await?;
        if let Commit::Applied(revision) = commit {
            self.settle(revision).await;
        }
        Ok(commit)
    }

    /// As [`commit`](Self::commit) for a plan made from the identity state at `version`:
    /// it conflicts if anything of that state changed since (CA rotations and transitions,
    /// which must not be planned from a lagging cache).
    async fn commit_planned(
        &self,
        mut ops: Vec<Op>,
        version: Revision,
    ) -> Result<Commit, StoreError> {
        ops.push(View::Identity.mark_if_at(version));
        let commit = self.store.commit(ops).await?;
        if let Commit::Applied(revision) = commit {
            self.settle(revision).await;
        }
        Ok(commit)
    }

    /// Waits until the cache holds `revision` (at most [`SETTLE`]) and republishes.
    pub(crate) async fn settle(&self, revision: Revision) {
        if !self.cache.caught_up(revision, SETTLE).await {
            tracing::warn!(
                revision,
                "the state cache lags behind a write; it will publish it when it arrives"
            );
        }
        self.refresh();
    }

    /// Waits until the cache holds the CA records the store holds now.
    async fn catch_up(&self) {
        if let Ok(revision) = bootstrap::latest_change(&self.store, &[Table::Authorities]).await {
            self.settle(revision).await;
        }
    }

    /// Rebuilds and publishes the identity state if its version marker moved (called by
    /// the publisher on every cache change, and after this replica's own writes).
    pub(crate) fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        // The version is read once, before the records: content newer than its version
        // is corrected by the next refresh; a version newer than its content would not be.
        let version = View::Identity.version(&self.cache);
        if version <= self.view.borrow().version {
            return;
        }
        let store = self.store.describe();
        match IdentityState::load(&self.cache, &self.keys, &self.trust_domain, &store) {
            Ok(state) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
                self.publish(version);
            }
            Err(error) => {
                tracing::error!(%error, "the stored identity state does not load; serving the previous one")
            }
        }
    }

    fn publish(&self, version: Revision) {
        let state = self.state();
        let view = NodeView {
            version,
            entries: self.entries(),
            bundle_pem: state.authorities.bundle().to_pem(),
            jwks: state.jwt.jwks(),
        };
        self.view.send_replace(Arc::new(view));
    }
}
