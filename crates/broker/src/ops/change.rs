//! Admission of instance updates and deprovisions.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::instance::{
    Admission, Outcome, check_maintenance, concurrency, load, plan_choice, require_async,
};
use super::{Broker, Target, wait};
use crate::BrokerError;
use crate::originating::OriginatingIdentity;
use crate::store::{
    InstanceAttributes, InstanceRecord, MaintenanceInfo, OpKind, OpState, Operation, PendingUpdate,
    Tx,
};
use crate::taxonomy::{RequestContext, Resolution, ResolveRequest, Taxonomy};

/// An update request after HTTP decoding.
pub(crate) struct UpdateRequest {
    pub id: String,
    pub service_id: String,
    pub plan_id: Option<String>,
    pub context: Option<Map<String, Value>>,
    pub parameters: Option<Map<String, Value>>,
    pub maintenance_info: Option<MaintenanceInfo>,
    pub identity: Option<OriginatingIdentity>,
    pub accepts_incomplete: bool,
}

/// A deprovision request after HTTP decoding.
pub(crate) struct DeprovisionRequest {
    pub id: String,
    pub accepts_incomplete: bool,
}

/// Handles `PATCH /v2/service_instances/:id`.
pub(crate) async fn update(
    b: &Arc<Broker>,
    req: UpdateRequest,
) -> Result<Outcome<InstanceRecord>, BrokerError> {
    let taxonomy = b.taxonomy.clone();
    let accepts = req.accepts_incomplete;
    let rec = b
        .store
        .write(move |tx| admit_update(tx, &taxonomy, req))
        .await?;
    let handle = b.launch(
        Target::Instance(rec.id.clone()),
        OpKind::Update,
        rec.operation.id.clone(),
    );
    if accepts {
        return Ok(Outcome::Accepted(rec));
    }
    wait(handle).await?;
    Ok(Outcome::Created(load(b, &rec.id).await?))
}

fn updatable(tx: &Tx, req: &UpdateRequest) -> Result<InstanceRecord, BrokerError> {
    let rec = tx
        .instance(&req.id)?
        .ok_or_else(|| BrokerError::NotFound(format!("instance {} does not exist", req.id)))?;
    if rec.operation.in_progress() {
        return Err(concurrency(&req.id, rec.operation.kind));
    }
    if !rec.usable {
        return Err(BrokerError::InstanceNotUsable(format!(
            "instance {} never finished provisioning; DELETE it",
            req.id
        )));
    }
    if req.service_id != rec.attributes.service_id {
        return Err(BrokerError::BadRequest(format!(
            "service_id {:?} is not the service of instance {}; changing services is not supported",
            req.service_id, req.id
        )));
    }
    Ok(rec)
}

/// The instance's attributes with the update applied (absent fields keep their value).
fn merged(rec: &InstanceRecord, req: &mut UpdateRequest) -> InstanceAttributes {
    let mut attributes = rec.attributes.clone();
    if let Some(plan) = req.plan_id.take() {
        attributes.plan_id = plan;
    }
    attributes.context = req.context.take().or(attributes.context);
    attributes.parameters = req.parameters.take().or(attributes.parameters);
    attributes.maintenance_info = req.maintenance_info.take().or(attributes.maintenance_info);
    attributes
}

/// Resolves the updated instance; it must stay in its environment and on its provider.
fn re_resolve(
    taxonomy: &Taxonomy,
    rec: &InstanceRecord,
    attributes: &InstanceAttributes,
    identity: Option<&OriginatingIdentity>,
) -> Result<Resolution, BrokerError> {
    let choice = plan_choice(taxonomy, rec, Some(&attributes.plan_id))?;
    let ctx = RequestContext::new(
        attributes.context.as_ref(),
        identity.map(|i| i.platform.as_str()),
    );
    let (env, _) = taxonomy.select_environment(&ctx)?;
    let old = &rec.resolution;
    if env != old.environment {
        return Err(BrokerError::PolicyRefused {
            rule: "Environment selection".to_owned(),
            reason: format!(
                "the new context selects environment {env}, but instance {} lives in {}; instances cannot move between environments",
                rec.id, old.environment
            ),
        });
    }
    let resolve = ResolveRequest {
        service_id: &attributes.service_id,
        plan_id: &attributes.plan_id,
        context: &ctx,
        identity,
    };
    let reason = old.environment_reason.clone();
    let resolution = taxonomy.resolve_in(&old.class, choice, env, reason, resolve)?;
    if resolution.provider != old.provider {
        return Err(BrokerError::PolicyRefused {
            rule: format!("ServicePolicy rule {}", resolution.rule),
            reason: format!(
                "it now maps to provider {}, but instance {} lives on {}; moving between providers is not supported",
                resolution.provider, rec.id, old.provider
            ),
        });
    }
    Ok(resolution)
}

