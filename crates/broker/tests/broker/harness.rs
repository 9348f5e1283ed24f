//! A broker under test, an OSB client, and admin views of the real servers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use broker::provider::ProviderSpec;
use broker::taxonomy::{Named, ServicePolicySpec, demo, ids};
use broker::{
    BasicCredentials, BrokerConfig, ProviderConfig, RunningBroker, Secret, StepGate, Taxonomy,
};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub const USER: &str = "platform";
pub const PASSWORD: &str = "s3cret-platform-password";

/// A fresh id for this test run, so parallel tests never collide.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn service_id(class: &str) -> String {
    ids::service_id(class)
}

pub fn plan_id(class: &str, plan: &str) -> String {
    let choice = match plan {
        "default" => ids::PlanChoice::Default,
        "small" => ids::PlanChoice::Sized(broker::taxonomy::Size::Small),
        "medium" => ids::PlanChoice::Sized(broker::taxonomy::Size::Medium),
        _ => ids::PlanChoice::Sized(broker::taxonomy::Size::Large),
    };
    ids::plan_id(class, choice)
}

/// The demo taxonomy without deletion protection and with a per-team quota of `n`.
pub fn taxonomy_with_quota(n: u32) -> Taxonomy {
    let mut policies = demo::policies();
    for rule in &mut policies[0].spec.rules {
        rule.deletion_protection = false;
        if let Some(q) = &mut rule.quota {
            q.instances_per_team = i64::from(n).try_into().expect("quota in range");
        }
    }
    Taxonomy::new(demo::classes(), demo::environments(), policies).unwrap()
}

/// The demo taxonomy, optionally without prod's deletion protection (so tests clean up).
pub fn taxonomy(deletion_protection: bool) -> Taxonomy {
    let mut policies: Vec<Named<ServicePolicySpec>> = demo::policies();
    for rule in &mut policies[0].spec.rules {
        rule.deletion_protection &= deletion_protection;
    }
    Taxonomy::new(demo::classes(), demo::environments(), policies).unwrap()
}

pub struct TestBroker {
    pub running: Option<RunningBroker>,
    pub addr: SocketAddr,
    pub state: PathBuf,
    _dir: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub fn config(
    state: PathBuf,
    taxonomy: Taxonomy,
    providers: ProviderConfig,
    gate: Option<StepGate>,
) -> BrokerConfig {
    let mut config = BrokerConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        state,
        BasicCredentials {
            username: USER.into(),
            password: Secret::new(PASSWORD),
        },
        taxonomy,
        providers,
    );
    config.step_gate = gate;
    config
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(taxonomy(false), None).await
    }

    pub async fn start_with(taxonomy: Taxonomy, gate: Option<StepGate>) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, taxonomy, ProviderConfig::local(), gate).await
    }

    /// A broker whose state lives in `dir`.
    pub async fn start_in(
        dir: tempfile::TempDir,
        taxonomy: Taxonomy,
        providers: ProviderConfig,
        gate: Option<StepGate>,
    ) -> TestBroker {
        let state = dir.path().join("broker.redb");
        let config = config(state.clone(), taxonomy, providers, gate);
        let running = RunningBroker::start(config).await.unwrap();
        TestBroker {
            addr: running.local_addr(),
            running: Some(running),
            state,
            _dir: dir,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Stops the broker gracefully.
    pub async fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Stops the broker like a crash would.
    pub async fn abort(&mut self) {
        if let Some(r) = self.running.take() {
            r.abort().await;
        }
    }

    /// Starts again on the same state file (after [`TestBroker::abort`]).
    pub async fn restart(&mut self, taxonomy: Taxonomy, providers: ProviderConfig) -> usize {
        self.abort().await;
        let running = RunningBroker::start(config(self.state.clone(), taxonomy, providers, None))
            .await
            .unwrap();
        self.addr = running.local_addr();
        let resumed = running.resumed_operations();
        self.running = Some(running);
        resumed
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default().to_owned()));
        let response = self.client.request(req.body(body).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("non-JSON body ({e}): {bytes:?}"))
        };
        (parts.status, parts.headers, value)
    }

    /// An authenticated OSB 2.17 request.
    pub async fn osb(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        );
        let headers = [
            ("authorization", auth.as_str()),
            ("x-broker-api-version", "2.17"),
            ("content-type", "application/json"),
        ];
        let body = body.map(|b| b.to_string());
        let (status, _, value) = self.raw(method, path, &headers, body.as_deref()).await;
        (status, value)
    }

    /// Just the status of an authenticated OSB request.
    pub async fn status(&self, method: Method, path: &str, body: Option<Value>) -> StatusCode {
        self.osb(method, path, body).await.0
    }

    /// Asynchronous DELETE of an instance or binding path, polled until it is gone.
    pub async fn delete_async(&self, path: &str, class: &str) {
        let q = delete_query(class, "default");
        let (status, answer) = self
            .osb(
                Method::DELETE,
                &format!("{path}?{q}&accepts_incomplete=true"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
        let (status, op) = self.settle(&format!("{path}/last_operation")).await;
        assert_eq!(status, StatusCode::GONE, "{path}: {op}");
    }

    /// Polls a last_operation endpoint until the state is not `in progress`.
    pub async fn settle(&self, path: &str) -> (StatusCode, Value) {
        for _ in 0..600 {
            let (status, body) = self.osb(Method::GET, path, None).await;
            if status != StatusCode::OK || body["state"] != "in progress" {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path} stayed in progress");
    }
}

/// A provision body for a class/plan in a namespace (`None`: no context at all).
pub fn provision_body(class: &str, plan: &str, namespace: Option<&str>) -> Value {
    let mut body = json!({
        "service_id": service_id(class),
        "plan_id": plan_id(class, plan),
        "organization_guid": "org",
        "space_guid": "space",
    });
    if let Some(ns) = namespace {
        body["context"] = json!({"platform": "kubernetes", "namespace": ns, "clusterid": "test"});
    }
    body
}

pub fn bind_body(class: &str, plan: &str) -> Value {
    json!({"service_id": service_id(class), "plan_id": plan_id(class, plan)})
}

pub fn delete_query(class: &str, plan: &str) -> String {
    format!(
        "service_id={}&plan_id={}",
        service_id(class),
        plan_id(class, plan)
    )
}

pub fn admin_url(kind: &str) -> String {
    let providers = ProviderConfig::local();
    match providers.providers.get(&format!("{kind}-shared")) {
        Some(
            ProviderSpec::Postgres { admin_url }
            | ProviderSpec::Mysql { admin_url }
            | ProviderSpec::Redis { admin_url },
        ) => admin_url.expose().to_owned(),
        _ => panic!("no {kind} server provider"),
    }
}

/// An admin PostgreSQL client (optionally on a given database).
pub async fn pg_admin() -> tokio_postgres::Client {
    pg_connect(&admin_url("postgres")).await.unwrap()
}

pub async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

pub async fn pg_count(sql: &str, param: &str) -> i64 {
    pg_admin()
        .await
        .query_one(sql, &[&param])
        .await
        .unwrap()
        .get(0)
}

pub async fn mysql_admin() -> mysql_async::Conn {
    mysql_async::Conn::from_url(admin_url("mysql"))
        .await
        .unwrap()
}

pub async fn redis_admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(admin_url("redis"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Users (from ACL LIST) whose name is `name`.
pub async fn redis_acl_has(name: &str) -> bool {
    let lines: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
    lines
        .iter()
        .any(|l| l.split_whitespace().nth(1) == Some(name))
}
