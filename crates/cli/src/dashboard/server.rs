//! The dashboard's HTTP surface: the page, its JSON endpoints (answered from the last
//! round's view: a browser's request never reaches a sidecar), and a denial's explanation.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::page;
use super::poll::Dashboard;
use crate::claims::record::ClaimRecord;

/// The dashboard's routes.
pub fn router(d: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/graph", get(graph))
        .route("/api/services", get(services))
        .route("/api/denials", get(denials))
        .route("/api/identities", get(identities))
        .route("/api/claims", get(claims))
        .route("/explain", get(explain))
        .with_state(d)
}

async fn index(State(d): State<Arc<Dashboard>>) -> Html<String> {
    Html(page::index(&d.state))
}

async fn graph(State(d): State<Arc<Dashboard>>) -> Json<serde_json::Value> {
    let view = d.view();
    let (nodes, edges) = view
        .graph
        .map(|g| (json!(g.nodes), json!(g.edges)))
        .unwrap_or((json!([]), json!([])));
    Json(json!({
        "updated": view.updated,
        "window_secs": view.window_secs,
        "nodes": nodes,
        "edges": edges,
        "unreachable": view.unreachable,
    }))
}

async fn services(State(d): State<Arc<Dashboard>>) -> Json<serde_json::Value> {
    let view = d.view();
    Json(json!({
        "updated": view.updated,
        "window_secs": view.window_secs,
        "services": view.services,
    }))
}

async fn denials(State(d): State<Arc<Dashboard>>) -> Json<serde_json::Value> {
    let (denials, lost) = d.denials.recent();
    Json(json!({ "denials": denials, "lost": lost }))
}

async fn identities(State(d): State<Arc<Dashboard>>) -> Json<serde_json::Value> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Json(json!({ "now": now, "identities": d.view().identities }))
}

async fn claims(State(d): State<Arc<Dashboard>>) -> Json<serde_json::Value> {
    let state = d.state.clone();
    let claims = tokio::task::spawn_blocking(move || ClaimRecord::read_all(&state))
        .await
        .unwrap_or_default();
    Json(json!({ "claims": claims }))
}

#[derive(Deserialize)]
struct ExplainQuery {
    decision: String,
}

async fn explain(State(d): State<Arc<Dashboard>>, Query(q): Query<ExplainQuery>) -> Response {
    match d.denials.find(&q.decision) {
        Some(denial) => Html(page::explain(&denial, &d.state)).into_response(),
        None => (StatusCode::NOT_FOUND, Html(page::not_found(&q.decision))).into_response(),
    }
}
