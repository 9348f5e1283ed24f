//! `ServiceClaim`: a workload asks for a service by portable class ("a postgresql, small"),
//! never by vendor or provider. `meshwork up` provisions it through the broker, binds it, and
//! delivers the binding's credentials to the one workload named by `bindTo`.

use serde::{Deserialize, Serialize};

use super::class::Size;
use crate::resource::Name;

/// The `spec` of a `ServiceClaim` resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
