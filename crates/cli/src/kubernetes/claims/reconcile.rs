//! One reconcile of one `ServiceClaim`, level-based and idempotent: make sure the finalizer is
//! there; provision (an idempotent `PUT`, polling `last_operation` on 202); make sure the
//! binding exists and the Secret holds exactly its credentials; write the status. On deletion:
//! unbind, deprovision (the database is dropped), delete the Secret, drop the finalizer.
//!
//! Credentials are not rotated by reconciling: an existing Secret is compared with the broker's
//! binding (`GET`, the catalog says `bindings_retrievable`) and corrected from it. A missing
//! Secret gets a fresh binding (unbind, bind): deleting the Secret is how a user rotates, and a
//! crash between binding and writing the Secret leaves nothing behind that a retry misses.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event, finalizer};
use kube::{Api, ResourceExt};
use serde_json::{Map, Value, json};

use super::Context;
use super::identity::{self, DeletionPolicy};
use super::object::ServiceClaim;
use super::secret::{self, Desired};
use super::status::{self, Bound, Failure, Progress};
use crate::claims::platform::{self, ClaimIds};
use crate::claims::{NamedClaim, osb};

/// The finalizer that makes deleting a claim deprovision it first.
pub const FINALIZER: &str = "meshwork.dev/deprovision";

/// Why a reconcile did not finish; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step failed; the claim's status says which and why.
    #[error("{}: {}", .0.reason, .0.message)]
    Claim(Failure),
    /// The Kubernetes API refused or failed a request.
    #[error("the Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The claim has no namespace (the API server always sets one for a namespaced kind).
    #[error("the claim has no namespace")]
    NoNamespace,
    /// Adding or removing the finalizer, or a step under it, failed.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

/// A crash-test seam (`--test-hold-at-step`): where a reconcile may be held forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    /// The instance is provisioned; nothing is bound.
    Provisioned,
    /// The broker has bound (credentials in memory only); the Secret is not written.
    Bound,
}

/// Reconciles `claim`; the controller's reconciler.
pub async fn reconcile(claim: Arc<ServiceClaim>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = claim.namespace().ok_or(Error::NoNamespace)?;
    let key = format!("{namespace}/{}", claim.name_any());
    let api: Api<ServiceClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let (api_ref, ctx_ref) = (&api, &*ctx);
    let action = finalizer(&api, FINALIZER, claim, move |event| async move {
        match event {
            Event::Apply(claim) => apply(api_ref, &claim, ctx_ref).await,
            Event::Cleanup(claim) => cleanup(api_ref, &claim, ctx_ref).await,
        }
    })
    .await;
    let action = match action {
        Ok(action) => action,
        // A second cleanup (its Secret's deletion woke it) found the claim already gone.
        Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(s))) if s.is_not_found() => {
            Action::await_change()
        }
        Err(e) => return Err(Error::Finalizer(Box::new(e))),
    };
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// The controller's error policy: log, and retry with capped exponential backoff per claim.
pub fn error_policy(claim: Arc<ServiceClaim>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{}/{}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    );
    let delay = ctx.backoff.failed(&key);
    tracing::warn!(claim = %key, retry_in = ?delay, "{error}");
    Action::requeue(delay)
}

