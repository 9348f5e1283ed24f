//! What the fake refuses before storing, as the real server does: bodies and patch results
//! that are not objects (once a panic that killed the connection), create-only rules, patch
//! options, propagation policies and Secrets' rules.

use serde_json::{Value, json};

use super::client::{call, call_as};
use super::{CLAIMS, MESHES, SECRETS, server};

const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

fn assert_status(answer: &(u16, Value), code: u16, reason: &str) {
    let (status, body) = answer;
    assert_eq!(*status, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

#[tokio::test]
async fn non_object_bodies_and_patch_results_are_400_and_change_nothing() {
    let server = server().await;
    let secret = json!({"metadata":{"name":"s"},"data":{"a":"eA=="}});
    let (_, created) = call(&server, "POST", SECRETS, Some(&secret)).await;
    let one = format!("{SECRETS}/s");
    for body in [json!([]), json!("x"), json!(1), json!({"metadata":"x"})] {
        let answer = call(&server, "PUT", &one, Some(&body)).await;
        assert_status(&answer, 400, "BadRequest");
        let answer = call(&server, "POST", SECRETS, Some(&body)).await;
        assert_status(&answer, 400, "BadRequest");
    }
    for (content_type, patch) in [
        (MERGE, json!([])),
        (MERGE, json!("x")),
        (MERGE, json!({"metadata": []})),
        (MERGE, json!({"metadata": {"labels": {"k": 1}}})),
        (JSON_PATCH, json!([{"op":"replace","path":"","value":1}])),
        (
            JSON_PATCH,
            json!([{"op":"replace","path":"/metadata","value":"x"}]),
        ),
    ] {
        let answer = call_as(&server, "PATCH", &one, content_type, Some(&patch)).await;
        assert_status(&answer, 400, "BadRequest");
    }
    call(
        &server,
        "POST",
        CLAIMS,
        Some(&json!({"metadata":{"name":"c"}})),
    )
    .await;
    let status = format!("{CLAIMS}/c/status");
    let answer = call(&server, "PUT", &status, Some(&json!([]))).await;
    assert_status(&answer, 400, "BadRequest");
    let answer = call_as(&server, "PATCH", &status, MERGE, Some(&json!(7))).await;
    assert_status(&answer, 400, "BadRequest");
    let (status, got) = call(&server, "GET", &one, None).await;
    assert_eq!(
        (status, &got),
        (200, &created),
        "the server still serves, unchanged"
    );
}

#[tokio::test]
async fn creates_refuse_a_resource_version_and_names_that_are_not_dns_subdomains() {
    let server = server().await;
    let versioned = json!({"metadata":{"name":"a","resourceVersion":"5"}});
    let answer = call(&server, "POST", MESHES, Some(&versioned)).await;
    assert_status(&answer, 400, "BadRequest");
    assert_eq!(
        answer.1["message"],
        "resourceVersion should not be set on objects to be created"
    );
    for body in [
        json!({"metadata":{"name":"Not_Valid"}}),
        json!({"metadata":{"generateName":"UPPER-"}}),
    ] {
        let answer = call(&server, "POST", MESHES, Some(&body)).await;
        assert_status(&answer, 422, "Invalid");
        let cause = &answer.1["details"]["causes"][0];
        assert_eq!(cause["field"], "metadata.name");
        assert_eq!(cause["reason"], "FieldValueInvalid");
        assert_eq!(
            answer.1["details"]["kind"], "Mesh",
            "Invalid names the kind"
        );
    }
    let (_, list) = call(&server, "GET", MESHES, None).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn apply_needs_a_field_manager_and_force_is_for_apply_only() {
    let server = server().await;
    let path = format!("{MESHES}/m");
    let body = json!({"apiVersion":"meshwork.dev/v1alpha1","kind":"Mesh","metadata":{"name":"m"}});
    let answer = call_as(&server, "PATCH", &path, APPLY, Some(&body)).await;
    assert_status(&answer, 422, "Invalid");
    assert_eq!(
        answer.1["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    assert_eq!(answer.1["details"]["kind"], "PatchOptions");
    let managed = format!("{path}?fieldManager=t&force=true");
    let (status, _) = call_as(&server, "PATCH", &managed, APPLY, Some(&body)).await;
    assert_eq!(status, 201);
    let forced = format!("{path}?force=true");
    let answer = call_as(&server, "PATCH", &forced, MERGE, Some(&json!({}))).await;
    assert_status(&answer, 422, "Invalid");
    assert_eq!(
        answer.1["details"]["causes"][0],
        json!({"reason":"FieldValueForbidden","message":"Forbidden: may not be specified for non-apply patch","field":"force"})
    );
}

#[tokio::test]
async fn only_background_propagation_is_accepted() {
    let server = server().await;
    call(
        &server,
        "POST",
        MESHES,
        Some(&json!({"metadata":{"name":"m"}})),
    )
    .await;
    let path = format!("{MESHES}/m");
    let foreground = json!({"propagationPolicy":"Foreground"});
    let answer = call(&server, "DELETE", &path, Some(&foreground)).await;
    assert_status(&answer, 400, "BadRequest");
    let answer = call(
        &server,
        "DELETE",
        &format!("{path}?propagationPolicy=Orphan"),
        None,
    )
    .await;
    assert_status(&answer, 400, "BadRequest");
    assert_eq!(
        call(&server, "GET", &path, None).await.0,
        200,
        "not deleted"
    );
    let background = json!({"propagationPolicy":"Background"});
    assert_eq!(
        call(&server, "DELETE", &path, Some(&background)).await.0,
        200
    );
}

#[tokio::test]
async fn secrets_keep_their_type_honour_immutable_and_check_keys_and_values() {
    let server = server().await;
    let secret = json!({"metadata":{"name":"s"},"data":{"a":"eA=="}});
    let (_, created) = call(&server, "POST", SECRETS, Some(&secret)).await;
    let one = format!("{SECRETS}/s");
    let retype = json!({"type":"kubernetes.io/tls"});
    let answer = call_as(&server, "PATCH", &one, MERGE, Some(&retype)).await;
    assert_status(&answer, 422, "Invalid");
    assert_eq!(
        answer.1["message"],
        "Secret \"s\" is invalid: type: Invalid value: \"kubernetes.io/tls\": field is immutable"
    );
    let mut replaced = created.clone();
    replaced["type"] = json!("kubernetes.io/tls");
    let answer = call(&server, "PUT", &one, Some(&replaced)).await;
    assert_status(&answer, 422, "Invalid");

    let freeze = json!({"immutable": true});
    assert_eq!(
        call_as(&server, "PATCH", &one, MERGE, Some(&freeze))
            .await
            .0,
        200
    );
    for change in [
        json!({"data":{"a":"eQ=="}}),
        json!({"stringData":{"b":"y"}}),
        json!({"immutable": false}),
    ] {
        let answer = call_as(&server, "PATCH", &one, MERGE, Some(&change)).await;
        assert_status(&answer, 422, "Invalid");
    }
    let labelled = json!({"metadata":{"labels":{"k":"v"}}});
    assert_eq!(
        call_as(&server, "PATCH", &one, MERGE, Some(&labelled))
            .await
            .0,
        200
    );

    let bad_key = json!({"metadata":{"name":"k"},"data":{"a b":"eA=="}});
    let answer = call(&server, "POST", SECRETS, Some(&bad_key)).await;
    assert_status(&answer, 422, "Invalid");
    assert_eq!(answer.1["details"]["causes"][0]["field"], "data[a b]");
    for undecodable in [
        json!({"metadata":{"name":"v"},"data":{"a":"%%%"}}),
        json!({"metadata":{"name":"v"},"stringData":{"a":1}}),
    ] {
        let answer = call(&server, "POST", SECRETS, Some(&undecodable)).await;
        assert_status(&answer, 400, "BadRequest");
    }
}

#[tokio::test]
async fn a_watch_timeout_past_what_an_instant_holds_is_served() {
    let server = server().await;
    let path = format!("{MESHES}?watch=true&timeoutSeconds={}", u64::MAX);
    let mut watch = super::client::Watch::open(&server, &path).await;
    assert_eq!(watch.status, 200);
    call(
        &server,
        "POST",
        MESHES,
        Some(&json!({"metadata":{"name":"m"}})),
    )
    .await;
    let event = watch.next().await.unwrap();
    assert_eq!(event["type"], "ADDED");
}
