//! Instance operations: provision, update, deprovision; admission rules and execution.

use std::sync::Arc;

use super::{Broker, Target, progress, wait};
use crate::BrokerError;
use crate::names;
use crate::originating::OriginatingIdentity;
use crate::provider::{InstancePlan, Progress, Provider, ProviderError};
use crate::store::{
    InstanceAttributes, InstanceRecord, OpKind, OpState, Operation, PendingUpdate, Tx,
};
use crate::taxonomy::{PlanChoice, RequestContext, ResolveRequest, Taxonomy};

/// How a mutating request was answered: 201/200 (sync), 200 (already there), 202 (async).
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    Created(T),
    Exists(T),
    Accepted(T),
}

/// A provision request after HTTP decoding.
pub(crate) struct ProvisionRequest {
    pub id: String,
    pub attributes: InstanceAttributes,
    pub identity: Option<OriginatingIdentity>,
    pub accepts_incomplete: bool,
}

fn plan_of(rec: &InstanceRecord) -> InstancePlan {
    InstancePlan {
        resource: rec.resource.clone(),
        limits: rec.resolution.limits,
    }
}

fn differing(a: &InstanceAttributes, b: &InstanceAttributes) -> Vec<&'static str> {
    let checks = [
        ("service_id", a.service_id == b.service_id),
        ("plan_id", a.plan_id == b.plan_id),
        ("context", a.context == b.context),
        ("parameters", a.parameters == b.parameters),
        (
            "organization_guid",
            a.organization_guid == b.organization_guid,
        ),
        ("space_guid", a.space_guid == b.space_guid),
        ("maintenance_info", a.maintenance_info == b.maintenance_info),
    ];
    checks
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(n, _)| n)
        .collect()
}

pub(crate) fn check_maintenance(
    taxonomy: &Taxonomy,
    class: &str,
    attributes: &InstanceAttributes,
) -> Result<(), BrokerError> {
    let Some(sent) = &attributes.maintenance_info else {
        return Ok(());
    };
    let ours = taxonomy
        .classes()
        .get(class)
        .and_then(|c| c.maintenance_info.as_ref());
    match ours {
        Some(ours) if ours.version == sent.version => Ok(()),
        Some(ours) => Err(BrokerError::MaintenanceInfoConflict(format!(
            "maintenance_info.version {:?} does not match the catalog's {:?} for this plan",
            sent.version, ours.version
        ))),
        None => Err(BrokerError::MaintenanceInfoConflict(
            "this plan has no maintenance_info; omit it".to_owned(),
        )),
    }
}

pub(crate) fn require_async(
    asynchronous: bool,
    accepts_incomplete: bool,
    rule: &str,
) -> Result<(), BrokerError> {
    if asynchronous && !accepts_incomplete {
        return Err(BrokerError::AsyncRequired(format!(
            "ServicePolicy rule {rule} only supports asynchronous operations; retry with accepts_incomplete=true"
        )));
    }
    Ok(())
}

/// Handles `PUT /v2/service_instances/:id`.
pub(crate) async fn provision(
    b: &Arc<Broker>,
    req: ProvisionRequest,
) -> Result<Outcome<InstanceRecord>, BrokerError> {
    let (class, _) = b
        .taxonomy
        .class_and_plan(&req.attributes.service_id, &req.attributes.plan_id)?;
    check_maintenance(&b.taxonomy, class, &req.attributes)?;
    let taxonomy = b.taxonomy.clone();
    let accepts = req.accepts_incomplete;
    let admitted = b
        .store
        .write(move |tx| admit_provision(tx, &taxonomy, req))
        .await?;
    let rec = match admitted {
        Admission::Started(rec) => rec,
        Admission::Settled(outcome) => return Ok(outcome),
    };
    let handle = b.launch(
        Target::Instance(rec.id.clone()),
        OpKind::Provision,
        rec.operation.id.clone(),
    );
    if accepts {
        return Ok(Outcome::Accepted(rec));
    }
    wait(handle).await?;
    Ok(Outcome::Created(load(b, &rec.id).await?))
}

pub(crate) enum Admission<T> {
    Started(T),
    Settled(Outcome<T>),
}

