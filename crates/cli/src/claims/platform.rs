//! What a platform does with a broker for one claim: provision (idempotently), bind with a
//! fresh credential, unbind, deprovision — asynchronously when the broker says 202, polling
//! `last_operation` like any OSB platform.

use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::osb::{Answer, OsbClient};

/// The OSB ids and attributes of one claim and its one binding.
#[derive(Debug, Clone)]
pub struct ClaimIds {
    /// Claim name, for messages.
    pub claim: String,
    /// OSB instance id (stable across runs of the same state directory).
    pub instance_id: String,
    /// OSB binding id (stable: one binding per claim and workload).
    pub binding_id: String,
    /// Catalog service id of the claim's class.
    pub service_id: String,
    /// Catalog plan id of the claim's size (or `default`).
    pub plan_id: String,
    /// `organization_guid` (the mesh name).
    pub organization: String,
    /// `space_guid` (the claim's namespace).
    pub space: String,
    /// The OSB `context` object.
    pub context: Value,
    /// The bound workload (`bind_resource.app_guid`).
    pub app: String,
}

impl ClaimIds {
    fn instance_path(&self) -> String {
        format!("/v2/service_instances/{}", self.instance_id)
    }

    fn binding_path(&self) -> String {
        format!(
            "{}/service_bindings/{}",
            self.instance_path(),
            self.binding_id
        )
    }
}

/// How long one operation may take before the platform gives up polling.
#[derive(Debug, Clone, Copy)]
pub struct Patience(pub Duration);