async fn apply(
    api: &Api<ServiceClaim>,
    claim: &ServiceClaim,
    ctx: &Context,
) -> Result<Action, Error> {
    let mut claim = claim.clone();
    if let Err(f) = identity::check(&claim) {
        let progress = Progress::NotProvisioned(f.clone());
        status::write(api, &claim, &progress)
            .await
            .map_err(Error::Kube)?;
        return Err(Error::Claim(f));
    }
    let namespace = claim.namespace().ok_or(Error::NoNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let instance_id = identity::record(api, &secrets, &claim, &ctx.platform_id)
        .await
        .map_err(Error::Kube)?;
    // A new claim says so before the broker is asked (an asynchronous provision can take
    // minutes); only once, so a failing claim's status does not flap.
    if !status::has_provisioned(claim.status.as_ref()) {
        let written = status::write(api, &claim, &Progress::Provisioning).await;
        claim.status = Some(written.map_err(Error::Kube)?);
    }
    let progress = converge(&claim, ctx, &instance_id).await;
    status::write(api, &claim, &progress)
        .await
        .map_err(Error::Kube)?;
    match progress.failure() {
        Some(f) => Err(Error::Claim(f.clone())),
        None => Ok(Action::requeue(ctx.recheck)),
    }
}

async fn converge(claim: &ServiceClaim, ctx: &Context, instance_id: &str) -> Progress {
    let (ids, chain) = match provision(claim, ctx, instance_id).await {
        Ok(done) => done,
        Err(f) => return Progress::NotProvisioned(f),
    };
    ctx.hold_at(Step::Provisioned, &ids.claim).await;
    match bind(claim, ctx, &ids).await {
        Ok(bound) => Progress::Ready(chain, bound),
        Err(f) => Progress::NotBound(chain, f),
    }
}

/// A broker error as a failure: `BrokerUnreachable` when it did not answer, else `reason`.
fn broker_failure(reason: &'static str) -> impl Fn(anyhow::Error) -> Failure {
    move |e| match osb::is_unreachable(&e) {
        true => Failure::new("BrokerUnreachable", format!("{e:#}")),
        false => Failure::new(reason, format!("{e:#}")),
    }
}

fn kube_failure(what: &str) -> impl Fn(kube::Error) -> Failure + '_ {
    move |e| Failure::new("SecretFailed", format!("{what}: {e}"))
}

/// The claim's ids, its instance's being `instance_id` (recorded on the claim).
async fn ids(claim: &ServiceClaim, ctx: &Context, instance_id: &str) -> Result<ClaimIds, Failure> {
    let spec = claim
        .parsed_spec()
        .map_err(|m| Failure::new("InvalidSpec", m))?;
    let (name, namespace) = (claim.name_any(), claim.namespace().unwrap_or_default());
    let named = NamedClaim {
        name: &name,
        namespace: &namespace,
        spec: &spec,
    };
    let ids = crate::claims::ids_of(&ctx.osb, &ctx.scope(), &named)
        .await
        .map_err(broker_failure("ProvisionFailed"))?;
    Ok(ClaimIds {
        instance_id: instance_id.to_owned(),
        ..ids
    })
}

/// The claim's ids and the broker's decision chain, once the instance exists.
async fn provision(
    claim: &ServiceClaim,
    ctx: &Context,
    instance_id: &str,
) -> Result<(ClaimIds, String), Failure> {
    let ids = ids(claim, ctx, instance_id).await?;
    let metadata = platform::provision(&ctx.osb, &ids, ctx.patience)
        .await
        .map_err(broker_failure("ProvisionFailed"))?;
    let chain = metadata["attributes"]["resolution"]
        .as_str()
        .unwrap_or("provisioned")
        .to_owned();
    Ok((ids, chain))
}

