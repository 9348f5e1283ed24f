//! Binding operations: bind (one provider user per binding, rotation via
//! `predecessor_binding_id`), unbind; admission rules and execution.

use std::sync::Arc;

use super::instance::{Admission, Outcome, concurrency, require_async};
use super::{Broker, Target, progress, wait};
use crate::BrokerError;
use crate::names;
use crate::originating::OriginatingIdentity;
use crate::provider::{BindingPlan, InstancePlan, rfc3339};
use crate::secret::Secret;
use crate::store::{
    BindingAttributes, BindingRecord, InstanceRecord, OpKind, OpState, Operation, Tx,
};
use crate::taxonomy::Taxonomy;

/// A bind request after HTTP decoding.
pub(crate) struct BindRequest {
    pub instance_id: String,
    pub binding_id: String,
    pub attributes: BindingAttributes,
    pub identity: Option<OriginatingIdentity>,
    pub accepts_incomplete: bool,
}

/// An unbind request after HTTP decoding.
pub(crate) struct UnbindRequest {
    pub instance_id: String,
    pub binding_id: String,
    pub accepts_incomplete: bool,
}

/// Handles `PUT .../service_bindings/:binding_id`.
pub(crate) async fn bind(
    b: &Arc<Broker>,
    req: BindRequest,
) -> Result<Outcome<BindingRecord>, BrokerError> {
    let taxonomy = b.taxonomy.clone();
    let accepts = req.accepts_incomplete;
    let rec = match b
        .store
        .write(move |tx| admit_bind(tx, &taxonomy, req))
        .await?
    {
        Admission::Started(rec) => rec,
        Admission::Settled(outcome) => return Ok(outcome),
    };
    let target = Target::Binding(rec.instance_id.clone(), rec.binding_id.clone());
    let handle = b.launch(target, OpKind::Bind, rec.operation.id.clone());
    if accepts {
        return Ok(Outcome::Accepted(rec));
    }
    wait(handle).await?;
    Ok(Outcome::Created(
        load(b, &rec.instance_id, &rec.binding_id).await?,
    ))
}

fn usable_instance(tx: &Tx, id: &str) -> Result<InstanceRecord, BrokerError> {
    let inst = tx
        .instance(id)?
        .ok_or_else(|| BrokerError::NotFound(format!("instance {id} does not exist")))?;
    if inst.operation.in_progress() {
        return Err(concurrency(id, inst.operation.kind));
    }
    if !inst.usable {
        return Err(BrokerError::InstanceNotUsable(format!(
            "instance {id} is not usable: {}",
            inst.operation.description
        )));
    }
    Ok(inst)
}

fn admit_bind(
    tx: &mut Tx,
    taxonomy: &Taxonomy,
    mut req: BindRequest,
) -> Result<Admission<BindingRecord>, BrokerError> {
    let inst = usable_instance(tx, &req.instance_id)?;
    let a = &req.attributes;
    if a.service_id != inst.attributes.service_id {
        return Err(BrokerError::BadRequest(format!(
            "service_id {:?} is not the service of instance {}",
            a.service_id, req.instance_id
        )));
    }
    taxonomy.class_and_plan(&a.service_id, &a.plan_id)?;
    require_async(
        inst.resolution.asynchronous,
        req.accepts_incomplete,
        &inst.resolution.rule,
    )?;
    if let Some(existing) = tx.binding(&req.instance_id, &req.binding_id)? {
        return readmit_bind(tx, existing, req);
    }
    inherit_from_predecessor(tx, &mut req)?;
    let record = BindingRecord {
        username: names::binding_user(&req.instance_id, &req.binding_id),
        instance_id: req.instance_id,
        binding_id: req.binding_id,
        attributes: req.attributes,
        credentials: None,
        operation: Operation::start(
            OpKind::Bind,
            format!("in progress: binding to {}", inst.resource),
        ),
        expires_at: None,
        renew_before: None,
        requested_by: req.identity,
    };
    tx.put_binding(&record)?;
    Ok(Admission::Started(record))
}

