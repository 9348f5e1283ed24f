//! `/v2/service_instances/{instance_id}` and its `last_operation`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::extract::{Identity, InstanceId, OsbJson, OsbQuery};
use super::wire::{self, ProvisionBody, UpdateBody, instance_metadata};
use super::{deleted, deleting, reply};
use crate::BrokerError;
use crate::ops::Broker;
use crate::ops::change::{self, DeprovisionRequest, UpdateRequest};
use crate::ops::instance::{self, Outcome, ProvisionRequest};
use crate::store::{InstanceRecord, OpKind, OpState};

fn accepted(rec: &InstanceRecord) -> Response {
    let body = json!({"operation": rec.operation.id, "metadata": instance_metadata(rec)});
    reply(StatusCode::ACCEPTED, body)
}

/// `PUT`: provision.
pub(crate) async fn provision(
    State(b): State<Arc<Broker>>,
    InstanceId(id): InstanceId,
    Identity(identity): Identity,
    RawQuery(query): RawQuery,
    OsbJson(body): OsbJson<ProvisionBody>,
) -> Result<Response, BrokerError> {
    let q = OsbQuery::parse(query.as_deref(), &["accepts_incomplete"])?;
    let req = ProvisionRequest {
        id,
        attributes: body.into_attributes()?,
        identity,
        accepts_incomplete: q.accepts_incomplete()?,
    };
    Ok(match instance::provision(&b, req).await? {
        Outcome::Created(rec) => reply(
            StatusCode::CREATED,
            json!({"metadata": instance_metadata(&rec)}),
        ),
        Outcome::Exists(rec) => reply(StatusCode::OK, json!({"metadata": instance_metadata(&rec)})),
        Outcome::Accepted(rec) => accepted(&rec),
    })
}

/// `PATCH`: update.
pub(crate) async fn update(
    State(b): State<Arc<Broker>>,
    InstanceId(id): InstanceId,
    Identity(identity): Identity,
    RawQuery(query): RawQuery,
    OsbJson(mut body): OsbJson<UpdateBody>,
) -> Result<Response, BrokerError> {
    let q = OsbQuery::parse(query.as_deref(), &["accepts_incomplete"])?;
    let req = UpdateRequest {
        id,
        maintenance_info: body.maintenance_info()?,
        service_id: body.service_id,
        plan_id: body.plan_id,
        context: body.context,
        parameters: body.parameters,
        identity,
        accepts_incomplete: q.accepts_incomplete()?,
    };
    Ok(match change::update(&b, req).await? {
        Outcome::Accepted(rec) => accepted(&rec),
        Outcome::Created(rec) | Outcome::Exists(rec) => {
            reply(StatusCode::OK, json!({"metadata": instance_metadata(&rec)}))
        }
    })
}

/// `DELETE`: deprovision.
pub(crate) async fn deprovision(
    State(b): State<Arc<Broker>>,
    InstanceId(id): InstanceId,
    RawQuery(query): RawQuery,
) -> Result<Response, BrokerError> {
    let q = OsbQuery::parse(
        query.as_deref(),
        &["service_id", "plan_id", "accepts_incomplete"],
    )?;
    q.required("service_id")?;
    q.required("plan_id")?;
    let req = DeprovisionRequest {
        id,
        accepts_incomplete: q.accepts_incomplete()?,
    };
    Ok(match change::deprovision(&b, req).await? {
        Outcome::Accepted(rec) => deleting(&rec.operation.id),
        Outcome::Created(_) | Outcome::Exists(_) => deleted(),
    })
}

async fn lookup(b: &Broker, id: String) -> Result<(Option<InstanceRecord>, bool), BrokerError> {
    b.store
        .read(move |tx| Ok::<_, BrokerError>((tx.instance(&id)?, tx.instance_gone(&id)?)))
        .await
}

/// `GET`: fetch.
pub(crate) async fn fetch(
    State(b): State<Arc<Broker>>,
    InstanceId(id): InstanceId,
    RawQuery(query): RawQuery,
) -> Result<Response, BrokerError> {
    OsbQuery::parse(query.as_deref(), &["service_id", "plan_id"])?;
    let (rec, _) = lookup(&b, id.clone()).await?;
    let rec = rec.ok_or_else(|| BrokerError::NotFound(format!("instance {id} does not exist")))?;
    let op = &rec.operation;
    if !rec.usable {
        let why = match op.state {
            OpState::InProgress => "is still being provisioned",
            _ => "failed to provision",
        };
        return Err(BrokerError::NotFound(format!("instance {id} {why}")));
    }
    if op.kind == OpKind::Update && op.in_progress() {
        return Err(instance::concurrency(&id, op.kind));
    }
    Ok(reply(
        StatusCode::OK,
        wire::instance_resource(&rec, &b.taxonomy),
    ))
}

/// `GET .../last_operation`.
pub(crate) async fn last_operation(
    State(b): State<Arc<Broker>>,
    InstanceId(id): InstanceId,
    RawQuery(query): RawQuery,
) -> Result<Response, BrokerError> {
    OsbQuery::parse(query.as_deref(), &["service_id", "plan_id", "operation"])?;
    let rec = match lookup(&b, id.clone()).await? {
        (Some(rec), _) => rec,
        (None, true) => return Err(BrokerError::Gone(format!("instance {id} has been deleted"))),
        (None, false) => {
            return Err(BrokerError::NotFound(format!(
                "instance {id} does not exist"
            )));
        }
    };
    let op = &rec.operation;
    let usable = match (op.kind, op.state) {
        (_, OpState::InProgress) | (OpKind::Provision, _) => None,
        _ => Some(rec.usable),
    };
    let mut response = reply(StatusCode::OK, wire::last_operation(op, usable));
    if op.in_progress() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Ok(response)
}
