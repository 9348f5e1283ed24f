//! One-time, expiring join tokens for node attestation.
//!
//! A token is 32 random bytes (base64url); only its SHA-256 is stored, so the
//! state file never holds a usable token. Redeeming one is a single write
//! transaction (look up, check, mark used), so two agents racing with the same
//! token cannot both join.

use api::contract::admin::JoinToken;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use identity::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::store::redb::{AlsoPut, RedbStore};
use crate::store::{StateError, Table};

/// Default lifetime of a join token.
pub const DEFAULT_TOKEN_TTL: time::Duration = time::Duration::minutes(10);

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
    /// The state file failed (not the presenter's fault; retry later).
    #[error(transparent)]
    State(#[from] StateError),
}

/// Creates and durably stores a token valid for `ttl`.
pub fn create(
    store: &RedbStore,
    ttl: time::Duration,
    now: OffsetDateTime,
) -> Result<JoinToken, StateError> {
    let mut secret = [0u8; 32];
    // ring's SystemRandom only fails if the OS RNG is unavailable; rand's OsRng is the same source.
    rand::Rng::fill(&mut rand::rng(), &mut secret);
    let token = B64.encode(secret);
    let expires_at = (now + ttl).unix_timestamp();
    store.put_now(
        Table::Tokens,
        &digest(&token),
        &TokenRecord {
            expires_at,
            used_at: None,
        },
    )?;
    Ok(JoinToken { token, expires_at })
}

/// Marks `token` used if it is known, unused and unexpired.
#[cfg(test)]
pub fn redeem(store: &RedbStore, token: &str, now: OffsetDateTime) -> Result<(), JoinRefusal> {
    redeem_recording::<()>(store, token, now, None)
}

/// As [`redeem`], writing `record` (the joined agent) in the same transaction, so a
/// token is never spent without its agent being recorded.
pub fn redeem_recording<X: Serialize>(
    store: &RedbStore,
    token: &str,
    now: OffsetDateTime,
    record: AlsoPut<'_, X>,
) -> Result<(), JoinRefusal> {
    let t = now.unix_timestamp();
    let check = |current: Option<TokenRecord>| match current {
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
    store.modify_and_put(Table::Tokens, &digest(token), check, record)?
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

    #[test]
    fn a_token_joins_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let t = create(&store, DEFAULT_TOKEN_TTL, now).unwrap();
        redeem(&store, &t.token, now).unwrap();
        assert!(matches!(
            redeem(&store, &t.token, now),
            Err(JoinRefusal::AlreadyUsed)
        ));
        assert!(matches!(
            redeem(&store, "made-up", now),
            Err(JoinRefusal::Unknown)
        ));
    }

    #[test]
    fn an_expired_token_is_refused_and_stays_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let t = create(&store, time::Duration::minutes(1), now).unwrap();
        let later = now + time::Duration::minutes(1);
        assert!(matches!(
            redeem(&store, &t.token, later),
            Err(JoinRefusal::Expired(_))
        ));
        assert!(matches!(
            redeem(&store, &t.token, later),
            Err(JoinRefusal::Expired(_))
        ));
    }

    #[test]
    fn the_agent_is_recorded_with_the_redemption_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let t = create(&store, DEFAULT_TOKEN_TTL, now).unwrap();
        let rec = serde_json::json!({"joined_at": 1});
        redeem_recording(&store, &t.token, now, Some((Table::Agents, "a", &rec))).unwrap();
        let again = redeem_recording(&store, &t.token, now, Some((Table::Agents, "b", &rec)));
        assert!(matches!(again, Err(JoinRefusal::AlreadyUsed)));
        let agents: Vec<(String, serde_json::Value)> = store.all(Table::Agents).unwrap();
        assert_eq!(agents, vec![("a".to_owned(), rec)]);
    }

    #[test]
    fn tokens_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        let t = create(&store, DEFAULT_TOKEN_TTL, OffsetDateTime::now_utc()).unwrap();
        let keys: Vec<(String, serde_json::Value)> = store.all(Table::Tokens).unwrap();
        assert_eq!(keys.len(), 1);
        assert_ne!(keys[0].0, t.token);
        assert!(
            !std::fs::read(store.path())
                .unwrap()
                .windows(t.token.len())
                .any(|w| w == t.token.as_bytes())
        );
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
