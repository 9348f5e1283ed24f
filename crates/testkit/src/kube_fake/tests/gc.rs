//! The garbage collector and absent owners: an owner is live for a dependent only in the
//! dependent's namespace (or cluster-scoped), as the real collector decides.

use serde_json::{Value, json};

use super::client::{call, call_as};
use super::{CLAIMS, SECRETS, server};

const OTHER_CLAIMS: &str = "/apis/meshwork.dev/v1alpha1/namespaces/other/serviceclaims";

fn reference(owner: &Value) -> Value {
    json!({"apiVersion":"meshwork.dev/v1alpha1","kind":"ServiceClaim",
           "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]})
}

fn owned(name: &str, owners: &[&Value]) -> Value {
    let refs: Vec<Value> = owners.iter().map(|o| reference(o)).collect();
    json!({"metadata":{"name":name,"ownerReferences":refs}})
}

#[tokio::test]
async fn a_dependent_of_an_absent_owner_is_deleted() {
    let server = server().await;
    let ghost = json!({"metadata":{"name":"ghost","uid":"00000000-0000-0000-0000-000000000000"}});
    let (status, _) = call(&server, "POST", SECRETS, Some(&owned("orphan", &[&ghost]))).await;
    assert_eq!(
        status, 201,
        "the create succeeds; the collector comes after"
    );
    let (status, _) = call(&server, "GET", &format!("{SECRETS}/orphan"), None).await;
    assert_eq!(status, 404);

    let (_, elsewhere) = call(
        &server,
        "POST",
        OTHER_CLAIMS,
        Some(&json!({"metadata":{"name":"c"}})),
    )
    .await;
    call(
        &server,
        "POST",
        SECRETS,
        Some(&owned("cross", &[&elsewhere])),
    )
    .await;
    let (status, _) = call(&server, "GET", &format!("{SECRETS}/cross"), None).await;
    assert_eq!(status, 404, "an owner in another namespace is absent");
}

#[tokio::test]
async fn absent_owners_are_dropped_when_a_live_one_remains_and_checked_on_update() {
    let server = server().await;
    let (_, owner) = call(
        &server,
        "POST",
        CLAIMS,
        Some(&json!({"metadata":{"name":"o"}})),
    )
    .await;
    let ghost = json!({"metadata":{"name":"ghost","uid":"00000000-0000-0000-0000-000000000000"}});
    call(
        &server,
        "POST",
        SECRETS,
        Some(&owned("s", &[&owner, &ghost])),
    )
    .await;
    let path = format!("{SECRETS}/s");
    let (status, kept) = call(&server, "GET", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        kept["metadata"]["ownerReferences"],
        json!([reference(&owner)])
    );

    let dangling = json!({"metadata":{"ownerReferences":[reference(&ghost)]}});
    let (status, _) = call_as(
        &server,
        "PATCH",
        &path,
        "application/merge-patch+json",
        Some(&dangling),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&server, "GET", &path, None).await;
    assert_eq!(status, 404, "its only owner is now absent");
}
