//! Operator routes on the control socket (`<state>/control.sock`, mode 0600: only the
//! owner can reach them): join tokens, registration entries, CA rotation, status. The wire
//! types and calls are [`api::contract::admin`].
//!
//! - `POST /v1/admin/tokens` `{ "ttl_secs": 600 }` → [`JoinToken`]
//! - `GET /v1/admin/entries` → `[Entry]`
//! - `PUT /v1/admin/entries/{id}` [`RegistrationEntrySpec`] → 204 (durable before the answer)
//! - `DELETE /v1/admin/entries/{id}` → 204 / 404
//! - `POST /v1/admin/ca/rotate` → the prepared [`AuthorityStatus`] (409 while one is pending)
//! - `GET /v1/admin/status` → [`ControlStatus`]

use std::sync::Arc;

use api::contract::admin::{AuthorityStatus, ControlStatus, JoinToken, TokenRequest};
use api::contract::node::Entry;
use api::duration::HumanDuration;
use api::entry::RegistrationEntrySpec;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::tokens::DEFAULT_TOKEN_TTL;
use crate::{ControlError, Registry};

pub(crate) fn router() -> Router<Arc<Registry>> {
    Router::new()
        .route("/v1/admin/tokens", post(create_token))
        .route("/v1/admin/entries", get(list_entries))
        .route(
            "/v1/admin/entries/{id}",
            put(put_entry).delete(delete_entry),
        )
        .route("/v1/admin/ca/rotate", post(rotate_ca))
        .route("/v1/admin/status", get(status))
}

async fn create_token(
    State(registry): State<Arc<Registry>>,
    Json(req): Json<TokenRequest>,
) -> Result<Json<JoinToken>, ControlError> {
    let ttl = token_ttl(req.ttl_secs)?;
    Ok(Json(registry.issuer().create_token(ttl).await?))
}

/// A token's lifetime: 10 minutes when absent; positive and at most
/// [`HumanDuration::MAX`] (3650 days, meshwork's bound on every duration), so that
/// `now + ttl` can never overflow whatever a client of the socket sends.
fn token_ttl(ttl_secs: Option<u64>) -> Result<time::Duration, ControlError> {
    let max = HumanDuration::MAX.get().as_secs();
    match ttl_secs {
        None => Ok(DEFAULT_TOKEN_TTL),
        Some(s) if (1..=max).contains(&s) => Ok(time::Duration::seconds(
            // invariant: s <= 3650 days in seconds, far below i64::MAX.
            i64::try_from(s).unwrap_or(i64::MAX),
        )),
        Some(_) => Err(ControlError::request(
            StatusCode::BAD_REQUEST,
            "bad_ttl",
            format!("ttl_secs must be between 1 and {max} (3650 days)"),
        )),
    }
}

async fn list_entries(State(registry): State<Arc<Registry>>) -> Json<Vec<Entry>> {
    Json(registry.issuer().entries())
}

async fn put_entry(
    State(registry): State<Arc<Registry>>,
    Path(id): Path<String>,
    Json(spec): Json<RegistrationEntrySpec>,
) -> Result<StatusCode, ControlError> {
    let issuer = registry.issuer();
    if spec.selectors.is_empty() {
        let msg = "an entry needs at least one selector (an empty list would match every process)";
        return Err(ControlError::request(
            StatusCode::BAD_REQUEST,
            "no_selectors",
            msg,
        ));
    }
    if spec.spiffe_id.trust_domain() != issuer.trust_domain() {
        let msg = format!(
            "{} is not in trust domain {}",
            spec.spiffe_id,
            issuer.trust_domain()
        );
        return Err(ControlError::request(
            StatusCode::BAD_REQUEST,
            "foreign_trust_domain",
            msg,
        ));
    }
    if id.is_empty()
        || id.len() > 253
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        let msg = "entry ids are 1-253 characters of [A-Za-z0-9._-]";
        return Err(ControlError::request(
            StatusCode::BAD_REQUEST,
            "bad_entry_id",
            msg,
        ));
    }
    tracing::info!(entry = %id, spiffe_id = %spec.spiffe_id, "registration entry stored");
    issuer.put_entry(Entry { id, spec }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_entry(
    State(registry): State<Arc<Registry>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ControlError> {
    if registry.issuer().delete_entry(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ControlError::request(
            StatusCode::NOT_FOUND,
            "unknown_entry",
            format!("no entry {id:?}"),
        ))
    }
}

async fn rotate_ca(
    State(registry): State<Arc<Registry>>,
) -> Result<Json<AuthorityStatus>, ControlError> {
    Ok(Json(registry.issuer().rotate_ca().await?))
}

async fn status(State(registry): State<Arc<Registry>>) -> Json<ControlStatus> {
    let issuer = registry.issuer();
    Json(ControlStatus {
        trust_domain: issuer.trust_domain().to_string(),
        svid_ttl_secs: issuer.svid_ttl().whole_seconds(),
        authorities: issuer.authorities(),
        entries: issuer.entries().len(),
        agents: issuer.agent_count(),
        now: time::OffsetDateTime::now_utc().unix_timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ttls_are_bounded_so_expiry_never_overflows() {
        assert_eq!(token_ttl(None).ok(), Some(DEFAULT_TOKEN_TTL));
        assert_eq!(token_ttl(Some(1)).ok(), Some(time::Duration::seconds(1)));
        let max = 3650 * 86_400;
        assert_eq!(
            token_ttl(Some(max)).ok(),
            Some(time::Duration::seconds(max as i64))
        );
        for bad in [0, max + 1, u64::MAX] {
            let err = token_ttl(Some(bad)).err().map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("between 1 and")), "{bad}");
        }
    }
}
