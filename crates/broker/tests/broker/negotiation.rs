//! Issue 9: answers in the shape of the platform's `X-Broker-API-Version`, plan `schemas` and
//! the parameters check, the order in which a body's problems are reported, and bodies with
//! a non-JSON `Content-Type`.

use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

fn auth() -> String {
    let raw = format!("{USER}:{PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A request as a platform speaking `version` sends it.
async fn at(
    b: &TestBroker,
    version: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, http::HeaderMap, Value) {
    let a = auth();
    let headers = [
        ("authorization", a.as_str()),
        ("x-broker-api-version", version),
        ("content-type", "application/json"),
    ];
    let body = body.map(|b| b.to_string());
    b.raw(method, path, &headers, body.as_deref()).await
}

fn service<'a>(catalog: &'a Value, class: &str) -> &'a Value {
    catalog["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == class)
        .unwrap()
}

#[tokio::test]
async fn a_2_13_platform_gets_a_2_13_catalog() {
    let b = TestBroker::start().await;
    let (_, _, new) = at(&b, "2.17", Method::GET, "/v2/catalog", None).await;
    let (_, _, old) = at(&b, "2.13", Method::GET, "/v2/catalog", None).await;
    let (new, old) = (service(&new, "postgresql"), service(&old, "postgresql"));
    for field in [
        "instances_retrievable",
        "bindings_retrievable",
        "allow_context_updates",
        "binding_rotatable",
    ] {
        assert_eq!(new[field], true, "2.17 has {field}");
        assert!(old.get(field).is_none(), "2.13 got {field}: {old}");
    }
    let (new_plan, old_plan) = (&new["plans"][1], &old["plans"][1]);
    assert!(new_plan["maintenance_info"].is_object());
    assert!(old_plan.get("maintenance_info").is_none(), "{old_plan}");
    assert!(old_plan.get("plan_updateable").is_none(), "{old_plan}");
    // 2.13 introduced schemas: both have them.
    for plan in [new_plan, old_plan] {
        let create = &plan["schemas"]["service_instance"]["create"]["parameters"];
        assert_eq!(create["type"], "object", "{plan}");
        assert_eq!(create["additionalProperties"], false, "{plan}");
        assert!(plan["schemas"]["service_binding"]["create"]["parameters"].is_object());
    }
    let (_, _, v16) = at(&b, "2.16", Method::GET, "/v2/catalog", None).await;
    let v16 = service(&v16, "postgresql");
    assert!(v16.get("binding_rotatable").is_none(), "2.17 field at 2.16");
    assert_eq!(v16["allow_context_updates"], true);
}

#[tokio::test]
async fn instances_and_bindings_answer_in_the_version_sent() {
    let b = TestBroker::start().await;
    let path = format!("/v2/service_instances/{}", unique("ver"));
    let body = provision_body("redis", "default", Some("dev-ver"));
    let (status, _, created) = at(&b, "2.15", Method::PUT, &path, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        created.get("metadata").is_none(),
        "2.16 field at 2.15: {created}"
    );
    let (_, _, again) = at(&b, "2.16", Method::PUT, &path, Some(body)).await;
    assert!(again["metadata"]["labels"].is_object(), "{again}");
    let (_, _, fetched) = at(&b, "2.14", Method::GET, &path, None).await;
    assert!(fetched.get("metadata").is_none(), "{fetched}");
    assert!(fetched["service_id"].is_string(), "{fetched}");

    let bpath = format!("{path}/service_bindings/{}", unique("b"));
    let bind = bind_body("redis", "default");
    let (status, _, bound) = at(&b, "2.14", Method::PUT, &bpath, Some(bind.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{bound}");
    assert!(bound["credentials"]["uri"].is_string(), "{bound}");
    assert!(
        bound.get("endpoints").is_none(),
        "2.15 field at 2.14: {bound}"
    );
    assert!(
        bound.get("metadata").is_none(),
        "2.16 field at 2.14: {bound}"
    );
    let (_, _, latest) = at(&b, "2.17", Method::PUT, &bpath, Some(bind)).await;
    assert!(latest["endpoints"].is_array(), "{latest}");

    let q = delete_query("redis", "default");
    let (status, _, _) = at(&b, "2.13", Method::DELETE, &format!("{bpath}?{q}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = at(&b, "2.13", Method::DELETE, &format!("{path}?{q}"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_version_below_the_oldest_supported_is_412_saying_so() {
    let b = TestBroker::start().await;
    let (status, _, body) = at(&b, "2.12", Method::GET, "/v2/catalog", None).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert_eq!(body["error"], "UnsupportedAPIVersion");
    let text = body["description"].as_str().unwrap();
    assert!(
        text.contains("older") && text.contains("2.13 to 2.17"),
        "{text}"
    );
}

#[tokio::test]
async fn parameters_outside_the_plan_schema_are_400_naming_the_field() {
    let b = TestBroker::start().await;
    let path = format!("/v2/service_instances/{}", unique("param"));
    let mut body = provision_body("redis", "default", Some("dev-param"));
    body["parameters"] = json!({"maxmemory": "1gb"});
    let (status, answer) = b.osb(Method::PUT, &path, Some(body.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let text = answer["description"].as_str().unwrap();
    assert!(text.contains("parameters.maxmemory"), "{text}");
    assert!(text.contains("service_instance.create"), "{text}");
    body["parameters"] = json!({});
    assert_eq!(
        b.status(Method::PUT, &path, Some(body)).await,
        StatusCode::CREATED
    );
    let bpath = format!("{path}/service_bindings/{}", unique("b"));
    let mut bind = bind_body("redis", "default");
    bind["parameters"] = json!({"ttl": 5});
    let (status, answer) = b.osb(Method::PUT, &bpath, Some(bind)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["description"]
            .as_str()
            .unwrap()
            .contains("parameters.ttl")
    );
    let patch = json!({"service_id": service_id("redis"), "parameters": {"x": true}});
    let (status, answer) = b.osb(Method::PATCH, &path, Some(patch)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["description"]
            .as_str()
            .unwrap()
            .contains("service_instance.update")
    );
    let q = delete_query("redis", "default");
    assert_eq!(
        b.status(Method::DELETE, &format!("{path}?{q}"), None).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unknown_service_or_plan_is_the_problem_reported() {
    let b = TestBroker::start().await;
    let path = format!("/v2/service_instances/{}", unique("order"));
    // Only ids, and wrong ones: the catalog is named, not the missing organization_guid.
    let cases = [
        (
            json!({"service_id": "no-such-service", "plan_id": "p"}),
            "service_id \"no-such-service\" is not in the catalog",
        ),
        (
            json!({"service_id": service_id("redis"), "plan_id": "no-such-plan"}),
            "plan_id \"no-such-plan\" is not in the catalog",
        ),
        (
            json!({"service_id": service_id("redis"), "plan_id": plan_id("mysql", "small")}),
            "is a plan of mysql, not of redis",
        ),
        (
            json!({"service_id": "no-such-service", "plan_id": "p", "space_guid": 7}),
            "service_id \"no-such-service\"",
        ),
    ];
    for (body, want) in cases {
        let (status, answer) = b.osb(Method::PUT, &path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let text = answer["description"].as_str().unwrap();
        assert!(text.contains(want), "{body}: {text}");
        assert!(!text.contains("organization_guid"), "{body}: {text}");
    }
    let bpath = format!("{path}/service_bindings/b");
    let bind = json!({"service_id": "no-such-service"});
    let (status, answer) = b.osb(Method::PUT, &bpath, Some(bind)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["description"]
            .as_str()
            .unwrap()
            .contains("no-such-service"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_body_with_a_non_json_content_type_is_400() {
    let b = TestBroker::start().await;
    let path = format!("/v2/service_instances/{}", unique("ctype"));
    let body = provision_body("redis", "default", Some("dev-ctype")).to_string();
    let a = auth();
    for ctype in ["text/plain", "application/x-www-form-urlencoded"] {
        let headers = [
            ("authorization", a.as_str()),
            ("x-broker-api-version", "2.17"),
            ("content-type", ctype),
        ];
        let (status, _, answer) = b.raw(Method::PUT, &path, &headers, Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ctype}: {answer}");
        assert_eq!(answer["error"], "BadRequest");
        let text = answer["description"].as_str().unwrap();
        assert!(
            text.contains(ctype) && text.contains("application/json"),
            "{text}"
        );
    }
    assert_eq!(
        b.status(Method::GET, &path, None).await,
        StatusCode::NOT_FOUND
    );
    // Without a Content-Type the body is still read (the spec allows it).
    let headers = [
        ("authorization", a.as_str()),
        ("x-broker-api-version", "2.17"),
    ];
    let (status, _, answer) = b.raw(Method::PUT, &path, &headers, Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let q = delete_query("redis", "default");
    assert_eq!(
        b.status(Method::DELETE, &format!("{path}?{q}"), None).await,
        StatusCode::OK
    );
}
