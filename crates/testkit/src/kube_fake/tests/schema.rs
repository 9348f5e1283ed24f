//! CRD schemas: meshwork's own (from `api::crd`, as `deploy/crds`) prune, default and
//! validate writes as the real server would.

use serde_json::{Value, json};

use super::client::{call, call_as};
use crate::kube_fake::{FakeApiError, FakeApiServer, FakeResource, meshwork_resources};

const CLAIMS: &str = "/apis/meshwork.dev/v1alpha1/namespaces/default/serviceclaims";

fn claim(spec: Value) -> Value {
    json!({"apiVersion":"meshwork.dev/v1alpha1","kind":"ServiceClaim",
           "metadata":{"name":"c"},"spec":spec})
}

async fn meshwork() -> FakeApiServer {
    FakeApiServer::start(&meshwork_resources()).await.unwrap()
}

#[tokio::test]
async fn meshwork_claims_are_pruned_and_validated_by_their_crd_schema() {
    let server = meshwork().await;
    let good = claim(json!({"class":"postgres","bindTo":"app","size":"small","colour":"red"}));
    let (status, created) = call(&server, "POST", CLAIMS, Some(&good)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["spec"],
        json!({"class":"postgres","bindTo":"app","size":"small"}),
        "the unknown field is pruned"
    );
    let (status, body) = call(
        &server,
        "POST",
        CLAIMS,
        Some(&claim(json!({"class":"postgres"}))),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["message"],
        "ServiceClaim.meshwork.dev \"c\" is invalid: spec.bindTo: Required value"
    );
    assert_eq!(
        body["details"],
        json!({"name":"c","group":"meshwork.dev","kind":"ServiceClaim","causes":[
            {"reason":"FieldValueRequired","message":"Required value","field":"spec.bindTo"}]})
    );

    let path = format!("{CLAIMS}/c");
    let merge = "application/merge-patch+json";
    for (bad, field, reason) in [
        (
            json!({"spec":{"size":"huge"}}),
            "spec.size",
            "FieldValueNotSupported",
        ),
        (
            json!({"spec":{"class":"Not_A_Name"}}),
            "spec.class",
            "FieldValueInvalid",
        ),
        (
            json!({"spec":{"class":"a".repeat(64)}}),
            "spec.class",
            "FieldValueTooLong",
        ),
        (
            json!({"spec":{"bindTo":7}}),
            "spec.bindTo",
            "FieldValueTypeInvalid",
        ),
    ] {
        let (status, body) = call_as(&server, "PATCH", &path, merge, Some(&bad)).await;
        assert_eq!(status, 422, "{bad}: {body}");
        let causes = body["details"]["causes"].as_array().unwrap();
        assert!(
            causes
                .iter()
                .any(|c| c["field"] == field && c["reason"] == reason),
            "{bad}: {body}"
        );
    }
    let (_, got) = call(&server, "GET", &path, None).await;
    assert_eq!(got, created, "nothing refused was stored");
}

#[tokio::test]
async fn status_writes_are_validated_and_defaulted_too() {
    let server = meshwork().await;
    let good = claim(json!({"class":"postgres","bindTo":"app"}));
    call(&server, "POST", CLAIMS, Some(&good)).await;
    let status = format!("{CLAIMS}/c/status");
    let condition =
        json!({"type":"Ready","status":"True","lastTransitionTime":"2026-01-01T00:00:00Z"});
    let patch = json!({"status":{"conditions":[condition]}});
    let merge = "application/merge-patch+json";
    let (code, written) = call_as(&server, "PATCH", &status, merge, Some(&patch)).await;
    assert_eq!(code, 200, "{written}");
    let written = &written["status"]["conditions"][0];
    assert_eq!(
        (&written["message"], &written["reason"]),
        (&json!(""), &json!(""))
    );
    let bad = json!({"status":{"conditions":[{"type":"Ready","status":"Maybe","lastTransitionTime":"x"}]}});
    let (code, body) = call_as(&server, "PATCH", &status, merge, Some(&bad)).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "status.conditions[0].status"
    );
}

#[test]
fn every_meshwork_kind_carries_its_crd_schema() {
    for resource in meshwork_resources() {
        let expected = api::crd::KINDS.iter().find(|k| k.kind == resource.kind);
        match expected {
            Some(info) => assert_eq!(
                resource.schema.as_ref(),
                Some(&api::crd::object_schema(info)),
                "{}",
                resource.kind
            ),
            None => assert!(resource.schema.is_none(), "{}", resource.kind),
        }
    }
}

#[tokio::test]
async fn a_schema_that_does_not_compile_is_an_error_at_start() {
    let broken = FakeResource::namespaced("x.dev", "v1", "xs", "X")
        .with_schema(json!({"type": "object", "properties": {"a": {"type": 7}}}));
    let error = FakeApiServer::start(&[broken]).await.unwrap_err();
    assert!(
        matches!(error, FakeApiError::Schema { ref kind, .. } if kind == "X"),
        "{error}"
    );
}
