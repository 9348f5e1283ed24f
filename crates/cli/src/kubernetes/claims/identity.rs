//! What a claim itself records about its OSB instance, so that nothing but the claim (stored
//! by the API server) is needed to find it again: the instance id (annotation
//! `meshwork.dev/instance-id`, written before the broker is first asked), and what deleting
//! the claim does to the instance (annotation `meshwork.dev/deletion-policy`).
//!
//! A recorded instance id is used as it is, whatever platform id it carries: the platform id
//! only keeps *new* ids of two clusters sharing a broker apart. A controller that lost its
//! state directory (a new platform id) or a second replica is the same platform for the
//! claims of this cluster, and must keep managing the instance the claim already has instead
//! of provisioning a second one (docs/kubernetes.md, "ServiceClaims as Secrets").

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::object::ServiceClaim;
use super::secret;
use super::status::Failure;

/// Annotation: the OSB instance id of the claim (also on its Secret).
pub const INSTANCE_ID: &str = secret::INSTANCE_ID;
/// Annotation: `Delete` (the default) or `Orphan`.
pub const DELETION_POLICY: &str = "meshwork.dev/deletion-policy";

/// What deleting a claim does to its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Unbind and deprovision: the database is dropped (the default).
    Delete,
    /// Leave the instance and its binding on the broker; only the claim and its Secret go.
    Orphan,
}

/// The claim's deletion policy; a value that is neither `Delete` nor `Orphan` is refused (a
/// typo must neither drop a database nor leak one).
pub fn deletion_policy(claim: &ServiceClaim) -> Result<DeletionPolicy, Failure> {
    match claim.annotations().get(DELETION_POLICY).map(String::as_str) {
        None | Some("Delete") => Ok(DeletionPolicy::Delete),
        Some("Orphan") => Ok(DeletionPolicy::Orphan),
        Some(other) => Err(Failure::new(
            "InvalidDeletionPolicy",
            format!("annotation {DELETION_POLICY}: {other:?} is neither Delete nor Orphan"),
        )),
    }
}

/// The instance id the claim records, if any.
pub fn recorded(claim: &ServiceClaim) -> Option<&str> {
    claim.annotations().get(INSTANCE_ID).map(String::as_str)
}

