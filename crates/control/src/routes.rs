//! HTTP routes of the control contract (see [`api::contract`]).

use std::sync::Arc;
use std::time::Duration;

use api::contract::{EndpointRegistration, LONG_POLL_SECS, SvidRequest, SvidResponse};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use serde::Deserialize;

use crate::connection::Stopping;
use crate::{ControlError, Registry};

pub(crate) fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v1/svid", post(svid))
        .route("/v1/endpoints", post(endpoints))
        .route("/v1/snapshot", get(snapshot))
        .merge(crate::admin::router())
        .with_state(registry)
}

async fn svid(
    State(registry): State<Arc<Registry>>,
    Json(req): Json<SvidRequest>,
) -> Result<Json<SvidResponse>, ControlError> {
    registry.sign(&req).map(Json)
}

async fn endpoints(
    State(registry): State<Arc<Registry>>,
    Json(reg): Json<EndpointRegistration>,
) -> Result<StatusCode, ControlError> {
    registry.register(reg).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

/// Long poll: answers once the version passes `since`, or with the current
/// snapshot after [`LONG_POLL_SECS`] so idle connections are refreshed.
/// Answers at once, too, when the control plane stops.
async fn snapshot(
    State(registry): State<Arc<Registry>>,
    Extension(Stopping(stop)): Extension<Stopping>,
    Query(q): Query<Since>,
) -> ([(header::HeaderName, &'static str); 1], Bytes) {
    let mut rx = registry.subscribe();
    let newer = {
        // `!=`, not `>`: a client that moved from another replica, or across a restore
        // of the store, may hold a version this one has not reached; it gets ours at once.
        let wait = rx.wait_for(|s| s.version != q.since);
        let poll = tokio::time::timeout(Duration::from_secs(LONG_POLL_SECS), wait);
        tokio::select! {
            answer = poll => match answer {
                Ok(Ok(s)) => Some(Arc::clone(&s)),
                _ => None,
            },
            () = stop.cancelled() => None,
        }
    };
    let snap = newer.unwrap_or_else(|| Arc::clone(&rx.borrow()));
    // Encoded once when published, not once per poller.
    ([(header::CONTENT_TYPE, "application/json")], snap.json())
}
