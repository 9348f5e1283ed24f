//! The gate and malformed input: 401, 412, 405, 404, 400, all with OSB JSON error bodies.

use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

fn auth() -> String {
    let raw = format!("{USER}:{PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Sends a request and checks the status and (for errors) the OSB error code.
async fn expect(
    b: &TestBroker,
    req: (Method, &str),
    headers: &[(&str, &str)],
    want: (StatusCode, &str),
) -> HeaderMap {
    let (method, path) = req;
    let (status, hdrs, body) = b.raw(method.clone(), path, headers, None).await;
    assert_eq!(status, want.0, "{method} {path} {headers:?}: {body}");
    if !want.1.is_empty() {
        assert_eq!(body["error"], want.1, "{method} {path}: {body}");
        assert!(
            body["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    hdrs
}

#[tokio::test]
async fn gate_answers_401_412_405_404_with_json_bodies() {
    let b = TestBroker::start().await;
    let a = auth();
    let ok = [
        ("authorization", a.as_str()),
        ("x-broker-api-version", "2.17"),
    ];
    let catalog = (Method::GET, "/v2/catalog");
    expect(&b, catalog.clone(), &ok, (StatusCode::OK, "")).await;
    let v13 = [
        ("authorization", a.as_str()),
        ("x-broker-api-version", "2.13"),
    ];
    expect(&b, catalog.clone(), &v13, (StatusCode::OK, "")).await;
    let unauthorized = (StatusCode::UNAUTHORIZED, "Unauthorized");
    let hdrs = expect(&b, catalog.clone(), &ok[1..], unauthorized).await;
    assert!(hdrs.contains_key("www-authenticate"));
    let wrong = [("authorization", "Basic cGxhdGZvcm06d3Jvbmc="), ok[1]];
    expect(&b, catalog.clone(), &wrong, unauthorized).await;
    let precondition = (StatusCode::PRECONDITION_FAILED, "UnsupportedAPIVersion");
    expect(&b, catalog.clone(), &ok[..1], precondition).await;
    for version in ["2.12", "2.18", "3.0", "2.17.0"] {
        let headers = [ok[0], ("x-broker-api-version", version)];
        expect(&b, catalog.clone(), &headers, precondition).await;
    }
    let not_allowed = (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed");
    for req in [
        (Method::POST, "/v2/catalog"),
        (Method::POST, "/v2/service_instances/x"),
    ] {
        assert!(
            expect(&b, req, &ok, not_allowed)
                .await
                .contains_key("allow")
        );
    }
    expect(
        &b,
        (Method::GET, "/v2/nope"),
        &ok,
        (StatusCode::NOT_FOUND, "NotFound"),
    )
    .await;
    let bad = (StatusCode::BAD_REQUEST, "BadRequest");
    expect(&b, (Method::GET, "/v2/catalog?x=1"), &ok, bad).await;
}

#[tokio::test]
async fn identities_are_echoed_decoded_and_recorded() {
    let b = TestBroker::start().await;
    let a = auth();
    for version in ["2.17", "1.0"] {
        let headers = [
            ("authorization", a.as_str()),
            ("x-broker-api-version", version),
            ("x-broker-api-request-identity", "req-42"),
        ];
        let (_, hdrs, _) = b.raw(Method::GET, "/v2/catalog", &headers, None).await;
        assert_eq!(
            hdrs["x-broker-api-request-identity"], "req-42",
            "echoed on success and error"
        );
    }
    let path = format!("/v2/service_instances/{}", unique("who"));
    let body = provision_body("redis", "default", Some("dev-who")).to_string();
    // {"username":"alice"}
    let who = "kubernetes eyJ1c2VybmFtZSI6ImFsaWNlIn0=";
    for (identity, status) in [
        ("kubernetes !!", StatusCode::BAD_REQUEST),
        (who, StatusCode::CREATED),
    ] {
        let headers = [
            ("authorization", a.as_str()),
            ("x-broker-api-version", "2.17"),
            ("x-broker-api-originating-identity", identity),
        ];
        let (got, _, answer) = b.raw(Method::PUT, &path, &headers, Some(&body)).await;
        assert_eq!(got, status, "{answer}");
    }
    let (_, got) = b.osb(Method::GET, &path, None).await;
    let recorded = &got["metadata"]["attributes"]["requestedBy"];
    assert_eq!(
        recorded,
        &json!({"platform": "kubernetes", "identity": {"username": "alice"}})
    );
    let q = delete_query("redis", "default");
    assert_eq!(
        b.osb(Method::DELETE, &format!("{path}?{q}"), None).await.0,
        StatusCode::OK
    );
}

/// Bodies that must be refused with 400, each with the field its description must name.
fn malformed_bodies() -> Vec<(Value, &'static str)> {
    let good = provision_body("postgresql", "default", Some("dev-x"));
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let mut cases = Vec::new();
    for field in ["service_id", "plan_id", "organization_guid", "space_guid"] {
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove(field);
        cases.push((missing, field));
    }
    cases.push((with("context", json!("dev")), "context"));
    cases.push((with("parameters", Value::Null), "parameters"));
    cases.push((with("service_id", json!("not-in-catalog")), "service_id"));
    cases.push((
        with("plan_id", json!(plan_id("mysql", "default"))),
        "plan_id",
    ));
    cases.push((with("organization_guid", json!("")), "organization_guid"));
    let no_version = json!({"description": "x"});
    cases.push((
        with("maintenance_info", no_version),
        "maintenance_info.version",
    ));
    cases
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let b = TestBroker::start().await;
    let path = format!("/v2/service_instances/{}", unique("bad"));
    let a = auth();
    let headers = [
        ("authorization", a.as_str()),
        ("x-broker-api-version", "2.17"),
    ];
    for raw in ["", "{", "[1]", "\"x\""] {
        let (status, _, body) = b.raw(Method::PUT, &path, &headers, Some(raw)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw:?}: {body}");
    }
    for (body, field) in malformed_bodies() {
        let (status, answer) = b.osb(Method::PUT, &path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
        let description = answer["description"].as_str().unwrap();
        assert!(description.contains(field), "{field}: {answer}");
    }
    let good = provision_body("postgresql", "default", Some("dev-x"));
    let queries = [
        "accepts_incomplete=yes",
        "bogus=1",
        "accepts_incomplete=true&accepts_incomplete=true",
    ];
    for query in queries {
        let (status, answer) = b
            .osb(Method::PUT, &format!("{path}?{query}"), Some(good.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
    }
    let (status, _) = b
        .osb(Method::DELETE, &format!("{path}?service_id=x"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "DELETE without plan_id");
    assert_eq!(
        b.osb(Method::GET, &path, None).await.0,
        StatusCode::NOT_FOUND,
        "nothing was created"
    );
}