/// Polls a `last_operation` until it succeeded, or answers 410 (a deleted resource's
/// operation has nothing left to report: the deletion finished).
async fn poll(osb: &OsbClient, path: &str, patience: Patience, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience.0;
    loop {
        let answer = osb.call("GET", path, None).await?;
        match (answer.status, answer.body["state"].as_str()) {
            (410, _) | (200, Some("succeeded")) => return Ok(()),
            (200, Some("failed")) => {
                let why = answer.body["description"]
                    .as_str()
                    .unwrap_or("no description");
                bail!("{what} failed: {why}")
            }
            (200, Some("in progress")) => {}
            _ => bail!("{what}: polling the operation: {}", answer.reason()),
        }
        if Instant::now() > deadline {
            bail!("{what} did not finish within {}s", patience.0.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn refused(ids: &ClaimIds, what: &str, answer: &Answer) -> anyhow::Error {
    let hint = match answer.status {
        409 => {
            "; the instance exists with other attributes (another --environment or size?): \
             `meshwork claims delete` it first"
        }
        _ => "",
    };
    anyhow::anyhow!(
        "claim {}: the broker refused to {what}: {}{hint}",
        ids.claim,
        answer.reason()
    )
}

/// `PUT` the instance (200 when it already exists identically); returns its `metadata`.
pub async fn provision(
    osb: &OsbClient,
    ids: &ClaimIds,
    patience: Patience,
) -> anyhow::Result<Value> {
    let body = json!({
        "service_id": ids.service_id,
        "plan_id": ids.plan_id,
        "organization_guid": ids.organization,
        "space_guid": ids.space,
        "context": ids.context,
    });
    let path = format!("{}?accepts_incomplete=true", ids.instance_path());
    let answer = osb.call("PUT", &path, Some(&body)).await?;
    match answer.status {
        200 | 201 => Ok(answer.body["metadata"].clone()),
        202 => {
            let last = format!("{}/last_operation", ids.instance_path());
            let what = format!("provisioning claim {}", ids.claim);
            poll(osb, &last, patience, &what).await?;
            let fetched = osb.call("GET", &ids.instance_path(), None).await?;
            Ok(fetched.body["metadata"].clone())
        }
        _ => Err(refused(ids, "provision it", &answer)),
    }
}

fn delete_query(service_id: &str, plan_id: &str) -> String {
    format!("service_id={service_id}&plan_id={plan_id}&accepts_incomplete=true")
}

/// `DELETE` the binding; `Ok(false)` when there was none.
pub async fn unbind(osb: &OsbClient, ids: &ClaimIds, patience: Patience) -> anyhow::Result<bool> {
    let what = format!("unbinding claim {}", ids.claim);
    let resource = ids.binding_path();
    delete_and_wait(osb, ids, &resource, patience, (&what, "unbind it")).await
}

/// `DELETE resource`, polling `last_operation` on 202; `Ok(false)` when it was already gone.
/// `doing` names the step for polling messages, `refusal` for the error when it is refused.
async fn delete_and_wait(
    osb: &OsbClient,
    ids: &ClaimIds,
    resource: &str,
    patience: Patience,
    (doing, refusal): (&str, &str),
) -> anyhow::Result<bool> {
    let path = format!("{resource}?{}", delete_query(&ids.service_id, &ids.plan_id));
    let answer = osb.call("DELETE", &path, None).await?;
    match answer.status {
        200 => Ok(true),
        410 => Ok(false),
        202 => {
            poll(osb, &format!("{resource}/last_operation"), patience, doing).await?;
            Ok(true)
        }
        _ => Err(refused(ids, refusal, &answer)),
    }
}

/// A fresh binding: the previous one (if any) is deleted first, so every run of `up` hands the
/// workload a new credential and the old one stops working. Returns the OSB `credentials`.
pub async fn rebind(osb: &OsbClient, ids: &ClaimIds, patience: Patience) -> anyhow::Result<Value> {
    unbind(osb, ids, patience).await?;
    let body = json!({
        "service_id": ids.service_id,
        "plan_id": ids.plan_id,
        "context": ids.context,
        "bind_resource": { "app_guid": ids.app },
    });
    let path = format!("{}?accepts_incomplete=true", ids.binding_path());
    let answer = osb.call("PUT", &path, Some(&body)).await?;
    let answer = match answer.status {
        200 | 201 => answer,
        202 => {
            let last = format!("{}/last_operation", ids.binding_path());
            let what = format!("binding claim {}", ids.claim);
            poll(osb, &last, patience, &what).await?;
            osb.call("GET", &ids.binding_path(), None).await?
        }
        _ => return Err(refused(ids, "bind it", &answer)),
    };
    match answer.body.get("credentials") {
        Some(c) if c.is_object() => Ok(c.clone()),
        _ => Err(refused(ids, "return credentials", &answer)),
    }
}

/// `GET` the binding (the broker's catalog says `bindings_retrievable`): its `credentials`, or
/// `None` when the broker has no finished binding with these ids.
pub async fn binding_credentials(osb: &OsbClient, ids: &ClaimIds) -> anyhow::Result<Option<Value>> {
    let answer = osb.call("GET", &ids.binding_path(), None).await?;
    match (answer.status, answer.body.get("credentials")) {
        (200, Some(c)) if c.is_object() => Ok(Some(c.clone())),
        (404 | 410, _) => Ok(None),
        _ => Err(refused(ids, "show the binding", &answer)),
    }
}

/// `GET` the instance: its `(service_id, plan_id)` as the broker recorded them, or `None` when
/// the broker has no instance with this id at all (the catalog is not needed: a claim whose
/// class or size left the taxonomy can still be deprovisioned). A broker answers 404 for an
/// instance it is still provisioning (OSB) or failed to provision (meshwork's broker keeps
/// those): its `last_operation` tells them apart from an absent one. Still provisioning is an
/// error (ask again later: deleting now would leak what the provision then creates); a failed
/// provision is `DELETE`d with `fallback`'s service and plan (the claim's catalog ids), or is an
/// error when there are none.
pub async fn instance_plan(
    osb: &OsbClient,
    ids: &ClaimIds,
) -> anyhow::Result<Option<(String, String)>> {
    let answer = osb.call("GET", &ids.instance_path(), None).await?;
    match answer.status {
        410 => return Ok(None),
        404 => return unusable_instance(osb, ids).await,
        200 => {}
        _ => return Err(refused(ids, "show the instance", &answer)),
    }
    let id = |key: &str| answer.body[key].as_str().map(str::to_owned);
    match (id("service_id"), id("plan_id")) {
        (Some(service), Some(plan)) => Ok(Some((service, plan))),
        _ => Err(refused(ids, "say the instance's service and plan", &answer)),
    }
}

/// An instance the broker answered 404 for: absent (`None`), still being provisioned (an
/// error), or failed (deleted with `ids`' own service and plan when it has them).
async fn unusable_instance(
    osb: &OsbClient,
    ids: &ClaimIds,
) -> anyhow::Result<Option<(String, String)>> {
    let last = format!("{}/last_operation", ids.instance_path());
    let answer = osb.call("GET", &last, None).await?;
    match (answer.status, answer.body["state"].as_str()) {
        (404 | 410, _) => Ok(None),
        (200, Some("in progress")) => bail!(
            "claim {}: instance {} is still being provisioned; it is deprovisioned once that \
             has finished",
            ids.claim,
            ids.instance_id
        ),
        (200, Some("failed")) if !ids.service_id.is_empty() && !ids.plan_id.is_empty() => {
            Ok(Some((ids.service_id.clone(), ids.plan_id.clone())))
        }
        (200, Some("failed")) => bail!(
            "claim {}: instance {} failed to provision and the broker still records it; \
             deleting it needs the claim's class and size, which do not resolve in the catalog",
            ids.claim,
            ids.instance_id
        ),
        _ => Err(refused(
            ids,
            "report the instance's last operation",
            &answer,
        )),
    }
}

/// Unbinds, then `DELETE`s the instance with the service and plan it has now (read back from
/// the broker, whatever `ids` says). `Ok(false)` when the instance did not exist. A policy
/// with `deletionProtection` refuses (422), and says so.
pub async fn deprovision(
    osb: &OsbClient,
    ids: &ClaimIds,
    patience: Patience,
) -> anyhow::Result<bool> {
    let Some((service_id, plan_id)) = instance_plan(osb, ids).await? else {
        return Ok(false);
    };
    let ids = ClaimIds {
        service_id,
        plan_id,
        ..ids.clone()
    };
    unbind(osb, &ids, patience).await?;
    delete_instance(osb, &ids, patience).await
}

/// `DELETE`s the instance (the broker drops the bindings it still has with it); `ids` carries
/// the instance's own service and plan ([`instance_plan`]). `Ok(false)` when it was gone.
pub async fn delete_instance(
    osb: &OsbClient,
    ids: &ClaimIds,
    patience: Patience,
) -> anyhow::Result<bool> {
    let what = format!("deprovisioning claim {}", ids.claim);
    let resource = ids.instance_path();
    delete_and_wait(osb, ids, &resource, patience, (&what, "deprovision it")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_built_from_ids() {
        let ids = ClaimIds {
            claim: "db".into(),
            instance_id: "db.default.abc".into(),
            binding_id: "billing.db".into(),
            service_id: "s".into(),
            plan_id: "p".into(),
            organization: "mesh".into(),
            space: "default".into(),
            context: json!({}),
            app: "billing".into(),
        };
        assert_eq!(
            ids.binding_path(),
            "/v2/service_instances/db.default.abc/service_bindings/billing.db"
        );
        assert_eq!(
            delete_query("s", "p"),
            "service_id=s&plan_id=p&accepts_incomplete=true"
        );
    }
}
