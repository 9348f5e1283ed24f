//! One-time, expiring join tokens for node attestation.
//!
//! A token is 32 random bytes (base64url); only its SHA-256 is stored, so the
//! store never holds a usable token. Redeeming one is a guarded read-check-write
//! (look up, check, mark used, record the agent, in one commit), so two agents racing
//! with the same token, through one replica or two, cannot both join.

use api::contract::admin::JoinToken;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use identity::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::store::typed::{Decision, encode};
use crate::store::{Backend, Commit, Expect, Op, Store, StoreError, Table};

/// Default lifetime of a join token.
pub const DEFAULT_TOKEN_TTL: time::Duration = time::Duration::minutes(10);

/// How long a used or expired token's record is kept before the sweep removes it (so a
/// late second use still reads "already used" / "expired" rather than "unknown").
pub const TOKEN_KEEP: time::Duration = time::Duration::hours(1);

/// The most records one sweep commit removes.
const SWEEP_BATCH: usize = 128;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    expires_at: i64,
    #[serde(default)]
    used_at: Option<i64>,
}

/// Why a join token was refused. The messages are safe to show the presenter.
#[derive(Debug, thiserror::Error)]
pub enum JoinRefusal {
    /// Not a token this control plane issued.
    #[error("join token is unknown")]
    Unknown,
    /// Already redeemed once.
    #[error("join token was already used")]
    AlreadyUsed,
    /// Its lifetime has passed.
    #[error("join token expired at {0}")]
    Expired(i64),
    /// The store failed (not the presenter's fault; retry later if it is transient).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates and durably stores a token valid for `ttl`.
pub async fn create(
    store: &Store,
    ttl: time::Duration,
    now: OffsetDateTime,
) -> Result<JoinToken, StoreError> {
    let mut secret = [0u8; 32];
    // ring's SystemRandom only fails if the OS RNG is unavailable; rand's OsRng is the same source.
    rand::Rng::fill(&mut rand::rng(), &mut secret);
    let token = B64.encode(secret);
    let expires_at = (now + ttl).unix_timestamp();
    let record = TokenRecord {
        expires_at,
        used_at: None,
    };
    store.put(Table::Tokens, &digest(&token), &record).await?;
    Ok(JoinToken { token, expires_at })
}

/// Marks `token` used if it is known, unused and unexpired, committing `also` (the
/// joined agent's record) with it, so a token is never spent without its agent being
/// recorded. Two replicas redeeming one token at once: one commit applies, the other
/// conflicts, reads again and finds it used.
pub async fn redeem(
    store: &Store,
    token: &str,
    now: OffsetDateTime,
    also: Vec<Op>,
) -> Result<(), JoinRefusal> {
    let t = now.unix_timestamp();
    let decide = |current: Option<TokenRecord>| {
        let (value, answer) = match current {
            None => (None, Err(JoinRefusal::Unknown)),
            Some(rec) if rec.used_at.is_some() => (None, Err(JoinRefusal::AlreadyUsed)),
            Some(rec) if rec.expires_at <= t => (None, Err(JoinRefusal::Expired(rec.expires_at))),
            Some(rec) => (
                Some(TokenRecord {
                    used_at: Some(t),
                    ..rec
                }),
                Ok(()),
            ),
        };
        Decision {
            value,
            also: also.clone(),
            answer,
        }
    };
    let (answer, _) = store.modify(Table::Tokens, &digest(token), decide).await?;
    answer
}

/// Removes the records of tokens used or expired more than [`TOKEN_KEEP`] ago, in
/// commits of at most [`SWEEP_BATCH`], each also carrying `fence` (a leader's duty);
/// how many were removed.
pub async fn sweep(
    store: &Store,
    now: OffsetDateTime,
    fence: Option<Op>,
) -> Result<usize, StoreError> {
    let cutoff = (now - TOKEN_KEEP).unix_timestamp();
    let (records, _) = store.list(Table::Tokens).await?;
    let stale: Vec<Op> = records
        .into_iter()
        .filter(|r| {
            serde_json::from_slice::<TokenRecord>(&r.value)
                .is_ok_and(|t| t.used_at.unwrap_or(t.expires_at).min(t.expires_at) <= cutoff)
        })
        .map(|r| Op::Delete {
            table: Table::Tokens,
            key: r.key,
            expect: Expect::At(r.mod_revision),
        })
        .collect();
    let mut removed = 0;
    for batch in stale.chunks(SWEEP_BATCH) {
        let mut ops = batch.to_vec();
        ops.extend(fence.clone());
        // A conflict means a record changed or leadership moved: the next sweep retries.
        if let Commit::Applied(_) = store.commit(ops).await? {
            removed += batch.len();
        }
    }
    Ok(removed)
}

/// The record of an agent that joined at `now`, to commit with the redemption.
pub fn agent_record(id: &SpiffeId, now: OffsetDateTime) -> Op {
    #[derive(Serialize)]
    struct AgentRecord {
        joined_at: i64,
    }
    Op::Put {
        table: Table::Agents,
        key: id.as_str().to_owned(),
        value: encode(&AgentRecord {
            joined_at: now.unix_timestamp(),
        }),
        expect: Expect::Any,
    }
}

/// The SPIFFE ID an agent that joined with `token` receives:
/// `spiffe://<td>/meshwork/agent/join_token/<first 16 hex digits of SHA-256(token)>`.
pub fn agent_id(td: &TrustDomain, token: &str) -> SpiffeId {
    let path = format!("/meshwork/agent/join_token/{}", &digest(token)[..16]);
    // invariant: a fixed prefix and hex digits form a valid SPIFFE path.
    SpiffeId::new(td.clone(), &path).unwrap_or_else(|_| td.spiffe_id())
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Redb(RedbStore::open(dir.path()).unwrap());
        (dir, store)
    }

