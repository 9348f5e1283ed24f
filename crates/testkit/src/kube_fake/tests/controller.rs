//! The real kube-rs `Controller` end to end against the fake: a claim gets a finalizer, an
//! owned Secret (server-side apply) and a status; deleting it runs the cleanup, removes the
//! finalizer, and the fake's garbage collector takes the Secret.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::kube_client::client;
use super::server;
use crate::kube_fake::{FakeApiServer, FakeVerb};

struct Context {
    claims: Api<DynamicObject>,
    secrets: Api<Secret>,
    resource: ApiResource,
}

type Failure = finalizer::Error<kube::Error>;

async fn reconcile(claim: Arc<DynamicObject>, context: Arc<Context>) -> Result<Action, Failure> {
    let api = context.claims.clone();
    finalizer(&api, "meshwork.dev/cleanup", claim, |event| async move {
        let Finalizer::Apply(claim) = event else {
            return Ok(Action::await_change());
        };
        let name = claim.name_any();
        let owner = claim.controller_owner_ref(&context.resource).unwrap();
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "ownerReferences": [owner]}, "data": {"url": "cG9zdGdyZXM="}});
        let apply = PatchParams::apply("meshwork-test").force();
        context.secrets.patch(&name, &apply, &Patch::Apply(&secret)).await?;
        let status = json!({"status": {"phase": "Bound"}});
        let merge = PatchParams::default();
        context.claims.patch_status(&name, &merge, &Patch::Merge(&status)).await?;
        Ok(Action::await_change())
    })
    .await
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn phase(server: &FakeApiServer) -> Option<String> {
    let claim = server.object("meshwork.dev", "serviceclaims", "default", "db")?;
    claim["status"]["phase"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_real_controller_reconciles_claims_into_owned_secrets_and_cleans_up() {
    let server = server().await;
    let client = client(&server).await;
    let gvk = GroupVersionKind::gvk("meshwork.dev", "v1alpha1", "ServiceClaim");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "serviceclaims");
    let context = Arc::new(Context {
        claims: Api::namespaced_with(client.clone(), "default", &resource),
        secrets: Api::namespaced(client.clone(), "default"),
        resource: resource.clone(),
    });
    let all_claims = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let controller = Controller::new_with(all_claims, watcher::Config::default(), resource.clone())
        .owns(Api::<Secret>::all(client), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(50)),
            context.clone(),
        )
        .for_each(|_| async {});
    let running = tokio::spawn(controller);

    let claim = DynamicObject::new("db", &resource).data(json!({"spec": {"class": "postgres"}}));
    context
        .claims
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    until("the claim's status", || {
        phase(&server).as_deref() == Some("Bound")
    })
    .await;
    let secret = server.object("", "secrets", "default", "db").unwrap();
    let held = server
        .object("meshwork.dev", "serviceclaims", "default", "db")
        .unwrap();
    assert_eq!(
        held["metadata"]["finalizers"],
        json!(["meshwork.dev/cleanup"])
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        held["metadata"]["uid"]
    );

    context
        .claims
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    until("the claim to go", || {
        server
            .object("meshwork.dev", "serviceclaims", "default", "db")
            .is_none()
    })
    .await;
    assert!(
        server.object("", "secrets", "default", "db").is_none(),
        "collected with its owner"
    );
    running.abort();

    let used: Vec<(FakeVerb, String, Option<String>)> = server
        .requests()
        .into_iter()
        .map(|r| (r.verb, r.resource, r.subresource))
        .collect();
    let used_by = |verb, resource: &str, sub: Option<&str>| {
        used.contains(&(verb, resource.to_owned(), sub.map(str::to_owned)))
    };
    assert!(used_by(FakeVerb::Watch, "serviceclaims", None), "{used:?}");
    assert!(used_by(FakeVerb::Watch, "secrets", None));
    assert!(
        used_by(FakeVerb::Patch, "serviceclaims", None),
        "the finalizer"
    );
    assert!(used_by(FakeVerb::Patch, "serviceclaims", Some("status")));
    assert!(used_by(FakeVerb::Patch, "secrets", None));
}
