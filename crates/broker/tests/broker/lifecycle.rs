//! Status codes through whole lifecycles: synchronous (dev), asynchronous (prod), policy
//! refusals, deletion protection, bindings blocking deprovision, quotas.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

fn code(answer: &(StatusCode, Value)) -> (StatusCode, Option<&str>) {
    (answer.0, answer.1["error"].as_str())
}

async fn provision_twice_then_conflict(b: &TestBroker, path: &str) {
    let mut body = provision_body("postgresql", "default", Some("dev-team"));
    body["unknown_field"] = json!({"ignored": true});
    body["maintenance_info"] = json!({});
    let (status, answer) = b.osb(Method::PUT, path, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let labels = &answer["metadata"]["labels"];
    assert_eq!(
        (
            &labels["meshwork.dev/environment"],
            &labels["meshwork.dev/size"]
        ),
        (&json!("dev"), &json!("small"))
    );
    assert_eq!(
        b.osb(Method::PUT, path, Some(body.clone())).await.0,
        StatusCode::OK,
        "identical re-PUT"
    );
    body["plan_id"] = json!(plan_id("postgresql", "medium"));
    assert_eq!(
        b.osb(Method::PUT, path, Some(body)).await.0,
        StatusCode::CONFLICT
    );
    let (status, got) = b.osb(Method::GET, path, None).await;
    assert_eq!(
        (status, &got["plan_id"]),
        (StatusCode::OK, &json!(plan_id("postgresql", "default")))
    );
    let (_, op) = b
        .osb(Method::GET, &format!("{path}/last_operation"), None)
        .await;
    assert_eq!(op["state"], "succeeded");
    assert!(
        op["description"]
            .as_str()
            .unwrap()
            .contains("rule default/dev-postgresql"),
        "{op}"
    );
}

async fn stale_maintenance_info_conflicts(b: &TestBroker) {
    let mut stale = provision_body("postgresql", "default", Some("dev-team"));
    stale["maintenance_info"] = json!({"version": "0.9.0"});
    let other = format!("/v2/service_instances/{}", unique("mi"));
    let answer = b.osb(Method::PUT, &other, Some(stale)).await;
    let want = (UNPROCESSABLE, Some("MaintenanceInfoConflict"));
    assert_eq!(code(&answer), want);
}

async fn update_within_policy(b: &TestBroker, path: &str) {
    let sid = service_id("postgresql");
    let patch = json!({"service_id": sid, "plan_id": plan_id("postgresql", "medium")});
    let (status, answer) = b.osb(Method::PATCH, path, Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["metadata"]["labels"]["meshwork.dev/size"], "medium");
    let patch = json!({"service_id": sid, "plan_id": plan_id("postgresql", "large")});
    let answer = b.osb(Method::PATCH, path, Some(patch)).await;
    assert_eq!(code(&answer), (UNPROCESSABLE, Some("PolicyRefused")));
    assert!(
        answer.1["description"]
            .as_str()
            .unwrap()
            .contains("ServicePolicy rule default/dev-postgresql")
    );
    let moved = json!({"service_id": sid, "context": {"namespace": "prod-x"}});
    let answer = b.osb(Method::PATCH, path, Some(moved)).await;
    assert_eq!(
        code(&answer),
        (UNPROCESSABLE, Some("PolicyRefused")),
        "env change"
    );
    let missing = format!("/v2/service_instances/{}", unique("none"));
    assert_eq!(
        b.osb(Method::PATCH, &missing, Some(json!({"service_id": sid})))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

async fn bind_twice_then_conflict(b: &TestBroker, bpath: &str) {
    let bind = bind_body("postgresql", "medium");
    assert_eq!(
        b.osb(Method::PUT, bpath, Some(bind.clone())).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        b.osb(Method::PUT, bpath, Some(bind.clone())).await.0,
        StatusCode::OK
    );
    let mut changed = bind.clone();
    changed["bind_resource"] = json!({"app_guid": "another-app"});
    assert_eq!(
        b.osb(Method::PUT, bpath, Some(changed)).await.0,
        StatusCode::CONFLICT
    );
    let (status, got) = b.osb(Method::GET, bpath, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        got["credentials"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("postgresql://")
    );
    let missing = bpath.replace("/service_instances/", "/service_instances/x");
    assert_eq!(
        b.osb(Method::PUT, &missing, Some(bind)).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn synchronous_lifecycle_status_codes() {
    let b = TestBroker::start().await;
    let path = format!("/v2/service_instances/{}", unique("sync"));
    provision_twice_then_conflict(&b, &path).await;
    stale_maintenance_info_conflicts(&b).await;
    update_within_policy(&b, &path).await;
    let bpath = format!("{path}/service_bindings/{}", unique("b"));
    bind_twice_then_conflict(&b, &bpath).await;
    // dev cascades: deprovisioning removes the live binding too.
    let q = delete_query("postgresql", "medium");
    assert_eq!(
        b.osb(Method::DELETE, &format!("{path}?{q}"), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        b.osb(Method::DELETE, &format!("{path}?{q}"), None).await.0,
        StatusCode::GONE
    );
    assert_eq!(
        b.osb(Method::DELETE, &format!("{bpath}?{q}"), None).await.0,
        StatusCode::GONE
    );
    assert_eq!(
        b.osb(Method::GET, &format!("{path}/last_operation"), None)
            .await
            .0,
        StatusCode::GONE
    );
    assert_eq!(
        b.osb(Method::GET, &format!("{bpath}/last_operation"), None)
            .await
            .0,
        StatusCode::GONE
    );
    assert_eq!(
        b.osb(Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    let never = format!("/v2/service_instances/{}/last_operation", unique("never"));
    assert_eq!(
        b.osb(Method::GET, &never, None).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn provision_async(b: &TestBroker, path: &str) {
    let body = provision_body("postgresql", "default", Some("prod-team"));
    let answer = b.osb(Method::PUT, path, Some(body.clone())).await;
    assert_eq!(code(&answer), (UNPROCESSABLE, Some("AsyncRequired")));
    let (status, answer) = b
        .osb(
            Method::PUT,
            &format!("{path}?accepts_incomplete=true"),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(answer["operation"].is_string());
    let (_, op) = b.settle(&format!("{path}/last_operation")).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (status, got) = b.osb(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got["metadata"]["labels"]["meshwork.dev/provider"],
        "postgres-prod"
    );
    assert_eq!(got["metadata"]["attributes"]["team"], "prod-team");
}

async fn refusals_name_their_rule(b: &TestBroker) {
    let refusals = [
        (
            provision_body("postgresql", "small", Some("prod-team")),
            "ServicePolicy rule default/prod-postgresql",
        ),
        (
            provision_body("postgresql", "default", Some("staging")),
            "Environment selection",
        ),
    ];
    for (body, rule) in refusals {
        let p = format!(
            "/v2/service_instances/{}?accepts_incomplete=true",
            unique("refused")
        );
        let answer = b.osb(Method::PUT, &p, Some(body)).await;
        assert_eq!(
            code(&answer),
            (UNPROCESSABLE, Some("PolicyRefused")),
            "{}",
            answer.1
        );
        assert!(
            answer.1["description"].as_str().unwrap().contains(rule),
            "{}",
            answer.1
        );
    }
}

/// A prod binding blocks deletion: first by protection, then (lifted) by the binding.
async fn bindings_and_protection_block_deletion(b: &mut TestBroker, path: &str) -> String {
    let bpath = format!("{path}/service_bindings/{}", unique("b"));
    let bind = Some(bind_body("postgresql", "default"));
    let put = format!("{bpath}?accepts_incomplete=true");
    assert_eq!(
        b.status(Method::PUT, &put, bind).await,
        StatusCode::ACCEPTED
    );
    let (_, op) = b.settle(&format!("{bpath}/last_operation")).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, got) = b.osb(Method::GET, &bpath, None).await;
    assert!(
        got["metadata"]["expires_at"].is_string(),
        "prod credentials expire: {got}"
    );
    let q = format!(
        "{}&accepts_incomplete=true",
        delete_query("postgresql", "default")
    );
    let answer = b.osb(Method::DELETE, &format!("{path}?{q}"), None).await;
    assert_eq!(code(&answer), (UNPROCESSABLE, Some("DeletionProtected")));
    // An administrator lifts the protection; prod does not cascade, so bindings block.
    b.restart(taxonomy(false), broker::ProviderConfig::local())
        .await;
    let answer = b.osb(Method::DELETE, &format!("{path}?{q}"), None).await;
    assert_eq!(
        code(&answer),
        (UNPROCESSABLE, Some("BindingsExist")),
        "{}",
        answer.1
    );
    let sync = format!("{bpath}?{}", delete_query("postgresql", "default"));
    let answer = b.osb(Method::DELETE, &sync, None).await;
    assert_eq!(code(&answer), (UNPROCESSABLE, Some("AsyncRequired")));
    bpath
}

#[tokio::test]
async fn asynchronous_semantics_and_policy_refusals() {
    let mut b = TestBroker::start_with(taxonomy(true), None).await;
    let id = unique("async");
    let path = format!("/v2/service_instances/{id}");
    provision_async(&b, &path).await;
    refusals_name_their_rule(&b).await;
    let bpath = bindings_and_protection_block_deletion(&mut b, &path).await;
    b.delete_async(&bpath, "postgresql").await;
    b.delete_async(&path, "postgresql").await;
    let db = broker::names::instance_resource(&id);
    let sql = "SELECT count(*) FROM pg_database WHERE datname = $1";
    assert_eq!(pg_count(sql, &db).await, 0);
}

#[tokio::test]
async fn quota_counts_instances_per_team() {
    let b = TestBroker::start_with(taxonomy_with_quota(1), None).await;
    let body = provision_body("redis", "default", Some(&unique("prod")));
    let first = format!("/v2/service_instances/{}", unique("q1"));
    let accepts = |p: &str| format!("{p}?accepts_incomplete=true");
    let status = b
        .status(Method::PUT, &accepts(&first), Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let second = format!("/v2/service_instances/{}", unique("q2"));
    let answer = b.osb(Method::PUT, &accepts(&second), Some(body)).await;
    assert_eq!(code(&answer), (UNPROCESSABLE, Some("PolicyRefused")));
    let text = answer.1["description"].as_str().unwrap();
    assert!(
        text.contains("default/prod-redis") && text.contains("quota"),
        "{text}"
    );
    b.settle(&format!("{first}/last_operation")).await;
    b.delete_async(&first, "redis").await;
}