    #[tokio::test]
    async fn a_token_joins_once() {
        let (_dir, store) = store();
        let now = OffsetDateTime::now_utc();
        let t = create(&store, DEFAULT_TOKEN_TTL, now).await.unwrap();
        redeem(&store, &t.token, now, vec![]).await.unwrap();
        assert!(matches!(
            redeem(&store, &t.token, now, vec![]).await,
            Err(JoinRefusal::AlreadyUsed)
        ));
        assert!(matches!(
            redeem(&store, "made-up", now, vec![]).await,
            Err(JoinRefusal::Unknown)
        ));
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_and_stays_refused() {
        let (_dir, store) = store();
        let now = OffsetDateTime::now_utc();
        let t = create(&store, time::Duration::minutes(1), now)
            .await
            .unwrap();
        let later = now + time::Duration::minutes(1);
        for _ in 0..2 {
            assert!(matches!(
                redeem(&store, &t.token, later, vec![]).await,
                Err(JoinRefusal::Expired(_))
            ));
        }
    }

    #[tokio::test]
    async fn the_agent_is_recorded_with_the_redemption_and_only_then() {
        let (_dir, store) = store();
        let now = OffsetDateTime::now_utc();
        let t = create(&store, DEFAULT_TOKEN_TTL, now).await.unwrap();
        let td: TrustDomain = "example.org".parse().unwrap();
        let (a, b) = (agent_id(&td, "a"), agent_id(&td, "b"));
        redeem(&store, &t.token, now, vec![agent_record(&a, now)])
            .await
            .unwrap();
        let again = redeem(&store, &t.token, now, vec![agent_record(&b, now)]).await;
        assert!(matches!(again, Err(JoinRefusal::AlreadyUsed)));
        let agents: Vec<(String, serde_json::Value)> = store.read_all(Table::Agents).await.unwrap();
        let ids: Vec<&str> = agents.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ids, [a.as_str()]);
    }

    #[tokio::test]
    async fn tokens_are_stored_hashed_and_swept_an_hour_after_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Redb(RedbStore::open(dir.path()).unwrap());
        let now = OffsetDateTime::now_utc();
        let t = create(&store, DEFAULT_TOKEN_TTL, now).await.unwrap();
        let fresh = create(&store, DEFAULT_TOKEN_TTL, now).await.unwrap();
        let keys: Vec<(String, serde_json::Value)> = store.read_all(Table::Tokens).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|(k, _)| *k != t.token));
        let file = std::fs::read(dir.path().join(crate::store::STATE_FILE)).unwrap();
        assert!(!file.windows(t.token.len()).any(|w| w == t.token.as_bytes()));
        redeem(&store, &t.token, now, vec![]).await.unwrap();
        assert_eq!(sweep(&store, now + TOKEN_KEEP / 2, None).await.unwrap(), 0);
        assert_eq!(sweep(&store, now + TOKEN_KEEP, None).await.unwrap(), 1);
        // The unused one stays until it has been expired for as long.
        assert!(matches!(
            redeem(&store, &t.token, now, vec![]).await,
            Err(JoinRefusal::Unknown)
        ));
        redeem(&store, &fresh.token, now, vec![]).await.unwrap();
    }

    #[test]
    fn agent_ids_are_stable_per_token() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let id = agent_id(&td, "abc");
        assert!(
            id.as_str()
                .starts_with("spiffe://example.org/meshwork/agent/join_token/")
        );
        assert_eq!(id, agent_id(&td, "abc"));
    }
}
