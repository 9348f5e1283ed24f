//! The kinds controller mode watches, as kube's dynamic [`ApiResource`]s: every meshwork kind
//! of `api::crd::KINDS` (group `meshwork.dev`, version `v1alpha1`) and the Gateway API's
//! `HTTPRoute` and `GRPCRoute` (`gateway.networking.k8s.io/v1`, upstream's CRDs).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

/// The Gateway API group and the version meshwork reads its routes in.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const GATEWAY_VERSION: &str = "v1";

/// One kind to watch.
#[derive(Debug, Clone)]
pub struct WatchedKind {
    /// Group, version, kind and plural, for the API paths.
    pub resource: ApiResource,
    /// Whether a cluster may lack its CRD: the Gateway API's are installed separately, and a
    /// mesh without routes needs none; meshwork's own are required.
    pub optional: bool,
}

/// Every kind, meshwork's first (in `api::crd::KINDS` order), then the routes.
pub fn watched_kinds() -> Vec<WatchedKind> {
    let meshwork = api::crd::KINDS.iter().map(|info| {
        let gvk = GroupVersionKind::gvk(api::crd::GROUP, api::crd::VERSION, info.kind);
        WatchedKind {
            resource: ApiResource::from_gvk_with_plural(&gvk, info.plural),
            optional: false,
        }
    });
    let routes =
        [("HTTPRoute", "httproutes"), ("GRPCRoute", "grpcroutes")].map(|(kind, plural)| {
            let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, GATEWAY_VERSION, kind);
            WatchedKind {
                resource: ApiResource::from_gvk_with_plural(&gvk, plural),
                optional: true,
            }
        });
    meshwork.chain(routes).collect()
}

/// An object as the API server sent it, as JSON, with its `apiVersion` and `kind` (list
/// items may lack them; the kind watched is what they are).
pub fn to_json(object: &DynamicObject, kind: &ApiResource) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        fields.insert("apiVersion".into(), Value::from(kind.api_version.as_str()));
        fields.insert("kind".into(), Value::from(kind.kind.as_str()));
    }
    value
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_the_loader_reads_is_watched_with_its_api_version() {
        let kinds = watched_kinds();
        let names: Vec<&str> = kinds.iter().map(|k| k.resource.kind.as_str()).collect();
        for kind in api::set::KINDS {
            assert!(names.contains(kind), "{kind} is not watched");
        }
        assert_eq!(names.len(), api::set::KINDS.len());
        for k in &kinds {
            let r = &k.resource;
            assert_eq!(r.api_version, api::set::api_version(&r.kind), "{}", r.kind);
            assert_eq!(k.optional, r.group == GATEWAY_GROUP);
        }
        let policies = kinds
            .iter()
            .find(|k| k.resource.kind == "AuthorizationPolicy");
        assert_eq!(
            policies.map(|k| k.resource.plural.as_str()),
            Some("authorizationpolicies")
        );
    }

    #[test]
    fn list_items_get_their_kind_back() {
        let kinds = watched_kinds();
        let route = &kinds
            .iter()
            .find(|k| k.resource.kind == "HTTPRoute")
            .unwrap()
            .resource;
        // A list item as some servers send it: no apiVersion or kind.
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "billing", "namespace": "default", "resourceVersion": "7"},
            "spec": {"parentRefs": []},
        }))
        .expect("object");
        let json = to_json(&object, route);
        assert_eq!(json["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(json["kind"], "HTTPRoute");
        assert_eq!(json["metadata"]["resourceVersion"], "7");
        assert_eq!(json["spec"]["parentRefs"], serde_json::json!([]));
    }
}