/// Makes sure the binding exists and the Secret holds its credentials.
async fn bind(claim: &ServiceClaim, ctx: &Context, ids: &ClaimIds) -> Result<Bound, Failure> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ids.space);
    let name = ids.claim.as_str();
    let existing = secrets
        .get_opt(name)
        .await
        .map_err(kube_failure("reading the Secret"))?;
    let bind_failure = broker_failure("BindFailed");
    let credentials = match &existing {
        Some(s) if !secret::controlled_by(s, claim) => {
            return Err(Failure::new(
                "SecretConflict",
                format!("Secret {name} exists and is not controlled by this claim"),
            ));
        }
        Some(s) => {
            if let Some(old) = secret::binding_id(s).filter(|b| *b != ids.binding_id) {
                let old = ClaimIds {
                    binding_id: old.to_owned(),
                    ..ids.clone()
                };
                platform::unbind(&ctx.osb, &old, ctx.patience)
                    .await
                    .map_err(&bind_failure)?;
            }
            match platform::binding_credentials(&ctx.osb, ids)
                .await
                .map_err(&bind_failure)?
            {
                Some(c) => c,
                None => platform::rebind(&ctx.osb, ids, ctx.patience)
                    .await
                    .map_err(&bind_failure)?,
            }
        }
        None => platform::rebind(&ctx.osb, ids, ctx.patience)
            .await
            .map_err(&bind_failure)?,
    };
    ctx.hold_at(Step::Bound, name).await;
    let desired = Desired::from_credentials(&credentials)
        .map_err(|e| Failure::new("BindFailed", format!("{e:#}")))?;
    write_secret(&secrets, existing.as_ref(), &desired, claim, ids).await?;
    Ok(Bound {
        secret: name.to_owned(),
        workload: ids.app.clone(),
        database: credentials["database"].as_str().map(str::to_owned),
    })
}

/// Creates the Secret, or corrects it (merge patch; delete and create when its immutable
/// `type` differs).
async fn write_secret(
    secrets: &Api<Secret>,
    existing: Option<&Secret>,
    desired: &Desired,
    claim: &ServiceClaim,
    ids: &ClaimIds,
) -> Result<(), Failure> {
    let wanted = desired.secret(claim, ids);
    let name = ids.claim.as_str();
    let namespace = ids.space.as_str();
    match existing {
        Some(s) if desired.matches(s) && secret::binding_id(s) == Some(&ids.binding_id) => {
            return Ok(());
        }
        Some(s) if s.type_ == wanted.type_ => {
            let patch = correction(s, &wanted);
            secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_failure("updating the Secret"))?;
            tracing::info!(
                claim = name,
                namespace,
                "Secret corrected from the broker's binding"
            );
            return Ok(());
        }
        Some(_) => {
            secrets
                .delete(name, &DeleteParams::default())
                .await
                .map_err(kube_failure("replacing the Secret"))?;
        }
        None => {}
    }
    secrets
        .create(&PostParams::default(), &wanted)
        .await
        .map_err(kube_failure("creating the Secret"))?;
    tracing::info!(claim = name, namespace, binding = %ids.binding_id, "Secret written");
    Ok(())
}

