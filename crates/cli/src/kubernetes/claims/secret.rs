//! The binding as a Kubernetes `Secret` in the servicebinding.io layout: named after the claim,
//! in its namespace, `type: servicebinding.io/<type>`, one key per entry `up` writes as a file
//! ([`delivery::entries`]), and a controller owner reference to the claim, so the garbage
//! collector removes it with the claim.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde_json::Value;

use super::object::ServiceClaim;
use crate::claims::delivery;

/// Annotation: the OSB binding id whose credentials the Secret holds.
pub const BINDING_ID: &str = "meshwork.dev/binding-id";
/// Annotation: the OSB instance id.
pub const INSTANCE_ID: &str = "meshwork.dev/instance-id";
/// Label: the claim the Secret belongs to.
pub const CLAIM_LABEL: &str = "meshwork.dev/claim";
/// Label selecting every Secret this controller writes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshwork");

/// The prefix of a binding Secret's `type` (Service Binding specification).
const TYPE_PREFIX: &str = "servicebinding.io/";

/// What a Secret should hold for one binding.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// `servicebinding.io/<type>`.
    pub type_: String,
    /// Entry name → value.
    pub data: BTreeMap<String, String>,
}

impl Desired {
    /// The Secret contents for OSB `credentials` (they must carry `type`).
    pub fn from_credentials(credentials: &Value) -> anyhow::Result<Desired> {
        let data: BTreeMap<String, String> = delivery::entries(credentials)?.into_iter().collect();
        let Some(kind) = data.get("type") else {
            anyhow::bail!("the binding's credentials have no `type`");
        };
        Ok(Desired {
            type_: format!("{TYPE_PREFIX}{kind}"),
            data,
        })
    }

    /// Whether `secret` holds exactly this.
    pub fn matches(&self, secret: &Secret) -> bool {
        let data = secret.data.clone().unwrap_or_default();
        secret.type_.as_deref() == Some(self.type_.as_str())
            && data.len() == self.data.len()
            && self
                .data
                .iter()
                .all(|(k, v)| data.get(k).is_some_and(|b| b.0 == v.as_bytes()))
    }

    /// The full Secret for `claim` (which must come from the API server: it has a uid).
    pub fn secret(&self, claim: &ServiceClaim, ids: &crate::claims::platform::ClaimIds) -> Secret {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let labels = BTreeMap::from([
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (CLAIM_LABEL.to_owned(), name.clone()),
        ]);
        let annotations = BTreeMap::from([
            (BINDING_ID.to_owned(), ids.binding_id.clone()),
            (INSTANCE_ID.to_owned(), ids.instance_id.clone()),
        ]);
        let data = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
            .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: claim.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: owner(claim).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            type_: Some(self.type_.clone()),
            data: Some(data),
            ..Secret::default()
        }
    }
}

/// The controller owner reference to `claim` (blocking its deletion until the Secret is gone,
/// for foreground deletion).
fn owner(claim: &ServiceClaim) -> Option<OwnerReference> {
    Some(OwnerReference {
        block_owner_deletion: Some(true),
        ..claim.controller_owner_ref(&())?
    })
}

/// Whether `claim` controls `secret` (its controller owner reference has the claim's uid).
pub fn controlled_by(secret: &Secret, claim: &ServiceClaim) -> bool {
    let uid = claim.metadata.uid.as_deref();
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// The binding id a Secret says it holds.
pub fn binding_id(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(BINDING_ID)
        .map(String::as_str)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::claims::platform::ClaimIds;
    use serde_json::json;

    fn claim() -> ServiceClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "charges-db", "namespace": "shop", "uid": "u-1"},
            "spec": {"class": "postgresql", "bindTo": "billing"},
        }))
        .unwrap()
    }

    fn ids() -> ClaimIds {
        ClaimIds {
            claim: "charges-db".into(),
            instance_id: "charges-db.shop.0123abcd".into(),
            binding_id: "billing.charges-db".into(),
            service_id: "s".into(),
            plan_id: "p".into(),
            organization: "meshwork".into(),
            space: "shop".into(),
            context: json!({}),
            app: "billing".into(),
        }
    }

    #[test]
    fn secrets_use_the_servicebinding_layout_and_are_owned() {
        let creds = json!({
            "type": "postgresql", "port": 5432, "keyPrefix": "p:", "password": "pw", "x": {}
        });
        let desired = Desired::from_credentials(&creds).unwrap();
        let secret = desired.secret(&claim(), &ids());
        assert_eq!(
            secret.type_.as_deref(),
            Some("servicebinding.io/postgresql")
        );
        let data = secret.data.clone().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["key-prefix", "password", "port", "type"]);
        assert_eq!(data["port"].0, b"5432");
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ServiceClaim", "charges-db", "u-1")
        );
        assert_eq!(owner.api_version, "meshwork.dev/v1alpha1");
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert!(controlled_by(&secret, &claim()));
        assert_eq!(binding_id(&secret), Some("billing.charges-db"));
        assert!(desired.matches(&secret));
        let rotated = Desired::from_credentials(&json!({"type": "postgresql", "port": 5432,
            "keyPrefix": "p:", "password": "new"}))
        .unwrap();
        assert!(!rotated.matches(&secret));
        assert!(Desired::from_credentials(&json!({"port": 1})).is_err());
    }
}