fn admit_provision(
    tx: &mut Tx,
    taxonomy: &Taxonomy,
    req: ProvisionRequest,
) -> Result<Admission<InstanceRecord>, BrokerError> {
    if let Some(existing) = tx.instance(&req.id)? {
        return readmit_provision(tx, existing, req);
    }
    let ctx = RequestContext::new(
        req.attributes.context.as_ref(),
        req.identity.as_ref().map(|i| i.platform.as_str()),
    );
    let resolution = taxonomy.resolve(ResolveRequest {
        service_id: &req.attributes.service_id,
        plan_id: &req.attributes.plan_id,
        context: &ctx,
        identity: req.identity.as_ref(),
    })?;
    require_async(
        resolution.asynchronous,
        req.accepts_incomplete,
        &resolution.rule,
    )?;
    check_quota(tx, &req.id, &resolution)?;
    let record = InstanceRecord {
        resource: names::instance_resource(&req.id),
        id: req.id,
        attributes: req.attributes,
        operation: Operation::start(
            OpKind::Provision,
            format!("in progress: provisioning; {}", resolution.explain()),
        ),
        resolution,
        usable: false,
        pending: None,
        requested_by: req.identity,
    };
    tx.put_instance(&record)?;
    Ok(Admission::Started(record))
}

fn readmit_provision(
    tx: &mut Tx,
    mut existing: InstanceRecord,
    req: ProvisionRequest,
) -> Result<Admission<InstanceRecord>, BrokerError> {
    let diff = differing(&existing.attributes, &req.attributes);
    if !diff.is_empty() {
        return Err(BrokerError::Conflict(format!(
            "instance {} already exists with different {}",
            req.id,
            diff.join(", ")
        )));
    }
    let op = &existing.operation;
    match (op.kind, op.state) {
        (OpKind::Provision, OpState::InProgress) if req.accepts_incomplete => {
            Ok(Admission::Settled(Outcome::Accepted(existing)))
        }
        (_, OpState::InProgress) => Err(concurrency(&req.id, op.kind)),
        (OpKind::Provision, OpState::Failed) => {
            // Retrying a failed provision: the providers are idempotent, so just run it again.
            require_async(
                existing.resolution.asynchronous,
                req.accepts_incomplete,
                &existing.resolution.rule,
            )?;
            existing.operation = Operation::start(
                OpKind::Provision,
                format!(
                    "in progress: retrying provisioning; {}",
                    existing.resolution.explain()
                ),
            );
            tx.put_instance(&existing)?;
            Ok(Admission::Started(existing))
        }
        _ if existing.usable => Ok(Admission::Settled(Outcome::Exists(existing))),
        _ => Err(BrokerError::InstanceNotUsable(format!(
            "instance {} is not usable after a failed {:?}; DELETE it to clean up",
            req.id, op.kind
        ))),
    }
}

pub(crate) fn concurrency(id: &str, kind: OpKind) -> BrokerError {
    BrokerError::Concurrency(format!(
        "a {} operation on instance {id} is in progress; retry when it has finished",
        kind.as_str()
    ))
}

fn check_quota(tx: &Tx, id: &str, r: &crate::taxonomy::Resolution) -> Result<(), BrokerError> {
    let (Some(quota), Some(team)) = (r.quota, r.team.as_deref()) else {
        return Ok(());
    };
    let held = tx
        .instances()?
        .iter()
        .filter(|i| {
            i.id != id && i.resolution.rule == r.rule && i.resolution.team.as_deref() == Some(team)
        })
        .count();
    if held >= quota as usize {
        return Err(BrokerError::PolicyRefused {
            rule: format!("ServicePolicy rule {}", r.rule),
            reason: format!(
                "team {team:?} already holds {held} of its {quota} instances (quota.instancesPerTeam)"
            ),
        });
    }
    Ok(())
}

pub(crate) async fn load(b: &Broker, id: &str) -> Result<InstanceRecord, BrokerError> {
    let id = id.to_owned();
    b.store
        .read(move |tx| {
            tx.instance(&id)?
                .ok_or_else(|| BrokerError::Gone(format!("instance {id} was deleted meanwhile")))
        })
        .await
}

/// Applies `f` to the instance if `op_id` is still its current operation.
async fn finish(
    b: &Broker,
    id: &str,
    op_id: &str,
    f: impl FnOnce(&mut Tx, InstanceRecord) -> Result<(), BrokerError> + Send + 'static,
) -> Result<(), BrokerError> {
    let (id, op_id) = (id.to_owned(), op_id.to_owned());
    b.store
        .write(move |tx| match tx.instance(&id)? {
            Some(rec) if rec.operation.id == op_id => f(tx, rec),
            _ => Ok(()),
        })
        .await
}

fn settle(rec: &mut InstanceRecord, state: OpState, description: String) {
    rec.operation.state = state;
    rec.operation.description = description;
}