/// Refuses a recorded instance id that is not this claim's: `<name>.<namespace>.<platform
/// id>`. An annotation copied from another claim's manifest would otherwise make two claims
/// share one database, and deleting either would drop it.
pub fn check(claim: &ServiceClaim) -> Result<(), Failure> {
    match recorded(claim) {
        Some(id) if !is_own(claim, id) => Err(Failure::new(
            "InstanceIdMismatch",
            format!(
                "annotation {INSTANCE_ID}: {id:?} is not an instance id of this claim \
                 ({}<platform id>); remove the annotation if it was copied from another claim",
                fresh(claim, "")
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether `id` is one of this claim's instance ids: `<name>.<namespace>.` and a platform id
/// without dots. Names may hold dots, namespaces may not, so without the last rule claim `a`
/// of namespace `b` could name `a.b.x.<p>`, the instance of claim `a.b` of namespace `x`. Every
/// id read from something a tenant can write (the claim's annotation, its Secret's) passes
/// here before the broker hears of it.
pub fn is_own(claim: &ServiceClaim, id: &str) -> bool {
    id.strip_prefix(&fresh(claim, ""))
        .is_some_and(|platform| !platform.is_empty() && !platform.contains('.'))
}

/// The instance id a claim without a record gets: `<name>.<namespace>.<platform id>`.
pub fn fresh(claim: &ServiceClaim, platform_id: &str) -> String {
    let namespace = claim.namespace().unwrap_or_default();
    format!("{}.{namespace}.{platform_id}", claim.name_any())
}

/// The claim's instance id: the recorded one, else the one its Secret (controlled by the
/// claim) records, else [`fresh`]. A claim from before ids were recorded keeps the instance
/// its Secret names even when the controller's platform id has changed since. Only ids that
/// are [this claim's own](is_own) count: a Secret can be edited by whoever may write Secrets
/// in the namespace, and must not steer the controller to another claim's instance.
pub fn known(claim: &ServiceClaim, secret: Option<&Secret>, platform_id: &str) -> String {
    let on_secret = secret
        .and_then(|s| s.annotations().get(INSTANCE_ID))
        .filter(|id| {
            let own = is_own(claim, id);
            if !own {
                tracing::warn!(claim = %claim.name_any(), instance = %id,
                    "the claim's Secret names an instance id that is not the claim's; ignored");
            }
            own
        });
    recorded(claim)
        .filter(|id| is_own(claim, id))
        .map(str::to_owned)
        .or_else(|| on_secret.cloned())
        .unwrap_or_else(|| fresh(claim, platform_id))
}

/// The claim's instance id, recording the [`known`] one on the claim first when it has none
/// (a metadata merge patch; the broker is asked only once the record is stored). `secrets`:
/// the claim's namespace, read only for a claim without a record.
pub async fn record(
    api: &Api<ServiceClaim>,
    secrets: &Api<Secret>,
    claim: &ServiceClaim,
    platform_id: &str,
) -> Result<String, kube::Error> {
    if let Some(id) = recorded(claim) {
        if !id.ends_with(&format!(".{platform_id}")) {
            tracing::debug!(
                claim = %claim.name_any(),
                instance = id,
                "the claim's instance id carries another platform id; using it as recorded"
            );
        }
        return Ok(id.to_owned());
    }
    let existing = secrets
        .get_opt(&claim.name_any())
        .await?
        .filter(|s| secret::controlled_by(s, claim));
    let id = known(claim, existing.as_ref(), platform_id);
    // The resourceVersion makes the patch conditional: a claim edited since the cache saw it
    // (say, an annotation added by hand) gets a 409 and is reconciled again, not overwritten.
    let patch = json!({ "metadata": {
        "annotations": { INSTANCE_ID: id },
        "resourceVersion": claim.resource_version(),
    } });
    api.patch(
        &claim.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(claim = %claim.name_any(), instance = %id, "instance id recorded on the claim");
    Ok(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claim(annotations: serde_json::Value) -> ServiceClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "charges-db", "namespace": "shop", "annotations": annotations},
            "spec": {"class": "postgresql", "bindTo": "billing"},
        }))
        .unwrap()
    }

    #[test]
    fn recorded_ids_win_over_the_platform_id() {
        let fresh_claim = claim(json!({}));
        assert_eq!(recorded(&fresh_claim), None);
        assert_eq!(fresh(&fresh_claim, "p1"), "charges-db.shop.p1");
        assert_eq!(known(&fresh_claim, None, "p1"), "charges-db.shop.p1");
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"annotations": {INSTANCE_ID: "charges-db.shop.p0"}}
        }))
        .unwrap();
        assert_eq!(
            known(&fresh_claim, Some(&secret), "p1"),
            "charges-db.shop.p0"
        );
        assert_eq!(check(&fresh_claim), Ok(()));
        let kept = claim(json!({INSTANCE_ID: "charges-db.shop.old"}));
        assert_eq!(check(&kept), Ok(()));
        for copied in [
            "other-db.shop.old",
            "charges-db.other.old",
            "charges-db.shop.",
            // Another namespace's claim `charges-db.shop` (namespace `x`), reached through a
            // dotted platform id.
            "charges-db.shop.x.old",
        ] {
            let copied = claim(json!({INSTANCE_ID: copied}));
            assert_eq!(check(&copied).unwrap_err().reason, "InstanceIdMismatch");
        }
        assert_eq!(recorded(&kept), Some("charges-db.shop.old"));
        assert_eq!(known(&kept, Some(&secret), "p1"), "charges-db.shop.old");
    }

    #[test]
    fn a_secret_naming_another_claims_instance_is_ignored() {
        let fresh_claim = claim(json!({}));
        for forged in [
            "victim-db.shop.p0",
            "charges-db.bank.p0",
            "charges-db.shop.x.p0",
        ] {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"annotations": {INSTANCE_ID: forged}}
            }))
            .unwrap();
            assert_eq!(
                known(&fresh_claim, Some(&secret), "p1"),
                "charges-db.shop.p1",
                "{forged}"
            );
        }
    }

    #[test]
    fn deletion_policies() {
        assert_eq!(
            deletion_policy(&claim(json!({}))),
            Ok(DeletionPolicy::Delete)
        );
        assert_eq!(
            deletion_policy(&claim(json!({DELETION_POLICY: "Orphan"}))),
            Ok(DeletionPolicy::Orphan)
        );
        let typo = deletion_policy(&claim(json!({DELETION_POLICY: "orphan"}))).unwrap_err();
        assert_eq!(typo.reason, "InvalidDeletionPolicy");
    }
}