/// Rotation (`predecessor_binding_id`): the predecessor must be a live binding of the same
/// instance; its parameters carry over unless new ones are given.
fn inherit_from_predecessor(tx: &Tx, req: &mut BindRequest) -> Result<(), BrokerError> {
    let Some(pred) = req.attributes.predecessor_binding_id.clone() else {
        return Ok(());
    };
    let predecessor = tx
        .binding(&req.instance_id, &pred)?
        .filter(|p| p.credentials.is_some())
        .ok_or_else(|| {
            BrokerError::BadRequest(format!(
                "predecessor_binding_id {pred:?} is not a binding of instance {}",
                req.instance_id
            ))
        })?;
    let attrs = &mut req.attributes;
    attrs.parameters = attrs
        .parameters
        .take()
        .or(predecessor.attributes.parameters);
    Ok(())
}

fn readmit_bind(
    tx: &mut Tx,
    mut existing: BindingRecord,
    req: BindRequest,
) -> Result<Admission<BindingRecord>, BrokerError> {
    // A rotation inherited the predecessor's parameters; compare what the platform sent.
    let mut sent = req.attributes;
    if sent.predecessor_binding_id.is_some() && sent.parameters.is_none() {
        sent.parameters = existing.attributes.parameters.clone();
    }
    if existing.attributes != sent {
        return Err(BrokerError::Conflict(format!(
            "binding {} already exists with different attributes",
            req.binding_id
        )));
    }
    let op = &existing.operation;
    match (op.kind, op.state) {
        (OpKind::Bind, OpState::InProgress) if req.accepts_incomplete => {
            Ok(Admission::Settled(Outcome::Accepted(existing)))
        }
        (_, OpState::InProgress) => Err(BrokerError::Concurrency(format!(
            "a {} operation on binding {} is in progress",
            op.kind.as_str(),
            req.binding_id
        ))),
        _ if existing.credentials.is_some() => Ok(Admission::Settled(Outcome::Exists(existing))),
        _ => {
            existing.operation = Operation::start(OpKind::Bind, "in progress: retrying binding");
            tx.put_binding(&existing)?;
            Ok(Admission::Started(existing))
        }
    }
}

/// Handles `DELETE .../service_bindings/:binding_id`.
pub(crate) async fn unbind(
    b: &Arc<Broker>,
    req: UnbindRequest,
) -> Result<Outcome<BindingRecord>, BrokerError> {
    let accepts = req.accepts_incomplete;
    let rec = match b.store.write(move |tx| admit_unbind(tx, req)).await? {
        Admission::Started(rec) => rec,
        Admission::Settled(outcome) => return Ok(outcome),
    };
    let target = Target::Binding(rec.instance_id.clone(), rec.binding_id.clone());
    let handle = b.launch(target, OpKind::Unbind, rec.operation.id.clone());
    if accepts {
        return Ok(Outcome::Accepted(rec));
    }
    wait(handle).await?;
    Ok(Outcome::Created(rec))
}

fn admit_unbind(tx: &mut Tx, req: UnbindRequest) -> Result<Admission<BindingRecord>, BrokerError> {
    let gone = || {
        BrokerError::Gone(format!(
            "binding {} of instance {} does not exist",
            req.binding_id, req.instance_id
        ))
    };
    let mut rec = tx
        .binding(&req.instance_id, &req.binding_id)?
        .ok_or_else(gone)?;
    let inst = tx.instance(&req.instance_id)?.ok_or_else(gone)?;
    if inst.operation.in_progress() {
        return Err(concurrency(&req.instance_id, inst.operation.kind));
    }
    let op = &rec.operation;
    if op.in_progress() {
        return match op.kind == OpKind::Unbind && req.accepts_incomplete {
            true => Ok(Admission::Settled(Outcome::Accepted(rec))),
            false => Err(BrokerError::Concurrency(format!(
                "a {} operation on binding {} is in progress",
                op.kind.as_str(),
                req.binding_id
            ))),
        };
    }
    require_async(
        inst.resolution.asynchronous,
        req.accepts_incomplete,
        &inst.resolution.rule,
    )?;
    rec.operation = Operation::start(
        OpKind::Unbind,
        format!("in progress: removing user {}", rec.username),
    );
    tx.put_binding(&rec)?;
    Ok(Admission::Started(rec))
}

async fn load(b: &Broker, instance: &str, binding: &str) -> Result<BindingRecord, BrokerError> {
    let (i, bid) = (instance.to_owned(), binding.to_owned());
    b.store
        .read(move |tx| {
            tx.binding(&i, &bid)?
                .ok_or_else(|| BrokerError::Gone(format!("binding {bid} was deleted meanwhile")))
        })
        .await
}

