//! The `ServiceClaim` custom resource as the controller sees it: `kube::Resource` implemented
//! by hand for a small local type (the `CustomResource` derive needs kube's `derive` feature
//! and a spec type in this crate; the spec lives in `api`, which does not depend on kube).
//!
//! `spec` stays JSON here and is parsed into [`ServiceClaimSpec`] per reconcile: one claim a
//! cluster stores but meshwork cannot read (the CRD's schema refuses such specs, but an API
//! server validates on write only: a claim stored under an older, looser schema stays as it
//! was) then shows `Ready=False` with reason `InvalidSpec` instead of failing the whole watch.

use std::borrow::Cow;

use api::taxonomy::ServiceClaimSpec;
use api::taxonomy::claim::ServiceClaimStatus;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};

/// The API group of meshwork's custom resources.
pub const GROUP: &str = "meshwork.dev";
/// Their version.
pub const VERSION: &str = "v1alpha1";

/// A `ServiceClaim` object (`serviceclaims.meshwork.dev/v1alpha1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceClaim {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// The spec, unparsed (see the module docs).
    #[serde(default)]
    pub spec: serde_json::Value,
    /// What the controller last wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceClaimStatus>,
}

impl ServiceClaim {
    /// The spec, parsed; the message says what is wrong.
    pub fn parsed_spec(&self) -> Result<ServiceClaimSpec, String> {
        serde_json::from_value(self.spec.clone()).map_err(|e| format!("spec: {e}"))
    }
}

impl Resource for ServiceClaim {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "ServiceClaim".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "serviceclaims".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_spec_parsing() {
        assert_eq!(
            ServiceClaim::url_path(&(), Some("shop")),
            "/apis/meshwork.dev/v1alpha1/namespaces/shop/serviceclaims"
        );
        let claim: ServiceClaim = serde_json::from_value(json!({
            "apiVersion": "meshwork.dev/v1alpha1", "kind": "ServiceClaim",
            "metadata": {"name": "charges-db", "namespace": "shop"},
            "spec": {"class": "postgresql", "bindTo": "billing"},
        }))
        .unwrap();
        assert_eq!(claim.parsed_spec().unwrap().bind_to.as_str(), "billing");
        let bad = ServiceClaim {
            spec: json!({"class": "postgresql", "bindTo": "Billing!"}),
            ..claim
        };
        assert!(bad.parsed_spec().unwrap_err().starts_with("spec: "));
    }
}
