//! The OSB status-code table: headers, malformed input, sync and async semantics.

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

fn auth() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

#[tokio::test]
async fn gate_answers_401_412_405_404_with_json_bodies() {
    let b = TestBroker::start().await;
    let auth = auth();
    let v = ("x-broker-api-version", "2.17");
    let cases: Vec<(Method, &str, Vec<(&str, &str)>, StatusCode, &str)> = vec![
        (
            Method::GET,
            "/v2/catalog",
            vec![("authorization", &auth), v],
            StatusCode::OK,
            "",
        ),
        (
            Method::GET,
            "/v2/catalog",
            vec![("authorization", &auth), ("x-broker-api-version", "2.13")],
            StatusCode::OK,
            "",
        ),
        (
            Method::GET,
            "/v2/catalog",
            vec![v],
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
        ),
        (
            Method::GET,
            "/v2/catalog",
            vec![("authorization", "Basic cGxhdGZvcm06d3Jvbmc="), v],
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
        ),
        (
            Method::GET,
            "/v2/catalog",
            vec![("authorization", &auth)],
            StatusCode::PRECONDITION_FAILED,
            "UnsupportedAPIVersion",
        ),
        (
            Method::GET,
            "/v2/catalog",
            vec![("authorization", &auth), ("x-broker-api-version", "2.12")],
            StatusCode::PRECONDITION_FAILED,
            "UnsupportedAPIVersion",
        ),
        (
            Method::GET,
            "/v2/catalog",
            vec![("authorization", &auth), ("x-broker-api-version", "3.0")],
            StatusCode::PRECONDITION_FAILED,
            "UnsupportedAPIVersion",
        ),
        (
            Method::POST,
            "/v2/catalog",
            vec![("authorization", &auth), v],
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ),
        (
            Method::POST,
            "/v2/service_instances/x",
            vec![("authorization", &auth), v],
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
        ),
        (
            Method::GET,
            "/v2/nope",
            vec![("authorization", &auth), v],
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            Method::GET,
            "/v2/catalog?x=1",
            vec![("authorization", &auth), v],
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
        (
            Method::GET,
            "/v2/catalog",
            vec![
                ("authorization", &auth),
                v,
                ("x-broker-api-originating-identity", "kubernetes !!"),
            ],
            StatusCode::BAD_REQUEST,
            "BadRequest",
        ),
    ];
    for (method, path, headers, status, code) in cases {
        let (got, hdrs, body) = b.raw(method.clone(), path, &headers, None).await;
        assert_eq!(got, status, "{method} {path} {headers:?}: {body}");
        if !code.is_empty() {
            assert_eq!(body["error"], code, "{method} {path}: {body}");
            assert!(
                body["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{body}"
            );
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(hdrs.contains_key("allow"), "{hdrs:?}");
        }
        if status == StatusCode::UNAUTHORIZED {
            assert!(hdrs.contains_key("www-authenticate"), "{hdrs:?}");
        }
    }
    // The request identity is echoed on success and on error.
    for version in ["2.17", "1.0"] {
        let headers = [
            ("authorization", auth.as_str()),
            ("x-broker-api-version", version),
            ("x-broker-api-request-identity", "req-42"),
        ];
        let (_, hdrs, _) = b.raw(Method::GET, "/v2/catalog", &headers, None).await;
        assert_eq!(hdrs["x-broker-api-request-identity"], "req-42");
    }
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let b = TestBroker::start().await;
    let path = format!("/v2/service_instances/{}", unique("bad"));
    let good = provision_body("postgresql", "default", Some("dev-x"));
    let auth = auth();
    let headers = [
        ("authorization", auth.as_str()),
        ("x-broker-api-version", "2.17"),
    ];
    for raw in ["", "{", "[1]", "\"x\""] {
        let (status, _, body) = b.raw(Method::PUT, &path, &headers, Some(raw)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw:?}: {body}");
    }
    let mut cases = Vec::new();
    for field in ["service_id", "plan_id", "organization_guid", "space_guid"] {
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove(field);
        cases.push((missing, field));
    }
    let mut wrong_type = good.clone();
    wrong_type["context"] = json!("dev");
    cases.push((wrong_type, "context"));
    let mut null = good.clone();
    null["parameters"] = serde_json::Value::Null;
    cases.push((null, "parameters"));
    let mut unknown = good.clone();
    unknown["service_id"] = json!("not-in-catalog");
    cases.push((unknown, "service_id"));
    let mut no_version = good.clone();
    no_version["maintenance_info"] = json!({"description": "x"});
    cases.push((no_version, "maintenance_info.version"));
    for (body, field) in cases {
        let (status, answer) = b.osb(Method::PUT, &path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        assert!(
            answer["description"].as_str().unwrap().contains(field),
            "{field}: {answer}"
        );
    }
    for query in [
        "accepts_incomplete=yes",
        "bogus=1",
        "accepts_incomplete=true&accepts_incomplete=true",
    ] {
        let (status, answer) = b
            .osb(Method::PUT, &format!("{path}?{query}"), Some(good.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
    }
    let (status, _) = b
        .osb(Method::DELETE, &format!("{path}?service_id=x"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "DELETE without plan_id");
}

#[tokio::test]
async fn synchronous_lifecycle_status_codes() {
    let b = TestBroker::start().await;
    let id = unique("sync");
    let path = format!("/v2/service_instances/{id}");
    let mut body = provision_body("postgresql", "default", Some("dev-team"));
    body["unknown_field"] = json!({"ignored": true});
    body["maintenance_info"] = json!({});
    let (status, answer) = b.osb(Method::PUT, &path, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let labels = &answer["metadata"]["labels"];
    assert_eq!(labels["meshwork.dev/environment"], "dev");
    assert_eq!(labels["meshwork.dev/size"], "small");
    assert_eq!(
        b.osb(Method::PUT, &path, Some(body.clone())).await.0,
        StatusCode::OK,
        "identical re-PUT"
    );
    let mut other = body.clone();
    other["plan_id"] = json!(plan_id("postgresql", "medium"));
    assert_eq!(
        b.osb(Method::PUT, &path, Some(other)).await.0,
        StatusCode::CONFLICT
    );
    let mut stale = provision_body("postgresql", "default", Some("dev-team"));
    stale["maintenance_info"] = json!({"version": "0.9.0"});
    let (status, answer) = b
        .osb(
            Method::PUT,
            &format!("/v2/service_instances/{}", unique("mi")),
            Some(stale),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("MaintenanceInfoConflict")
        )
    );

    let (status, got) = b.osb(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["plan_id"], plan_id("postgresql", "default"));
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

    let sid = service_id("postgresql");
    let patch = json!({"service_id": sid, "plan_id": plan_id("postgresql", "medium")});
    let (status, answer) = b.osb(Method::PATCH, &path, Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["metadata"]["labels"]["meshwork.dev/size"], "medium");
    let patch = json!({"service_id": sid, "plan_id": plan_id("postgresql", "large")});
    let (status, answer) = b.osb(Method::PATCH, &path, Some(patch)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["description"]
            .as_str()
            .unwrap()
            .contains("ServicePolicy rule default/dev-postgresql"),
        "{answer}"
    );
    let missing = format!("/v2/service_instances/{}", unique("none"));
    assert_eq!(
        b.osb(Method::PATCH, &missing, Some(json!({"service_id": sid})))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let bpath = format!("{path}/service_bindings/{}", unique("b"));
    let bind = bind_body("postgresql", "medium");
    assert_eq!(
        b.osb(Method::PUT, &bpath, Some(bind.clone())).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        b.osb(Method::PUT, &bpath, Some(bind.clone())).await.0,
        StatusCode::OK
    );
    let mut changed = bind.clone();
    changed["parameters"] = json!({"x": 1});
    assert_eq!(
        b.osb(Method::PUT, &bpath, Some(changed)).await.0,
        StatusCode::CONFLICT
    );
    let (status, got) = b.osb(Method::GET, &bpath, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        got["credentials"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("postgresql://")
    );

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
        b.osb(Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.osb(Method::GET, &format!("{missing}/last_operation"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn asynchronous_semantics_and_policy_refusals() {
    let b = TestBroker::start_with(taxonomy(true), None).await;
    let id = unique("async");
    let path = format!("/v2/service_instances/{id}");
    let body = provision_body("postgresql", "default", Some("prod-team"));
    let (status, answer) = b.osb(Method::PUT, &path, Some(body.clone())).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("AsyncRequired"))
    );
    let (status, answer) = b
        .osb(
            Method::PUT,
            &format!("{path}?accepts_incomplete=true"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(answer["operation"].is_string());
    let (_, op) = b.settle(&format!("{path}/last_operation")).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (status, got) = b.osb(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got["metadata"]["labels"]["meshwork.dev/provider"],
        "postgres-prod"
    );
    assert_eq!(got["metadata"]["attributes"]["team"], "prod-team");

    // Explicit sizes outside the rule, unknown environments, missing teams: refused by name.
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
        let (status, answer) = b.osb(Method::PUT, &p, Some(body)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("PolicyRefused")),
            "{answer}"
        );
        assert!(
            answer["description"].as_str().unwrap().contains(rule),
            "{answer}"
        );
    }

    // Binding asynchronously, then deprovision: protected, then (protection lifted) bindings exist.
    let q = delete_query("postgresql", "default");
    let bpath = format!("{path}/service_bindings/{}", unique("b"));
    let (status, _) = b
        .osb(
            Method::PUT,
            &format!("{bpath}?accepts_incomplete=true"),
            Some(bind_body("postgresql", "default")),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, op) = b.settle(&format!("{bpath}/last_operation")).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, got) = b.osb(Method::GET, &bpath, None).await;
    assert!(
        got["metadata"]["expires_at"].is_string(),
        "prod credentials expire: {got}"
    );
    let (status, answer) = b
        .osb(
            Method::DELETE,
            &format!("{path}?{q}&accepts_incomplete=true"),
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("DeletionProtected"))
    );
    let mut b = b;
    b.restart(taxonomy(false), broker::ProviderConfig::local())
        .await;
    let (status, answer) = b
        .osb(
            Method::DELETE,
            &format!("{path}?{q}&accepts_incomplete=true"),
            None,
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("BindingsExist")),
        "{answer}"
    );
    let (status, _) = b.osb(Method::DELETE, &format!("{bpath}?{q}"), None).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "prod unbinds are async only"
    );
    assert_eq!(
        b.osb(
            Method::DELETE,
            &format!("{bpath}?{q}&accepts_incomplete=true"),
            None
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        b.settle(&format!("{bpath}/last_operation")).await.0,
        StatusCode::GONE
    );
    assert_eq!(
        b.osb(
            Method::DELETE,
            &format!("{path}?{q}&accepts_incomplete=true"),
            None
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        b.settle(&format!("{path}/last_operation")).await.0,
        StatusCode::GONE
    );
    let db = broker::names::instance_resource(&id);
    assert_eq!(
        pg_count("SELECT count(*) FROM pg_database WHERE datname = $1", &db).await,
        0
    );
}

#[tokio::test]
async fn quota_counts_instances_per_team() {
    let classes = broker::taxonomy::demo::classes();
    let envs = broker::taxonomy::demo::environments();
    let mut policies = broker::taxonomy::demo::policies();
    for rule in &mut policies[0].spec.rules {
        rule.deletion_protection = false;
        if let Some(q) = &mut rule.quota {
            q.instances_per_team = 1;
        }
    }
    let b = TestBroker::start_with(
        broker::Taxonomy::new(classes, envs, policies).unwrap(),
        None,
    )
    .await;
    let team = unique("prod");
    let first = format!(
        "/v2/service_instances/{}?accepts_incomplete=true",
        unique("q1")
    );
    let body = provision_body("redis", "default", Some(&team));
    assert_eq!(
        b.osb(Method::PUT, &first, Some(body.clone())).await.0,
        StatusCode::ACCEPTED
    );
    let second = format!(
        "/v2/service_instances/{}?accepts_incomplete=true",
        unique("q2")
    );
    let (status, answer) = b.osb(Method::PUT, &second, Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let text = answer["description"].as_str().unwrap();
    assert!(
        text.contains("default/prod-redis") && text.contains("quota"),
        "{text}"
    );
    let path = first.split('?').next().unwrap();
    b.settle(&format!("{path}/last_operation")).await;
    let q = delete_query("redis", "default");
    assert_eq!(
        b.osb(
            Method::DELETE,
            &format!("{path}?{q}&accepts_incomplete=true"),
            None
        )
        .await
        .0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        b.settle(&format!("{path}/last_operation")).await.0,
        StatusCode::GONE
    );
}