fn admit_update(
    tx: &mut Tx,
    taxonomy: &Taxonomy,
    mut req: UpdateRequest,
) -> Result<InstanceRecord, BrokerError> {
    let mut rec = updatable(tx, &req)?;
    let attributes = merged(&rec, &mut req);
    check_maintenance(taxonomy, &rec.resolution.class, &attributes)?;
    let resolution = re_resolve(taxonomy, &rec, &attributes, req.identity.as_ref())?;
    let r = &resolution;
    require_async(r.asynchronous, req.accepts_incomplete, &r.rule)?;
    let text = format!("in progress: updating; {}", r.explain());
    rec.pending = Some(PendingUpdate {
        attributes,
        resolution,
    });
    rec.operation = Operation::start(OpKind::Update, text);
    tx.put_instance(&rec)?;
    Ok(rec)
}

/// Handles `DELETE /v2/service_instances/:id`.
pub(crate) async fn deprovision(
    b: &Arc<Broker>,
    req: DeprovisionRequest,
) -> Result<Outcome<InstanceRecord>, BrokerError> {
    let taxonomy = b.taxonomy.clone();
    let accepts = req.accepts_incomplete;
    let rec = match b
        .store
        .write(move |tx| admit_deprovision(tx, &taxonomy, req))
        .await?
    {
        Admission::Started(rec) => rec,
        Admission::Settled(outcome) => return Ok(outcome),
    };
    let handle = b.launch(
        Target::Instance(rec.id.clone()),
        OpKind::Deprovision,
        rec.operation.id.clone(),
    );
    if accepts {
        return Ok(Outcome::Accepted(rec));
    }
    wait(handle).await?;
    Ok(Outcome::Created(rec))
}

fn admit_deprovision(
    tx: &mut Tx,
    taxonomy: &Taxonomy,
    req: DeprovisionRequest,
) -> Result<Admission<InstanceRecord>, BrokerError> {
    let Some(mut rec) = tx.instance(&req.id)? else {
        return Err(BrokerError::Gone(format!(
            "instance {} does not exist",
            req.id
        )));
    };
    let op = &rec.operation;
    if op.state == OpState::InProgress {
        return match op.kind == OpKind::Deprovision && req.accepts_incomplete {
            true => Ok(Admission::Settled(Outcome::Accepted(rec))),
            false => Err(concurrency(&req.id, op.kind)),
        };
    }
    // The policy as it is now decides: an administrator may have lifted protection.
    let r = &rec.resolution;
    let current = taxonomy.rule(&r.rule).map(|rule| &rule.spec);
    let protect = current.map_or(r.deletion_protection, |s| s.deletion_protection);
    let cascade = current.map_or(r.cascade_delete, |s| s.cascade_delete);
    require_async(
        current.map_or(r.asynchronous, |s| s.asynchronous),
        req.accepts_incomplete,
        &r.rule,
    )?;
    if rec.usable && protect {
        return Err(BrokerError::DeletionProtected(format!(
            "instance {} is protected by ServicePolicy rule {} (deletionProtection); an administrator must lift it first",
            req.id, r.rule
        )));
    }
    check_bindings(tx, &req.id, cascade, &r.rule)?;
    rec.operation = Operation::start(
        OpKind::Deprovision,
        format!("in progress: deprovisioning {}", rec.resource),
    );
    tx.put_instance(&rec)?;
    Ok(Admission::Started(rec))
}

fn check_bindings(tx: &Tx, id: &str, cascade: bool, rule: &str) -> Result<(), BrokerError> {
    let bindings = tx.bindings_of(id)?;
    if let Some(busy) = bindings.iter().find(|b| b.operation.in_progress()) {
        return Err(BrokerError::Concurrency(format!(
            "binding {} of instance {id} has a {} operation in progress",
            busy.binding_id,
            busy.operation.kind.as_str()
        )));
    }
    let live: Vec<&str> = bindings
        .iter()
        .filter(|b| b.is_live())
        .map(|b| b.binding_id.as_str())
        .collect();
    if !live.is_empty() && !cascade {
        return Err(BrokerError::BindingsExist(format!(
            "instance {id} still has {} binding(s) ({}); unbind them first, or set cascadeDelete on ServicePolicy rule {rule}",
            live.len(),
            live.join(", ")
        )));
    }
    Ok(())
}
