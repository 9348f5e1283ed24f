//! Version negotiation: every answer has the shape of the `X-Broker-API-Version` the platform
//! sent. A 2.13 platform never sees a field introduced after 2.13 (its client may reject or
//! misread what it does not know); 2.17 sees everything.
//!
//! Handlers render the newest shape; [`shape`] removes what the request's version predates,
//! from one table ([`INTRODUCED`]) taken from the spec's release notes, so the knowledge of
//! "which field came when" lives in one place.

use std::str::FromStr;

use axum::http::{HeaderMap, Method, header};
use serde_json::Value;

use crate::BrokerError;

/// Oldest and newest supported minor versions of OSB 2.x. 2.13 is the oldest: it introduced
/// plan `schemas` and the originating-identity header, which this broker relies on.
pub(crate) const MINOR_VERSIONS: std::ops::RangeInclusive<u32> = 13..=17;

/// A supported `X-Broker-API-Version` (`2.<minor>`), parsed once by the gate and kept in the
/// request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ApiVersion {
    minor: u32,
}

impl ApiVersion {
    /// The newest version (what conformance runs and `meshwork up` send).
    pub(crate) const NEWEST: ApiVersion = ApiVersion {
        minor: *MINOR_VERSIONS.end(),
    };

    fn has(self, introduced_in: u32) -> bool {
        self.minor >= introduced_in
    }
}

fn supported() -> String {
    format!(
        "this broker supports 2.{} to 2.{}",
        MINOR_VERSIONS.start(),
        MINOR_VERSIONS.end()
    )
}

impl FromStr for ApiVersion {
    type Err = BrokerError;

    /// `2.13` … `2.17`; anything else (older, newer, `2.17.0`, `3.0`) is 412.
    fn from_str(text: &str) -> Result<Self, BrokerError> {
        let minor =
            text.strip_prefix("2.")
                .and_then(|m| match m.bytes().all(|b| b.is_ascii_digit()) {
                    true => m.parse::<u32>().ok(),
                    false => None,
                });
        match minor {
            Some(minor) if MINOR_VERSIONS.contains(&minor) => Ok(ApiVersion { minor }),
            Some(minor) if minor < *MINOR_VERSIONS.start() => {
                Err(BrokerError::UnsupportedVersion(format!(
                    "X-Broker-API-Version {text:?} is older than the oldest version this broker speaks; {}",
                    supported()
                )))
            }
            _ => Err(BrokerError::UnsupportedVersion(format!(
                "X-Broker-API-Version {text:?} is not supported; {}",
                supported()
            ))),
        }
    }
}

impl ApiVersion {
    /// The request's version header, required on every request (412 when missing).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, BrokerError> {
        let Some(value) = headers.get("x-broker-api-version") else {
            return Err(BrokerError::UnsupportedVersion(format!(
                "the X-Broker-API-Version header is required; {}",
                supported()
            )));
        };
        value.to_str().unwrap_or_default().parse()
    }
}

/// Which OSB document a response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Document {
    /// `GET /v2/catalog`: services (and, inside them, plans).
    Catalog,
    /// A service instance (provision, update, fetch).
    Instance,
    /// An instance's `last_operation`.
    InstanceOperation,
    /// A service binding (bind, fetch).
    Binding,
    /// A binding's `last_operation`.
    BindingOperation,
}

impl Document {
    /// The document a request's response is, from its method and path.
    pub(crate) fn of(method: &Method, path: &str) -> Option<Document> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let last_op = parts.last() == Some(&"last_operation");
        match parts.as_slice() {
            ["v2", "catalog"] if method == Method::GET => Some(Document::Catalog),
            ["v2", "service_instances", _] => Some(Document::Instance),
            ["v2", "service_instances", _, _] if last_op => Some(Document::InstanceOperation),
            ["v2", "service_instances", _, "service_bindings", _] => Some(Document::Binding),
            ["v2", "service_instances", _, "service_bindings", _, _] if last_op => {
                Some(Document::BindingOperation)
            }
            _ => None,
        }
    }
}

/// Where a field sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// An element of the catalog's `services`.
    Service,
    /// An element of a service's `plans`.
    Plan,
    /// The top level of a document.
    Top(Document),
    /// Inside a binding's `metadata`.
    BindingMetadata,
}

/// Response fields and the OSB 2.x minor version that introduced them (the spec's release
/// notes: 2.14 instance/binding fetch; 2.15 maintenance_info, plan-level plan_updateable,
/// maximum_polling_duration, context updates, binding endpoints, Retry-After; 2.16 instance
/// metadata, binding expiry, instance_usable/update_repeatable; 2.17 binding rotation).
const INTRODUCED: &[(Place, &str, u32)] = &[
    (Place::Service, "instances_retrievable", 14),
    (Place::Service, "bindings_retrievable", 14),
    (Place::Service, "allow_context_updates", 15),
    (Place::Service, "binding_rotatable", 17),
    (Place::Plan, "plan_updateable", 15),
    (Place::Plan, "maintenance_info", 15),
    (Place::Plan, "maximum_polling_duration", 15),
    (Place::Top(Document::Instance), "maintenance_info", 15),
    (Place::Top(Document::Instance), "metadata", 16),
    (
        Place::Top(Document::InstanceOperation),
        "instance_usable",
        16,
    ),
    (
        Place::Top(Document::InstanceOperation),
        "update_repeatable",
        16,
    ),
    (Place::Top(Document::Binding), "endpoints", 15),
    (Place::Top(Document::Binding), "metadata", 16),
    (Place::BindingMetadata, "renew_before", 17),
];