/// A merge patch turning `current` into `wanted`: data keys not wanted are removed (`null`).
fn correction(current: &Secret, wanted: &Secret) -> Value {
    let mut data = Map::new();
    for key in current.data.iter().flatten().map(|(k, _)| k) {
        data.insert(key.clone(), Value::Null);
    }
    for (key, value) in wanted.data.iter().flatten() {
        data.insert(
            key.clone(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }
    json!({
        "metadata": {
            "labels": wanted.metadata.labels,
            "annotations": wanted.metadata.annotations,
            "ownerReferences": wanted.metadata.owner_references,
        },
        "data": data,
    })
}

/// Deletion: unbind (also a binding an older Secret records), deprovision, delete the Secret;
/// with deletion policy `Orphan`, only the Secret goes.
async fn cleanup(
    api: &Api<ServiceClaim>,
    claim: &ServiceClaim,
    ctx: &Context,
) -> Result<Action, Error> {
    let namespace = claim.namespace().ok_or(Error::NoNamespace)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = claim.name_any();
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(Error::Kube)?
        .filter(|s| secret::controlled_by(s, claim));
    let instance_id = identity::known(claim, existing.as_ref(), &ctx.platform_id);
    let deprovisioned = match identity::deletion_policy(claim) {
        Ok(DeletionPolicy::Delete) => match identity::check(claim) {
            Ok(()) => deprovision(claim, existing.as_ref(), &instance_id, ctx).await,
            Err(f) => Err(f),
        },
        Ok(DeletionPolicy::Orphan) => {
            tracing::warn!(
                claim = %name,
                %namespace,
                instance = %instance_id,
                "deletion policy Orphan: the broker's instance and its binding are left as they \
                 are (not deprovisioned; the database and its credentials stay)"
            );
            Ok(())
        }
        Err(f) => Err(f),
    };
    if let Err(f) = deprovisioned {
        let deleting = Progress::Deleting(f.clone());
        if let Err(e) = status::write(api, claim, &deleting).await {
            tracing::warn!(claim = %name, "writing the status: {e}");
        }
        return Err(Error::Claim(f));
    }
    if existing.is_some() {
        match secrets.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    tracing::info!(claim = %name, %namespace, "deprovisioned");
    Ok(Action::await_change())
}

/// Unbinds every binding the claim is known to have (its Secret's, its spec's) and deletes the
/// instance `instance_id`. Needs neither the catalog nor a readable spec: the instance's
/// service and plan are read back from the broker, and an instance the broker does not have
/// is the only reason to conclude that nothing is left to deprovision (one still being
/// provisioned holds the deletion until it has finished; see `platform::instance_plan`).
async fn deprovision(
    claim: &ServiceClaim,
    existing: Option<&Secret>,
    instance_id: &str,
    ctx: &Context,
) -> Result<(), Failure> {
    let failure = broker_failure("DeprovisionFailed");
    let (name, namespace) = (claim.name_any(), claim.namespace().unwrap_or_default());
    let spec = claim.parsed_spec().ok();
    let bindings = known_bindings(&name, spec.as_ref(), existing);
    let mut ids = match ids(claim, ctx, instance_id).await {
        // The catalog's ids, used only to delete an instance whose provision failed (the
        // broker shows no plan for it).
        Ok(ids) => ids,
        Err(_) => ClaimIds {
            claim: name.clone(),
            instance_id: instance_id.to_owned(),
            binding_id: String::new(),
            service_id: String::new(),
            plan_id: String::new(),
            organization: ctx.scope().mesh.to_owned(),
            space: namespace,
            context: json!({}),
            app: spec.map(|s| s.bind_to.to_string()).unwrap_or_default(),
        },
    };
    let Some((service_id, plan_id)) = platform::instance_plan(&ctx.osb, &ids)
        .await
        .map_err(&failure)?
    else {
        tracing::info!(claim = %name, instance = %instance_id, "the broker has no such instance");
        return Ok(());
    };
    (ids.service_id, ids.plan_id) = (service_id, plan_id);
    for binding_id in bindings {
        let binding = ClaimIds {
            binding_id,
            ..ids.clone()
        };
        platform::unbind(&ctx.osb, &binding, ctx.patience)
            .await
            .map_err(&failure)?;
    }
    platform::delete_instance(&ctx.osb, &ids, ctx.patience)
        .await
        .map_err(&failure)?;
    Ok(())
}

/// The binding ids a claim is known to have: its Secret's, and the one its spec names.
fn known_bindings(
    name: &str,
    spec: Option<&api::taxonomy::ServiceClaimSpec>,
    existing: Option<&Secret>,
) -> Vec<String> {
    let mut bindings: Vec<String> = existing
        .and_then(secret::binding_id)
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(spec) = spec {
        let from_spec = format!("{}.{name}", spec.bind_to);
        if !bindings.contains(&from_spec) {
            bindings.push(from_spec);
        }
    }
    bindings
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn corrections_remove_keys_no_longer_wanted() {
        let secret = |pairs: &[(&str, &str)]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let current = secret(&[("password", "old"), ("extra", "x")]);
        let wanted = secret(&[("password", "new"), ("type", "postgresql")]);
        let patch = correction(&current, &wanted);
        assert_eq!(
            patch["data"],
            json!({"password": "bmV3", "type": "cG9zdGdyZXNxbA==", "extra": null})
        );
    }
}