pub(crate) async fn run_provision(
    b: &Arc<Broker>,
    id: String,
    op_id: String,
) -> Result<(), BrokerError> {
    let rec = load(b, &id).await?;
    let provider = b.provider(&rec.resolution.provider)?;
    let plan = plan_of(&rec);
    let progress = progress::tracked(b.clone(), Target::Instance(id.clone()), op_id.clone());
    match provider.provision(&plan, &progress).await {
        Ok(()) => {
            finish(b, &id, &op_id, |tx, mut rec| {
                rec.usable = true;
                let text = format!(
                    "succeeded: provisioned {}; {}",
                    rec.resource,
                    rec.resolution.explain()
                );
                settle(&mut rec, OpState::Succeeded, text);
                Ok(tx.put_instance(&rec)?)
            })
            .await
        }
        Err(e) => {
            let text = match &e {
                // Nothing was created; the error says what to change before a retried PUT.
                ProviderError::Unavailable { .. } => format!("failed: {e}"),
                _ => format!("failed: {e}; {}", mitigate(&provider, &plan).await),
            };
            finish(b, &id, &op_id, move |tx, mut rec| {
                settle(&mut rec, OpState::Failed, text);
                Ok(tx.put_instance(&rec)?)
            })
            .await?;
            Err(e.into())
        }
    }
}

/// Orphan mitigation by the broker itself: removes whatever a failed provision half-created.
async fn mitigate(provider: &Provider, plan: &InstancePlan) -> String {
    match provider.deprovision(plan, &[], &Progress::none()).await {
        Ok(()) => "partial resources were removed".to_owned(),
        Err(c) => format!(
            "removing the partial resources also failed ({c}); a retried PUT or a DELETE of the instance removes them"
        ),
    }
}

pub(crate) async fn run_update(
    b: &Arc<Broker>,
    id: String,
    op_id: String,
) -> Result<(), BrokerError> {
    let rec = load(b, &id).await?;
    let pending = rec
        .pending
        .clone()
        .ok_or_else(|| BrokerError::Internal(format!("update of {id} has no target")))?;
    let provider = b.provider(&pending.resolution.provider)?;
    let users = binding_users(b, &id).await?;
    let plan = InstancePlan {
        resource: rec.resource.clone(),
        limits: pending.resolution.limits,
    };
    let result = provider.resize(&plan, &users).await;
    let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
    finish(b, &id, &op_id, move |tx, mut rec| {
        match outcome {
            Ok(()) => {
                let PendingUpdate {
                    attributes,
                    resolution,
                } = pending;
                rec.attributes = attributes;
                rec.resolution = resolution;
                let text = format!("succeeded: updated; {}", rec.resolution.explain());
                settle(&mut rec, OpState::Succeeded, text);
            }
            Err(e) => settle(
                &mut rec,
                OpState::Failed,
                format!("failed: {e}; the instance is unchanged and usable"),
            ),
        }
        rec.pending = None;
        Ok(tx.put_instance(&rec)?)
    })
    .await?;
    result.map_err(Into::into)
}

async fn binding_users(b: &Broker, id: &str) -> Result<Vec<String>, BrokerError> {
    let id = id.to_owned();
    b.store
        .read(move |tx| {
            Ok(tx
                .bindings_of(&id)?
                .into_iter()
                .map(|b| b.username)
                .collect())
        })
        .await
}

pub(crate) async fn run_deprovision(
    b: &Arc<Broker>,
    id: String,
    op_id: String,
) -> Result<(), BrokerError> {
    let rec = load(b, &id).await?;
    let provider = b.provider(&rec.resolution.provider)?;
    let users = binding_users(b, &id).await?;
    let progress = progress::tracked(b.clone(), Target::Instance(id.clone()), op_id.clone());
    match provider
        .deprovision(&plan_of(&rec), &users, &progress)
        .await
    {
        Ok(()) => {
            finish(b, &id, &op_id, move |tx, rec| {
                Ok(tx.remove_instance(&rec.id)?)
            })
            .await
        }
        Err(e) => {
            let text = format!("failed: {e}; DELETE again to retry");
            finish(b, &id, &op_id, move |tx, mut rec| {
                settle(&mut rec, OpState::Failed, text);
                Ok(tx.put_instance(&rec)?)
            })
            .await?;
            Err(e.into())
        }
    }
}

/// Which plan choice an update asks for (the current one when `plan_id` is absent).
pub(crate) fn plan_choice(
    taxonomy: &Taxonomy,
    rec: &InstanceRecord,
    plan_id: Option<&str>,
) -> Result<PlanChoice, BrokerError> {
    let plan_id = plan_id.unwrap_or(&rec.attributes.plan_id);
    let (_, choice) = taxonomy.class_and_plan(&rec.attributes.service_id, plan_id)?;
    Ok(choice)
}