/// The `Retry-After` header on `last_operation` came with 2.15.
const RETRY_AFTER_SINCE: u32 = 15;

fn strip(object: Option<&mut serde_json::Map<String, Value>>, place: Place, v: ApiVersion) {
    let Some(object) = object else { return };
    for (_, field, _) in INTRODUCED
        .iter()
        .filter(|(p, _, since)| *p == place && !v.has(*since))
    {
        object.remove(*field);
    }
}

/// Removes from `body` (a `document`) every field `v` predates.
pub(crate) fn shape(document: Document, v: ApiVersion, body: &mut Value) {
    if v == ApiVersion::NEWEST {
        return;
    }
    match document {
        Document::Catalog => {
            let services = body.get_mut("services").and_then(Value::as_array_mut);
            for service in services.into_iter().flatten() {
                strip(service.as_object_mut(), Place::Service, v);
                let plans = service.get_mut("plans").and_then(Value::as_array_mut);
                for plan in plans.into_iter().flatten() {
                    strip(plan.as_object_mut(), Place::Plan, v);
                }
            }
        }
        Document::Binding => {
            strip(
                body.get_mut("metadata").and_then(Value::as_object_mut),
                Place::BindingMetadata,
                v,
            );
            strip(body.as_object_mut(), Place::Top(document), v);
        }
        _ => strip(body.as_object_mut(), Place::Top(document), v),
    }
}

/// Removes headers `v` predates from a response's headers.
pub(crate) fn shape_headers(document: Document, v: ApiVersion, headers: &mut HeaderMap) {
    let polled = matches!(
        document,
        Document::InstanceOperation | Document::BindingOperation
    );
    if polled && !v.has(RETRY_AFTER_SINCE) {
        headers.remove(header::RETRY_AFTER);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(text: &str) -> ApiVersion {
        text.parse().unwrap()
    }

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(v("2.13"), ApiVersion { minor: 13 });
        assert_eq!(v("2.17"), ApiVersion::NEWEST);
        for bad in ["2.12", "2.18", "3.0", "2.17.0", "2.+17", "", "2."] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad}");
        }
        let old = "2.12".parse::<ApiVersion>().unwrap_err().to_string();
        assert!(
            old.contains("older") && old.contains("2.13 to 2.17"),
            "{old}"
        );
    }

    #[test]
    fn documents_are_recognised_by_path() {
        let get = Method::GET;
        assert_eq!(Document::of(&get, "/v2/catalog"), Some(Document::Catalog));
        assert_eq!(
            Document::of(&get, "/v2/service_instances/a"),
            Some(Document::Instance)
        );
        assert_eq!(
            Document::of(&get, "/v2/service_instances/a/last_operation"),
            Some(Document::InstanceOperation)
        );
        assert_eq!(
            Document::of(&Method::PUT, "/v2/service_instances/a/service_bindings/b"),
            Some(Document::Binding)
        );
        assert_eq!(
            Document::of(
                &get,
                "/v2/service_instances/a/service_bindings/b/last_operation"
            ),
            Some(Document::BindingOperation)
        );
        assert_eq!(Document::of(&get, "/v2/service_instances/a/x"), None);
    }

    #[test]
    fn older_platforms_get_older_shapes() {
        let catalog = json!({"services": [{
            "id": "s", "instances_retrievable": true, "allow_context_updates": true,
            "binding_rotatable": true,
            "plans": [{"id": "p", "schemas": {}, "maintenance_info": {"version": "1.0.0"},
                       "plan_updateable": true}]
        }]});
        let mut at13 = catalog.clone();
        shape(Document::Catalog, v("2.13"), &mut at13);
        assert_eq!(
            at13,
            json!({"services": [{"id": "s", "plans": [{"id": "p", "schemas": {}}]}]})
        );
        let mut at16 = catalog.clone();
        shape(Document::Catalog, v("2.16"), &mut at16);
        assert!(at16["services"][0].get("binding_rotatable").is_none());
        assert_eq!(at16["services"][0]["plans"][0]["plan_updateable"], true);

        let binding = json!({"credentials": {}, "endpoints": [],
                             "metadata": {"expires_at": "t", "renew_before": "u"}});
        let mut at16 = binding.clone();
        shape(Document::Binding, v("2.16"), &mut at16);
        assert_eq!(at16["metadata"], json!({"expires_at": "t"}));
        let mut at14 = binding;
        shape(Document::Binding, v("2.14"), &mut at14);
        assert_eq!(at14, json!({"credentials": {}}));

        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "1".parse().unwrap());
        shape_headers(Document::InstanceOperation, v("2.14"), &mut headers);
        assert!(headers.is_empty());
    }
}
