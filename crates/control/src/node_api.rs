//! The agent ⇄ control API: HTTP + JSON over mTLS on a loopback TCP port
//! (the listener is in `node_tls`; the wire types and routes are [`api::contract::node`]).
//!
//! - `POST /v1/node/join` [`JoinRequest`] → [`SvidResponse`]: node attestation. The
//!   only route that takes a caller without a client certificate; the one-time join
//!   token is the proof, and the answer is the agent's node SVID.
//! - `POST /v1/node/renew` [`RenewRequest`] → [`SvidResponse`]: a fresh node SVID.
//! - `POST /v1/node/svid` [`WorkloadSvidRequest`] → [`SvidResponse`]: an X.509-SVID
//!   for a registration entry; the agent attested the workload and made the key.
//! - `POST /v1/node/jwt` [`JwtSvidRequest`] → [`JwtSvidResponse`].
//! - `GET /v1/node/sync?since=V` → [`NodeView`]: long poll, like the proxy snapshot.
//!
//! Every route but `join` requires the caller's (verified) SVID to be a node SVID of
//! an agent recorded at join.

use std::sync::Arc;
use std::time::Duration;

use api::contract::node::{
    AGENT_PATH_PREFIX, JoinRequest, JwtSvidRequest, JwtSvidResponse, NodeView, RenewRequest,
    WorkloadSvidRequest,
};
use api::contract::{LONG_POLL_SECS, SvidResponse};
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use identity::SpiffeId;
use serde::Deserialize;

use crate::ControlError;
use crate::connection::Stopping;
use crate::issuer::Issuer;
use crate::tokens::JoinRefusal;
use identity::DEFAULT_JWT_TTL;

/// The verified SPIFFE ID of the TLS client, if it presented a certificate.
#[derive(Debug, Clone)]
pub(crate) struct Peer(pub Option<SpiffeId>);

pub(crate) fn router(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route("/v1/node/join", post(join))
        .route("/v1/node/renew", post(renew))
        .route("/v1/node/svid", post(workload_svid))
        .route("/v1/node/jwt", post(jwt_svid))
        .route("/v1/node/sync", get(sync))
        .with_state(issuer)
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> ControlError {
    ControlError::request(status, code, message)
}

/// The calling agent, or why it is not one.
async fn agent(issuer: &Issuer, peer: &Peer) -> Result<SpiffeId, ControlError> {
    let Some(id) = &peer.0 else {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "no_client_svid",
            "this route needs a node SVID",
        ));
    };
    if !id.path().starts_with(AGENT_PATH_PREFIX) || !issuer.is_agent(id).await {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "not_an_agent",
            format!("{id} is not an attested agent"),
        ));
    }
    Ok(id.clone())
}

fn sign(issuer: &Issuer, csr_pem: &str, id: &SpiffeId) -> Result<Json<SvidResponse>, ControlError> {
    issuer
        .sign(csr_pem, id)
        .map(Json)
        .map_err(|source| ControlError::Csr {
            workload: id.to_string(),
            source,
        })
}

async fn join(
    State(issuer): State<Arc<Issuer>>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<SvidResponse>, ControlError> {
    let id = issuer.join(&req.token).await.map_err(|e| match e {
        JoinRefusal::Store(source) => ControlError::Store(source),
        other => refused(StatusCode::FORBIDDEN, "join_refused", other.to_string()),
    })?;
    sign(&issuer, &req.csr_pem, &id)
}

async fn renew(
    State(issuer): State<Arc<Issuer>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<RenewRequest>,
) -> Result<Json<SvidResponse>, ControlError> {
    let id = agent(&issuer, &peer).await?;
    sign(&issuer, &req.csr_pem, &id)
}

async fn workload_svid(
    State(issuer): State<Arc<Issuer>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<WorkloadSvidRequest>,
) -> Result<Json<SvidResponse>, ControlError> {
    let agent = agent(&issuer, &peer).await?;
    let entry = issuer.entry(&req.entry_id).ok_or_else(|| {
        refused(
            StatusCode::NOT_FOUND,
            "unknown_entry",
            format!("no entry {:?}", req.entry_id),
        )
    })?;
    tracing::debug!(%agent, entry = %req.entry_id, spiffe_id = %entry.spiffe_id, "workload SVID");
    sign(&issuer, &req.csr_pem, &entry.spiffe_id)
}

async fn jwt_svid(
    State(issuer): State<Arc<Issuer>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<JwtSvidRequest>,
) -> Result<Json<JwtSvidResponse>, ControlError> {
    agent(&issuer, &peer).await?;
    let entry = issuer.entry(&req.entry_id).ok_or_else(|| {
        refused(
            StatusCode::NOT_FOUND,
            "unknown_entry",
            format!("no entry {:?}", req.entry_id),
        )
    })?;
    let token = issuer
        .mint_jwt(&entry.spiffe_id, &req.audience, DEFAULT_JWT_TTL)
        .map_err(|e| refused(StatusCode::BAD_REQUEST, "bad_jwt_request", e.to_string()))?;
    let expires_at = (time::OffsetDateTime::now_utc() + DEFAULT_JWT_TTL).unix_timestamp();
    Ok(Json(JwtSvidResponse {
        spiffe_id: entry.spiffe_id,
        token,
        expires_at,
    }))
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

/// Long poll for the agent's view; answers at once, too, when the control plane stops.
async fn sync(
    State(issuer): State<Arc<Issuer>>,
    Extension(peer): Extension<Peer>,
    Extension(Stopping(stop)): Extension<Stopping>,
    Query(q): Query<Since>,
) -> Result<Json<NodeView>, ControlError> {
    agent(&issuer, &peer).await?;
    let mut rx = issuer.subscribe();
    let newer = {
        // `!=`: an agent that moved from another replica may hold a version this one
        // has not reached yet; it gets this replica's view at once.
        let wait = rx.wait_for(|v| v.version != q.since);
        let poll = tokio::time::timeout(Duration::from_secs(LONG_POLL_SECS), wait);
        tokio::select! {
            answer = poll => match answer {
                Ok(Ok(v)) => Some(Arc::clone(&v)),
                _ => None,
            },
            () = stop.cancelled() => None,
        }
    };
    let view = newer.unwrap_or_else(|| Arc::clone(&rx.borrow()));
    Ok(Json(NodeView::clone(&view)))
}
