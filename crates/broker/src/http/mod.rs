//! The OSB v2.17 HTTP surface (axum). Handlers decode and render; [`crate::ops`] decides.

mod bindings;
mod catalog;
mod extract;
mod gate;
mod instances;
mod parameters;
mod version;
mod wire;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};

pub(crate) use catalog::catalog as render_catalog;
pub(crate) use gate::Auth;

use crate::BrokerError;
use crate::ops::Broker;

async fn catalog(
    State(b): State<Arc<Broker>>,
    RawQuery(query): RawQuery,
) -> Result<Response, BrokerError> {
    extract::OsbQuery::parse(query.as_deref(), &[])?;
    Ok(Json(b.catalog.clone()).into_response())
}

async fn no_route() -> BrokerError {
    BrokerError::NotFound("no such endpoint; see GET /v2/catalog and the OSB v2.17 spec".to_owned())
}

/// The broker's router, gate included.
pub(crate) fn router(broker: Arc<Broker>, auth: Arc<Auth>) -> Router {
    let instance = "/v2/service_instances/{instance_id}";
    let binding = "/v2/service_instances/{instance_id}/service_bindings/{binding_id}";
    Router::new()
        .route("/v2/catalog", get(catalog))
        .route(
            instance,
            get(instances::fetch)
                .put(instances::provision)
                .patch(instances::update)
                .delete(instances::deprovision),
        )
        .route(
            &format!("{instance}/last_operation"),
            get(instances::last_operation),
        )
        .route(
            binding,
            get(bindings::fetch)
                .put(bindings::bind)
                .delete(bindings::unbind),
        )
        .route(
            &format!("{binding}/last_operation"),
            get(bindings::last_operation),
        )
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(auth, gate::gate))
        .with_state(broker)
}

/// A JSON answer with `status`.
fn reply(status: axum::http::StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// A DELETE that finished (or found nothing left to do): `200 {}`.
fn deleted() -> Response {
    reply(axum::http::StatusCode::OK, serde_json::json!({}))
}

/// A DELETE running asynchronously: `202 {"operation": …}`.
fn deleting(operation: &str) -> Response {
    reply(
        axum::http::StatusCode::ACCEPTED,
        serde_json::json!({ "operation": operation }),
    )
}