async fn context(
    b: &Broker,
    instance: &str,
    binding: &str,
) -> Result<(InstanceRecord, BindingRecord), BrokerError> {
    let rec = load(b, instance, binding).await?;
    let inst = super::instance::load(b, instance).await?;
    Ok((inst, rec))
}

/// Applies `f` to the binding if `op_id` is still its current operation.
async fn finish(
    b: &Broker,
    rec: &BindingRecord,
    op_id: &str,
    f: impl FnOnce(&mut Tx, BindingRecord) -> Result<(), BrokerError> + Send + 'static,
) -> Result<(), BrokerError> {
    let (i, bid, op_id) = (
        rec.instance_id.clone(),
        rec.binding_id.clone(),
        op_id.to_owned(),
    );
    b.store
        .write(move |tx| match tx.binding(&i, &bid)? {
            Some(rec) if rec.operation.id == op_id => f(tx, rec),
            _ => Ok(()),
        })
        .await
}

fn plan_of(inst: &InstanceRecord) -> InstancePlan {
    InstancePlan {
        resource: inst.resource.clone(),
        limits: inst.resolution.limits,
    }
}

/// The binding's credential lifetime, if the policy sets one: (expires_at, renew_before).
fn lifetime(inst: &InstanceRecord) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
    let seconds = inst.resolution.credential_ttl_seconds?;
    let ttl = time::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 2));
    let now = time::OffsetDateTime::now_utc();
    // Ask for rotation with a fifth of the lifetime to spare.
    Some((now + ttl, now + ttl * 0.8))
}

pub(crate) async fn run_bind(
    b: &Arc<Broker>,
    instance: String,
    binding: String,
    op_id: String,
) -> Result<(), BrokerError> {
    let (inst, rec) = context(b, &instance, &binding).await?;
    let provider = b.provider(&inst.resolution.provider)?;
    let lifetime = lifetime(&inst);
    let plan = BindingPlan {
        username: rec.username.clone(),
        password: Secret::random_password(),
        valid_until: lifetime.map(|(expires, _)| expires),
    };
    let target = Target::Binding(instance, binding);
    let progress = progress::tracked(b.clone(), target, op_id.clone());
    match provider.bind(&plan_of(&inst), &plan, &progress).await {
        Ok(credentials) => {
            finish(b, &rec, &op_id, move |tx, mut rec| {
                rec.credentials = Some(credentials);
                rec.expires_at = lifetime.map(|(e, _)| rfc3339(e));
                rec.renew_before = lifetime.map(|(_, r)| rfc3339(r));
                rec.operation.state = OpState::Succeeded;
                rec.operation.description =
                    format!("succeeded: user {} can use {}", rec.username, inst.resource);
                Ok(tx.put_binding(&rec)?)
            })
            .await
        }
        Err(e) => {
            let cleanup = match provider.unbind(&plan_of(&inst), &rec.username).await {
                Ok(()) => "the partial user was removed".to_owned(),
                Err(c) => format!("cleanup also failed ({c}); DELETE the binding to retry it"),
            };
            fail(b, &rec, &op_id, format!("failed: {e}; {cleanup}")).await?;
            Err(e.into())
        }
    }
}

async fn fail(
    b: &Broker,
    rec: &BindingRecord,
    op_id: &str,
    text: String,
) -> Result<(), BrokerError> {
    finish(b, rec, op_id, move |tx, mut rec| {
        rec.operation.state = OpState::Failed;
        rec.operation.description = text;
        Ok(tx.put_binding(&rec)?)
    })
    .await
}

pub(crate) async fn run_unbind(
    b: &Arc<Broker>,
    instance: String,
    binding: String,
    op_id: String,
) -> Result<(), BrokerError> {
    let (inst, rec) = context(b, &instance, &binding).await?;
    let provider = b.provider(&inst.resolution.provider)?;
    match provider.unbind(&plan_of(&inst), &rec.username).await {
        Ok(()) => {
            finish(b, &rec, &op_id, |tx, rec| {
                Ok(tx.remove_binding(&rec.instance_id, &rec.binding_id)?)
            })
            .await
        }
        Err(e) => {
            fail(
                b,
                &rec,
                &op_id,
                format!("failed: {e}; DELETE again to retry"),
            )
            .await?;
            Err(e.into())
        }
    }
}
