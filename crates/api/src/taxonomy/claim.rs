//! `ServiceClaim`: a workload asks for a service by portable class ("a postgresql, small"),
//! never by vendor or provider. `meshwork up` provisions it through the broker, binds it, and
//! delivers the binding's credentials to the one workload named by `bindTo`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::class::Size;
use crate::resource::Name;

/// The `spec` of a `ServiceClaim` resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceClaimSpec {
    /// The `ServiceClass` name, e.g. `postgresql`.
    pub class: Name,
    /// An explicit size; the environment's policy default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// The `Workload` that receives the credentials (and only it).
    pub bind_to: Name,
}

/// The `status` of a `ServiceClaim` on a Kubernetes cluster, written only by the controller
/// (`meshwork control --kubernetes --broker-url …`; `meshwork up` keeps claim state in the
/// broker's store and never reads or writes this). Its shape follows the Service Binding specification
/// (`status.binding.name`) and Kubernetes' standard conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceClaimStatus {
    /// The Secret holding the binding's credentials (Service Binding spec "Provisioned
    /// Service" duck type), once the claim is bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<BindingReference>,
    /// Standard conditions; `Ready` is `True` once the instance is provisioned and bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A reference to the Secret of a binding (Service Binding spec `status.binding`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingReference {
    /// The Secret's name, in the claim's namespace.
    pub name: String,
}

/// A Kubernetes standard condition (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase reason for the last transition.
    #[serde(default)]
    pub reason: String,
    /// A message for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The status of a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known (yet).
    Unknown,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn size_is_optional_and_vendors_are_not_a_field() {
        let spec: ServiceClaimSpec =
            serde_json::from_value(json!({"class": "postgresql", "bindTo": "billing"})).unwrap();
        assert_eq!(spec.size, None);
        let err = serde_json::from_value::<ServiceClaimSpec>(
            json!({"class": "postgresql", "bindTo": "billing", "provider": "rds"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("provider"), "{err}");
        let err = serde_json::from_value::<ServiceClaimSpec>(
            json!({"class": "postgresql", "bindTo": "billing", "size": "huge"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("huge"), "{err}");
    }
}

/// The DNS suffix of claimed services' names inside pods: `<claim>.<namespace>.claims.meshwork`.
///
/// In pod mode an app cannot reach the instance's address itself (the machine's `127.0.0.1`
/// is not the pod's), so the binding it is handed names its instance by this name instead;
/// the pod's resolver answers it and the workload's sidecar — which reads the real address
/// from the binding — connects, for the bound workload only.
pub const CLAIM_DOMAIN: &str = "claims.meshwork";

/// The name an app in a pod reaches claim `name` of `namespace` by.
pub fn claim_host(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.{CLAIM_DOMAIN}")
}

/// The claim and namespace a [`claim_host`] name stands for (lowercase, without a trailing
/// dot); `None` for any other name.
pub fn parse_claim_host(host: &str) -> Option<(&str, &str)> {
    let rest = host.strip_suffix(CLAIM_DOMAIN)?.strip_suffix('.')?;
    let (name, namespace) = rest.split_once('.')?;
    let label = |s: &str| super::is_resource_name(s) && !s.contains('.');
    (label(name) && label(namespace)).then_some((name, namespace))
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn claim_hosts_round_trip_and_nothing_else_parses() {
        assert_eq!(
            claim_host("charges-db", "default"),
            "charges-db.default.claims.meshwork"
        );
        assert_eq!(
            parse_claim_host("charges-db.default.claims.meshwork"),
            Some(("charges-db", "default"))
        );
        for other in [
            "claims.meshwork",
            "x.claims.meshwork",
            "a.b.c.claims.meshwork",
            "charges-db.default.claims.meshwork.evil",
            "charges-db.defaultclaims.meshwork",
            "Charges-DB.default.claims.meshwork",
            "api.stripe.com",
        ] {
            assert_eq!(parse_claim_host(other), None, "{other}");
        }
    }
}
