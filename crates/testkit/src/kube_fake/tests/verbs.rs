//! get, list, create, replace, patch, delete; conflicts; status; finalizers; GC; the log.

use serde_json::{Value, json};

use super::client::{call, call_as, call_with_token};
use super::{CLAIMS, MESHES, SECRETS, server};
use crate::kube_fake::{FakeRequest, FakeVerb};

fn claim(name: &str) -> Value {
    json!({"apiVersion":"meshwork.dev/v1alpha1","kind":"ServiceClaim",
           "metadata":{"name":name},"spec":{"class":"postgres"},"status":{"phase":"Bound"}})
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn create_get_and_list_answer_like_the_real_server() {
    let server = server().await;
    let (status, created) = call(&server, "POST", CLAIMS, Some(&claim("a"))).await;
    assert_eq!(status, 201, "{created}");
    let metadata = &created["metadata"];
    assert_eq!(metadata["namespace"], "default");
    assert_eq!(metadata["generation"], 1);
    assert!(metadata["uid"].as_str().unwrap().len() == 36);
    assert!(
        metadata["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(
        created.get("status").is_none(),
        "status is dropped on create with a subresource"
    );
    let (status, got) = call(&server, "GET", &format!("{CLAIMS}/a"), None).await;
    assert_eq!((status, &got), (200, &created));
    let (status, list) = call(&server, "GET", CLAIMS, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["kind"], "ServiceClaimList");
    assert_eq!(list["apiVersion"], "meshwork.dev/v1alpha1");
    assert_eq!(list["metadata"]["continue"], "");
    assert_eq!(rv(&list), rv(&created));
    assert_eq!(list["items"], json!([created]));
    let (status, all) = call(
        &server,
        "GET",
        "/apis/meshwork.dev/v1alpha1/serviceclaims",
        None,
    )
    .await;
    assert_eq!((status, all["items"].as_array().unwrap().len()), (200, 1));
    let (_, secrets) = call(&server, "GET", SECRETS, None).await;
    assert_eq!(secrets["kind"], "SecretList");
    assert!(
        secrets["metadata"].get("continue").is_none(),
        "core lists omit an empty continue"
    );
}

#[tokio::test]
async fn a_second_create_is_409_already_exists() {
    let server = server().await;
    call(&server, "POST", CLAIMS, Some(&claim("a"))).await;
    let (status, body) = call(&server, "POST", CLAIMS, Some(&claim("a"))).await;
    assert_eq!(status, 409);
    assert_eq!(body["reason"], "AlreadyExists");
    assert_eq!(
        body["message"],
        "serviceclaims.meshwork.dev \"a\" already exists"
    );
    assert_eq!(
        body["details"],
        json!({"name":"a","group":"meshwork.dev","kind":"serviceclaims"})
    );
}

#[tokio::test]
async fn replace_conflicts_on_a_stale_version_and_bumps_generation_on_spec_changes() {
    let server = server().await;
    let (_, created) = call(&server, "POST", CLAIMS, Some(&claim("a"))).await;
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"x":"y"});
    let (status, after_label) = call(&server, "PUT", &format!("{CLAIMS}/a"), Some(&labelled)).await;
    assert_eq!(status, 200);
    assert_eq!(
        after_label["metadata"]["generation"], 1,
        "labels are not spec"
    );
    assert!(rv(&after_label) > rv(&created));
    let (status, stale) = call(&server, "PUT", &format!("{CLAIMS}/a"), Some(&labelled)).await;
    assert_eq!(status, 409);
    assert_eq!(stale["reason"], "Conflict");
    assert_eq!(
        stale["message"],
        "Operation cannot be fulfilled on serviceclaims.meshwork.dev \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let mut respec = after_label.clone();
    respec["spec"]["class"] = json!("redis");
    let (_, after_spec) = call(&server, "PUT", &format!("{CLAIMS}/a"), Some(&respec)).await;
    assert_eq!(after_spec["metadata"]["generation"], 2);
    let (status, same) = call(&server, "PUT", &format!("{CLAIMS}/a"), Some(&after_spec)).await;
    assert_eq!(
        (status, rv(&same)),
        (200, rv(&after_spec)),
        "a no-op write is not a new version"
    );
    let mut unversioned = after_spec.clone();
    unversioned["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let (status, body) = call(&server, "PUT", &format!("{CLAIMS}/a"), Some(&unversioned)).await;
    assert_eq!((status, body["reason"].as_str()), (422, Some("Invalid")));
}

#[tokio::test]
async fn merge_json_and_apply_patches() {
    let server = server().await;
    call(
        &server,
        "POST",
        MESHES,
        Some(&json!({"metadata":{"name":"m"},"spec":{"a":1,"b":2}})),
    )
    .await;
    let path = format!("{MESHES}/m");
    let merge = json!({"spec":{"a":null,"c":3}});
    let (status, merged) = call_as(
        &server,
        "PATCH",
        &path,
        "application/merge-patch+json",
        Some(&merge),
    )
    .await;
    assert_eq!((status, &merged["spec"]), (200, &json!({"b":2,"c":3})));
    let failing =
        json!([{"op":"test","path":"/spec/b","value":9},{"op":"remove","path":"/spec/b"}]);
    let (status, body) = call_as(
        &server,
        "PATCH",
        &path,
        "application/json-patch+json",
        Some(&failing),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );
    let passing =
        json!([{"op":"test","path":"/spec/b","value":2},{"op":"remove","path":"/spec/b"}]);
    let (status, patched) = call_as(
        &server,
        "PATCH",
        &path,
        "application/json-patch+json",
        Some(&passing),
    )
    .await;
    assert_eq!((status, &patched["spec"]), (200, &json!({"c":3})));
    let applied = json!({"apiVersion":"meshwork.dev/v1alpha1","kind":"Mesh","metadata":{"name":"n"},"spec":{"d":4}});
    let apply = "application/apply-patch+yaml";
    let (status, created) = call_as(
        &server,
        "PATCH",
        &format!("{MESHES}/n?fieldManager=t"),
        apply,
        Some(&applied),
    )
    .await;
    assert_eq!((status, &created["spec"]), (201, &json!({"d":4})));
    let (status, _) = call_as(
        &server,
        "PATCH",
        &path,
        "application/strategic-merge-patch+json",
        Some(&merge),
    )
    .await;
    assert_eq!(status, 415);
    let (status, _) = call_as(
        &server,
        "PATCH",
        &format!("{MESHES}/missing"),
        "application/merge-patch+json",
        Some(&merge),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_status_subresource_is_the_only_way_to_change_status() {
    let server = server().await;
    let (_, created) = call(&server, "POST", CLAIMS, Some(&claim("a"))).await;
    let path = format!("{CLAIMS}/a");
    let merge = "application/merge-patch+json";
    let both = json!({"spec":{"class":"x"},"status":{"phase":"Bound"}});
    let (_, main) = call_as(&server, "PATCH", &path, merge, Some(&both)).await;
    assert!(main.get("status").is_none(), "{main}");
    assert_eq!(main["spec"]["class"], "x");
    let status_path = format!("{path}/status");
    let both = json!({"spec":{"class":"y"},"status":{"phase":"Bound"}});
    let (code, sub) = call_as(&server, "PATCH", &status_path, merge, Some(&both)).await;
    assert_eq!(code, 200);
    assert_eq!(
        (&sub["spec"]["class"], &sub["status"]["phase"]),
        (&json!("x"), &json!("Bound"))
    );
    assert_eq!(
        sub["metadata"]["generation"], 2,
        "status writes do not bump generation"
    );
    assert!(rv(&sub) > rv(&created));
    let (code, got) = call(&server, "GET", &status_path, None).await;
    assert_eq!((code, &got), (200, &sub));
    call(
        &server,
        "POST",
        MESHES,
        Some(&json!({"metadata":{"name":"m"}})),
    )
    .await;
    let (code, _) = call_as(
        &server,
        "PATCH",
        &format!("{MESHES}/m/status"),
        merge,
        Some(&both),
    )
    .await;
    assert_eq!(code, 404, "no status subresource on meshes");
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_the_last_one_goes() {
    let server = server().await;
    let mut held = claim("a");
    held["metadata"]["finalizers"] = json!(["meshwork.dev/cleanup"]);
    call(&server, "POST", CLAIMS, Some(&held)).await;
    let path = format!("{CLAIMS}/a");
    let (status, deleting) = call(&server, "DELETE", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        deleting["kind"], "ServiceClaim",
        "a held object is answered, not a Status"
    );
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(deleting["metadata"]["generation"], 2);
    let more = json!({"metadata":{"finalizers":["meshwork.dev/cleanup","other"]}});
    let merge = "application/merge-patch+json";
    let (status, refused) = call_as(&server, "PATCH", &path, merge, Some(&more)).await;
    assert_eq!((status, refused["reason"].as_str()), (422, Some("Invalid")));
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("no new finalizers can be added")
    );
    let remove = json!([{"op":"test","path":"/metadata/finalizers/0","value":"meshwork.dev/cleanup"},
                        {"op":"remove","path":"/metadata/finalizers/0"}]);
    let (status, last) = call_as(
        &server,
        "PATCH",
        &path,
        "application/json-patch+json",
        Some(&remove),
    )
    .await;
    assert_eq!(status, 200);
    assert!(last["metadata"].get("finalizers").is_none());
    let (status, gone) = call(&server, "GET", &path, None).await;
    assert_eq!((status, gone["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(
        gone["message"],
        "serviceclaims.meshwork.dev \"a\" not found"
    );
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents() {
    let server = server().await;
    let (_, owner) = call(&server, "POST", CLAIMS, Some(&claim("a"))).await;
    let (_, other) = call(&server, "POST", CLAIMS, Some(&claim("b"))).await;
    let reference = |o: &Value| {
        json!({"apiVersion":"meshwork.dev/v1alpha1","kind":"ServiceClaim",
        "name": o["metadata"]["name"], "uid": o["metadata"]["uid"], "controller": true})
    };
    let only = json!({"metadata":{"name":"only","ownerReferences":[reference(&owner)]},"data":{}});
    let shared = json!({"metadata":{"name":"shared","ownerReferences":[reference(&owner), reference(&other)]}});
    call(&server, "POST", SECRETS, Some(&only)).await;
    call(&server, "POST", SECRETS, Some(&shared)).await;
    let (status, answer) = call(&server, "DELETE", &format!("{CLAIMS}/a"), None).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("Success")));
    assert_eq!(answer["details"]["uid"], owner["metadata"]["uid"]);
    let (status, _) = call(&server, "GET", &format!("{SECRETS}/only"), None).await;
    assert_eq!(status, 404, "the only owner went, so did the secret");
    let (status, kept) = call(&server, "GET", &format!("{SECRETS}/shared"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        kept["metadata"]["ownerReferences"],
        json!([reference(&other)])
    );
}

#[tokio::test]
async fn delete_preconditions_conflict() {
    let server = server().await;
    call(
        &server,
        "POST",
        SECRETS,
        Some(&json!({"metadata":{"name":"s"}})),
    )
    .await;
    let options = json!({"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid":"nope"}});
    let (status, body) = call(&server, "DELETE", &format!("{SECRETS}/s"), Some(&options)).await;
    assert_eq!((status, body["reason"].as_str()), (409, Some("Conflict")));
    let other = json!({"metadata":{"name":"s","uid":"another"}});
    let (status, body) = call(&server, "PUT", &format!("{SECRETS}/s"), Some(&other)).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (409, Some("Conflict")),
        "{body}"
    );
    assert_eq!(server.objects("", "secrets").len(), 1);
}

#[tokio::test]
async fn wrong_tokens_paths_and_methods_get_real_errors() {
    let server = server().await;
    let (status, body) = call_with_token(&server, CLAIMS, "wrong").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (status, body) = call(
        &server,
        "GET",
        "/apis/meshwork.dev/v1alpha1/namespaces/default/nothings",
        None,
    )
    .await;
    assert_eq!((status, body["reason"].as_str()), (404, Some("NotFound")));
    let (status, body) = call(&server, "POST", &format!("{CLAIMS}/a"), Some(&claim("a"))).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (status, body) = call(
        &server,
        "GET",
        &format!("{CLAIMS}?labelSelector=a%20in%20(b)"),
        None,
    )
    .await;
    assert_eq!((status, body["reason"].as_str()), (400, Some("BadRequest")));
}

#[tokio::test]
async fn label_selectors_filter_lists() {
    let server = server().await;
    call(
        &server,
        "POST",
        SECRETS,
        Some(&json!({"metadata":{"name":"a","labels":{"app":"x"}}})),
    )
    .await;
    call(
        &server,
        "POST",
        SECRETS,
        Some(&json!({"metadata":{"name":"b"}})),
    )
    .await;
    let (_, list) = call(
        &server,
        "GET",
        &format!("{SECRETS}?labelSelector=app%3Dx"),
        None,
    )
    .await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
}

#[tokio::test]
async fn the_request_log_names_verb_resource_and_namespace() {
    let server = server().await;
    call(&server, "POST", CLAIMS, Some(&claim("a"))).await;
    call_as(
        &server,
        "PATCH",
        &format!("{CLAIMS}/a/status"),
        "application/merge-patch+json",
        Some(&json!({})),
    )
    .await;
    call(
        &server,
        "GET",
        "/apis/meshwork.dev/v1alpha1/serviceclaims",
        None,
    )
    .await;
    let request = |verb, sub: Option<&str>, ns: Option<&str>, name: Option<&str>| FakeRequest {
        verb,
        group: "meshwork.dev".into(),
        resource: "serviceclaims".into(),
        subresource: sub.map(Into::into),
        namespace: ns.map(Into::into),
        name: name.map(Into::into),
    };
    assert_eq!(
        server.requests(),
        [
            request(FakeVerb::Create, None, Some("default"), None),
            request(FakeVerb::Patch, Some("status"), Some("default"), Some("a")),
            request(FakeVerb::List, None, None, None),
        ]
    );
}

#[tokio::test]
async fn secrets_fold_string_data_and_dry_runs_are_refused() {
    let server = server().await;
    let secret = json!({"metadata":{"name":"s"},"stringData":{"url":"postgres://db"}});
    let (status, created) = call(&server, "POST", SECRETS, Some(&secret)).await;
    assert_eq!(status, 201);
    assert_eq!(created["data"], json!({"url":"cG9zdGdyZXM6Ly9kYg=="}));
    assert_eq!(created["type"], "Opaque");
    assert!(created.get("stringData").is_none());
    let (status, _) = call(
        &server,
        "POST",
        &format!("{SECRETS}?dryRun=All"),
        Some(&secret),
    )
    .await;
    assert_eq!(
        status, 400,
        "a dry run the fake would really apply is refused"
    );
}
