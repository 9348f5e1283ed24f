//! `/v2/service_instances/{instance_id}/service_bindings/{binding_id}` and its `last_operation`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::extract::{BindingIds, Identity, OsbJson, OsbQuery};
use super::wire::{self, BindBody};
use super::{deleted, deleting, reply};
use crate::BrokerError;
use crate::ops::Broker;
use crate::ops::binding::{self, BindRequest, UnbindRequest};
use crate::ops::instance::Outcome;
use crate::store::BindingRecord;

/// `PUT`: bind.
pub(crate) async fn bind(
    State(b): State<Arc<Broker>>,
    BindingIds(instance_id, binding_id): BindingIds,
    Identity(identity): Identity,
    RawQuery(query): RawQuery,
    OsbJson(body): OsbJson<BindBody>,
) -> Result<Response, BrokerError> {
    let q = OsbQuery::parse(query.as_deref(), &["accepts_incomplete"])?;
    let req = BindRequest {
        instance_id,
        binding_id,
        attributes: body.into_attributes()?,
        identity,
        accepts_incomplete: q.accepts_incomplete()?,
    };
    Ok(match binding::bind(&b, req).await? {
        Outcome::Created(rec) => reply(StatusCode::CREATED, wire::binding_body(&rec, false)),
        Outcome::Exists(rec) => reply(StatusCode::OK, wire::binding_body(&rec, false)),
        Outcome::Accepted(rec) => {
            reply(StatusCode::ACCEPTED, json!({"operation": rec.operation.id}))
        }
    })
}

/// `DELETE`: unbind.
pub(crate) async fn unbind(
    State(b): State<Arc<Broker>>,
    BindingIds(instance_id, binding_id): BindingIds,
    RawQuery(query): RawQuery,
) -> Result<Response, BrokerError> {
    let q = OsbQuery::parse(
        query.as_deref(),
        &["service_id", "plan_id", "accepts_incomplete"],
    )?;
    q.required("service_id")?;
    q.required("plan_id")?;
    let req = UnbindRequest {
        instance_id,
        binding_id,
        accepts_incomplete: q.accepts_incomplete()?,
    };
    Ok(match binding::unbind(&b, req).await? {
        Outcome::Accepted(rec) => deleting(&rec.operation.id),
        Outcome::Created(_) | Outcome::Exists(_) => deleted(),
    })
}

async fn lookup(
    b: &Broker,
    i: String,
    bid: String,
) -> Result<(Option<BindingRecord>, bool), BrokerError> {
    b.store
        .read(move |tx| Ok::<_, BrokerError>((tx.binding(&i, &bid)?, tx.binding_gone(&i, &bid)?)))
        .await
}

/// `GET`: fetch.
pub(crate) async fn fetch(
    State(b): State<Arc<Broker>>,
    BindingIds(instance_id, binding_id): BindingIds,
    RawQuery(query): RawQuery,
) -> Result<Response, BrokerError> {
    OsbQuery::parse(query.as_deref(), &["service_id", "plan_id"])?;
    let (rec, _) = lookup(&b, instance_id.clone(), binding_id.clone()).await?;
    let not_found = || {
        BrokerError::NotFound(format!(
            "binding {binding_id} of instance {instance_id} does not exist"
        ))
    };
    let rec = rec.ok_or_else(not_found)?;
    if rec.credentials.is_none() || rec.operation.in_progress() {
        return Err(not_found());
    }
    Ok(reply(StatusCode::OK, wire::binding_body(&rec, true)))
}

/// `GET .../last_operation`.
pub(crate) async fn last_operation(
    State(b): State<Arc<Broker>>,
    BindingIds(instance_id, binding_id): BindingIds,
    RawQuery(query): RawQuery,
) -> Result<Response, BrokerError> {
    OsbQuery::parse(query.as_deref(), &["service_id", "plan_id", "operation"])?;
    let rec = match lookup(&b, instance_id.clone(), binding_id.clone()).await? {
        (Some(rec), _) => rec,
        (None, true) => {
            return Err(BrokerError::Gone(format!(
                "binding {binding_id} has been deleted"
            )));
        }
        (None, false) => {
            return Err(BrokerError::NotFound(format!(
                "binding {binding_id} of instance {instance_id} does not exist"
            )));
        }
    };
    let mut response = reply(StatusCode::OK, wire::last_operation(&rec.operation, None));
    if rec.operation.in_progress() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Ok(response)
}
