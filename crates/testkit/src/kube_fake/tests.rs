//! The fake API server over real HTTPS with a bare HTTP client: every verb, conflicts,
//! finalizers, garbage collection, the status subresource, watches, bookmarks and 410s.

mod admission;
mod client;
mod controller;
mod gc;
mod kube_client;
mod recorded;
mod schema;
mod verbs;
mod watches;

use super::{FakeApiServer, FakeResource};

/// Claims (with a status subresource), policies (without) and secrets.
pub(super) fn resources() -> Vec<FakeResource> {
    vec![
        FakeResource::namespaced("meshwork.dev", "v1alpha1", "serviceclaims", "ServiceClaim")
            .with_status(),
        FakeResource::namespaced("meshwork.dev", "v1alpha1", "meshes", "Mesh"),
        FakeResource::secrets(),
    ]
}

pub(super) const CLAIMS: &str = "/apis/meshwork.dev/v1alpha1/namespaces/default/serviceclaims";
pub(super) const MESHES: &str = "/apis/meshwork.dev/v1alpha1/namespaces/default/meshes";
pub(super) const SECRETS: &str = "/api/v1/namespaces/default/secrets";

pub(super) async fn server() -> FakeApiServer {
    FakeApiServer::start(&resources()).await.unwrap()
}

#[test]
fn the_meshwork_list_has_every_crd_kind_secrets_and_routes() {
    let all = super::meshwork_resources();
    for info in api::crd::KINDS {
        let found = all.iter().find(|r| r.kind == info.kind).unwrap();
        assert_eq!(found.group, "meshwork.dev");
        assert_eq!(found.has_status_subresource, info.has_status);
    }
    let claim = all.iter().find(|r| r.kind == "ServiceClaim").unwrap();
    assert!(claim.has_status_subresource);
    for plural in ["secrets", "httproutes", "grpcroutes"] {
        assert!(all.iter().any(|r| r.plural == plural), "{plural}");
    }
}
