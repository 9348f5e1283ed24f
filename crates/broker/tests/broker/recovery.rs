//! Crash recovery: a broker stopped mid-provision resumes on restart, or, when it cannot,
//! fails cleanly, and DELETE removes whatever was half-created.

use std::collections::BTreeMap;

use broker::provider::{ProviderSpec, STEP_INSTANCE_CREATED};
use broker::{ProviderConfig, Secret, StepGate};
use http::{Method, StatusCode};

use crate::harness::*;

/// While an operation is held mid-provision: a re-PUT is 202 with the same operation, GET is
/// 404, DELETE is ConcurrencyError, and last_operation shows the step reached.
async fn check_held(b: &TestBroker, class: &str, id: &str, operation: &serde_json::Value) {
    let path = format!("/v2/service_instances/{id}");
    let body = provision_body(class, "default", Some("dev-crash"));
    let (status, again) = b
        .osb(
            Method::PUT,
            &format!("{path}?accepts_incomplete=true"),
            Some(body),
        )
        .await;
    assert_eq!(
        (status, &again["operation"]),
        (StatusCode::ACCEPTED, operation)
    );
    assert_eq!(
        b.status(Method::GET, &path, None).await,
        StatusCode::NOT_FOUND
    );
    let q = delete_query(class, "default");
    let (status, body) = b.osb(Method::DELETE, &format!("{path}?{q}"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("ConcurrencyError"))
    );
    let (_, op) = b
        .osb(Method::GET, &format!("{path}/last_operation"), None)
        .await;
    assert!(
        op["description"]
            .as_str()
            .unwrap()
            .contains(STEP_INSTANCE_CREATED),
        "{op}"
    );
}

/// Starts an async provision, holds it after the instance's main resource exists, and
/// aborts the broker there.
async fn crash_mid_provision(class: &str) -> (TestBroker, String) {
    let gate = StepGate::new(STEP_INSTANCE_CREATED);
    let mut b = TestBroker::start_with(taxonomy(false), Some(gate.clone())).await;
    let id = unique("crash");
    let path = format!("/v2/service_instances/{id}?accepts_incomplete=true");
    let body = provision_body(class, "default", Some("dev-crash"));
    let (status, answer) = b.osb(Method::PUT, &path, Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    gate.reached().await;
    check_held(&b, class, &id, &answer["operation"]).await;
    b.abort().await;
    (b, id)
}

#[tokio::test]
async fn killed_mid_provision_resumes_to_succeeded() {
    let (mut b, id) = crash_mid_provision("postgresql").await;
    let db = broker::names::instance_resource(&id);
    assert_eq!(
        pg_count("SELECT count(*) FROM pg_database WHERE datname = $1", &db).await,
        1,
        "half-created"
    );
    assert_eq!(b.restart(taxonomy(false), ProviderConfig::local()).await, 1);
    let instance = format!("/v2/service_instances/{id}");
    let (_, op) = b.settle(&format!("{instance}/last_operation")).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let q = delete_query("postgresql", "default");
    assert_eq!(
        b.osb(Method::DELETE, &format!("{instance}?{q}"), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        pg_count("SELECT count(*) FROM pg_database WHERE datname = $1", &db).await,
        0
    );
    assert_eq!(
        pg_count("SELECT count(*) FROM pg_roles WHERE rolname = $1", &db).await,
        0
    );
}

/// Providers whose servers are unreachable (a closed port), for a restart that cannot resume.
fn unreachable_providers() -> ProviderConfig {
    let mut providers = BTreeMap::new();
    for tier in ["shared", "prod"] {
        let pg = Secret::new("postgres://postgres@127.0.0.1:1/postgres");
        providers.insert(
            format!("postgres-{tier}"),
            ProviderSpec::Postgres { admin_url: pg },
        );
        providers.insert(
            format!("mysql-{tier}"),
            ProviderSpec::Mysql {
                admin_url: Secret::new("mysql://root@127.0.0.1:1"),
            },
        );
        providers.insert(
            format!("redis-{tier}"),
            ProviderSpec::Redis {
                admin_url: Secret::new("redis://127.0.0.1:1"),
            },
        );
    }
    ProviderConfig { providers }
}

#[tokio::test]
async fn killed_mid_provision_fails_cleanly_and_delete_removes_the_orphan() {
    let (mut b, id) = crash_mid_provision("mysql").await;
    let db = broker::names::instance_resource(&id);
    assert_eq!(b.restart(taxonomy(false), unreachable_providers()).await, 1);
    let instance = format!("/v2/service_instances/{id}");
    let (_, op) = b.settle(&format!("{instance}/last_operation")).await;
    assert_eq!(op["state"], "failed", "{op}");
    assert!(
        op["description"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{op}"
    );
    // The servers are back: orphan mitigation deletes what the crash left.
    b.restart(taxonomy(false), ProviderConfig::local()).await;
    let q = delete_query("mysql", "default");
    assert_eq!(
        b.osb(Method::DELETE, &format!("{instance}?{q}"), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        b.osb(Method::DELETE, &format!("{instance}?{q}"), None)
            .await
            .0,
        StatusCode::GONE
    );
    let mut admin = mysql_admin().await;
    let sql = "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?";
    let n: Option<i64> = mysql_async::prelude::Queryable::exec_first(&mut admin, sql, (db,))
        .await
        .unwrap();
    assert_eq!(n, Some(0));
}

#[tokio::test]
async fn killed_mid_provision_redis_resumes() {
    let (mut b, id) = crash_mid_provision("redis").await;
    b.restart(taxonomy(false), ProviderConfig::local()).await;
    let instance = format!("/v2/service_instances/{id}");
    assert_eq!(
        b.settle(&format!("{instance}/last_operation")).await.1["state"],
        "succeeded"
    );
    let q = delete_query("redis", "default");
    assert_eq!(
        b.osb(Method::DELETE, &format!("{instance}?{q}"), None)
            .await
            .0,
        StatusCode::OK
    );
    assert!(!redis_acl_has(&broker::names::instance_resource(&id)).await);
}
