//! JWT-SVIDs the agent already holds, by entry and audience set.
//!
//! A cached token is reused until half its lifetime has passed (then a fresh one is
//! minted), and — static stability — for as long as it is valid when control cannot
//! be reached.

use std::collections::BTreeMap;
use std::sync::Mutex;

use api::contract::client::CallError;
use api::contract::node::{JwtSvid, JwtSvidRequest, JwtSvidResponse};

use super::client::NodeClient;

/// At most this many tokens are kept; expired ones are dropped first.
const MAX_ENTRIES: usize = 1024;

type Key = (String, Vec<String>);

/// Tokens by `(entry id, sorted audiences)`, with the time each was minted.
#[derive(Debug, Default)]
pub struct JwtCache {
    tokens: Mutex<BTreeMap<Key, (i64, JwtSvidResponse)>>,
}

impl JwtCache {
    /// A token for `entry_id` and `audience`: cached while fresh, else minted by
    /// control, else (control unreachable) cached while still valid.
    pub async fn token(
        &self,
        client: &NodeClient,
        entry_id: &str,
        audience: &[String],
        now: i64,
    ) -> Result<JwtSvidResponse, CallError> {
        let mut sorted = audience.to_vec();
        sorted.sort();
        let key = (entry_id.to_owned(), sorted);
        let cached = self.lock().get(&key).cloned();
        if let Some((minted_at, t)) = &cached
            && now < minted_at + (t.expires_at - minted_at) / 2
        {
            return Ok(t.clone());
        }
        let body = JwtSvidRequest {
            entry_id: entry_id.to_owned(),
            audience: audience.to_vec(),
        };
        match client.call(&JwtSvid, &body).await {
            Ok(fresh) => {
                let mut tokens = self.lock();
                if tokens.len() >= MAX_ENTRIES {
                    tokens.retain(|_, (_, t)| t.expires_at > now);
                }
                if tokens.len() < MAX_ENTRIES {
                    tokens.insert(key, (now, fresh.clone()));
                }
                Ok(fresh)
            }
            Err(e) if e.is_transient() => match cached {
                Some((_, t)) if t.expires_at > now => Ok(t),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, (i64, JwtSvidResponse)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}
