//! Real providers: the same request lands on different providers and sizes in dev and prod;
//! bound credentials work, are isolated, die with unbind; deprovision leaves nothing behind.

use http::{Method, StatusCode};
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

use crate::harness::*;

/// Bound credentials as the test uses them.
struct Creds(Value);

impl Creds {
    fn uri(&self) -> String {
        self.0["uri"].as_str().unwrap().to_owned()
    }
    fn user(&self) -> String {
        self.0["username"].as_str().unwrap().to_owned()
    }
    fn prefix(&self) -> String {
        self.0["keyPrefix"].as_str().unwrap_or_default().to_owned()
    }
}

async fn write(class: &str, c: &Creds, key: &str, value: &str) -> Result<(), String> {
    match class {
        "postgresql" => {
            let client = pg_connect(&c.uri()).await.map_err(|e| e.to_string())?;
            let sql = "CREATE TABLE IF NOT EXISTS charges (k text PRIMARY KEY, v text)";
            client.batch_execute(sql).await.map_err(|e| e.to_string())?;
            client
                .execute("INSERT INTO charges VALUES ($1, $2)", &[&key, &value])
                .await
                .map_err(|e| e.to_string())?;
        }
        "mysql" => {
            let mut conn = mysql_async::Conn::from_url(c.uri())
                .await
                .map_err(|e| e.to_string())?;
            let sql = "CREATE TABLE IF NOT EXISTS charges (k VARCHAR(64) PRIMARY KEY, v TEXT)";
            conn.query_drop(sql).await.map_err(|e| e.to_string())?;
            conn.exec_drop("INSERT INTO charges VALUES (?, ?)", (key, value))
                .await
                .map_err(|e| e.to_string())?;
        }
        _ => {
            let mut conn = redis_conn(c).await?;
            let k = format!("{}{key}", c.prefix());
            redis::cmd("SET")
                .arg(k)
                .arg(value)
                .exec_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn redis_conn(c: &Creds) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(c.uri()).map_err(|e| e.to_string())?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())
}

async fn read(class: &str, c: &Creds, key: &str) -> Result<String, String> {
    match class {
        "postgresql" => {
            let client = pg_connect(&c.uri()).await.map_err(|e| e.to_string())?;
            let row = client
                .query_one("SELECT v FROM charges WHERE k = $1", &[&key])
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get(0))
        }
        "mysql" => {
            let mut conn = mysql_async::Conn::from_url(c.uri())
                .await
                .map_err(|e| e.to_string())?;
            let v: Option<String> = conn
                .exec_first("SELECT v FROM charges WHERE k = ?", (key,))
                .await
                .map_err(|e| e.to_string())?;
            v.ok_or_else(|| "no row".to_owned())
        }
        _ => {
            let mut conn = redis_conn(c).await?;
            let k = format!("{}{key}", c.prefix());
            redis::cmd("GET")
                .arg(k)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// Whether `c` can reach the other instance's data (it must not).
async fn reaches(class: &str, c: &Creds, other_resource: &str) -> bool {
    match class {
        "postgresql" => {
            let uri = c
                .uri()
                .replace(c.0["database"].as_str().unwrap(), other_resource);
            pg_connect(&uri).await.is_ok()
        }
        "mysql" => {
            let mut conn = mysql_async::Conn::from_url(c.uri()).await.unwrap();
            conn.query_drop(format!("USE `{other_resource}`"))
                .await
                .is_ok()
        }
        _ => {
            let mut conn = redis_conn(c).await.unwrap();
            let foreign = redis::cmd("SET")
                .arg(format!("{other_resource}:x"))
                .arg(1)
                .exec_async(&mut conn)
                .await;
            let flush = redis::cmd("FLUSHALL").exec_async(&mut conn).await;
            foreign.is_ok() || flush.is_ok()
        }
    }
}

/// The size the server enforces for a bound user/instance, where the server has one.
async fn enforced_connections(class: &str, resource: &str, user: &str) -> Option<i64> {
    match class {
        "postgresql" => Some(
            pg_count(
                "SELECT datconnlimit::bigint FROM pg_database WHERE datname = $1",
                resource,
            )
            .await,
        ),
        "mysql" => {
            let mut conn = mysql_admin().await;
            let sql = "SELECT max_user_connections FROM mysql.user WHERE User = ? AND Host = '%'";
            conn.exec_first(sql, (user,)).await.unwrap()
        }
        _ => None,
    }
}

async fn user_exists(class: &str, name: &str) -> bool {
    match class {
        "postgresql" => {
            pg_count("SELECT count(*) FROM pg_roles WHERE rolname = $1", name).await > 0
        }
        "mysql" => {
            let sql = "SELECT count(*) FROM mysql.user WHERE User = ?";
            let n: Option<i64> = mysql_admin().await.exec_first(sql, (name,)).await.unwrap();
            n.unwrap_or_default() > 0
        }
        _ => redis_acl_has(name).await,
    }
}

async fn data_exists(class: &str, resource: &str) -> bool {
    match class {
        "postgresql" => {
            pg_count(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                resource,
            )
            .await
                > 0
        }
        "mysql" => {
            let sql = "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?";
            let n: Option<i64> = mysql_admin()
                .await
                .exec_first(sql, (resource,))
                .await
                .unwrap();
            n.unwrap_or_default() > 0
        }
        _ => {
            let pattern = format!("{resource}:*");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut redis_admin().await)
                .await
                .unwrap();
            !keys.is_empty()
        }
    }
}

/// What deprovisioning left behind on the server (must be nothing).
async fn leaked(class: &str, resource: &str, users: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for name in users.iter().chain(std::iter::once(&resource.to_owned())) {
        if user_exists(class, name).await {
            found.push(format!("user {name}"));
        }
    }
    if data_exists(class, resource).await {
        found.push(format!("data of {resource}"));
    }
    found
}

async fn bind(
    b: &TestBroker,
    class: &str,
    instance: &str,
    binding: &str,
    extra: Value,
    accepts: bool,
) -> Creds {
    let path = format!("/v2/service_instances/{instance}/service_bindings/{binding}");
    let mut body = bind_body(class, "default");
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let query = if accepts {
        "?accepts_incomplete=true"
    } else {
        ""
    };
    let (status, answer) = b
        .osb(Method::PUT, &format!("{path}{query}"), Some(body))
        .await;
    if status == StatusCode::ACCEPTED {
        let (_, op) = b.settle(&format!("{path}/last_operation")).await;
        assert_eq!(op["state"], "succeeded", "{op}");
        let (_, got) = b.osb(Method::GET, &path, None).await;
        return Creds(got["credentials"].clone());
    }
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    Creds(answer["credentials"].clone())
}

async fn provision(b: &TestBroker, class: &str, id: &str, namespace: &str) -> Value {
    let path = format!("/v2/service_instances/{id}?accepts_incomplete=true");
    let (status, answer) = b
        .osb(
            Method::PUT,
            &path,
            Some(provision_body(class, "default", Some(namespace))),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (_, op) = b
        .settle(&format!("/v2/service_instances/{id}/last_operation"))
        .await;
    assert_eq!(op["state"], "succeeded", "{op}");
    b.osb(Method::GET, &format!("/v2/service_instances/{id}"), None)
        .await
        .1
}

fn label(meta: &Value, key: &str) -> Value {
    meta["metadata"]["labels"][format!("meshwork.dev/{key}")].clone()
}

/// Bindings on the dev instance: write, rotate (the successor sees the data), isolation from
/// prod, enforced size; then unbinding revokes the first password.
async fn use_bindings(
    b: &TestBroker,
    class: &str,
    dev: &str,
    prod_resource: &str,
) -> (Creds, Creds) {
    let (b1, b2) = (unique("b1"), unique("b2"));
    let first = bind(b, class, dev, &b1, json!({}), false).await;
    write(class, &first, "charge-1", "42.00").await.unwrap();
    assert_eq!(read(class, &first, "charge-1").await.unwrap(), "42.00");
    let rotated = bind(
        b,
        class,
        dev,
        &b2,
        json!({"predecessor_binding_id": b1}),
        false,
    )
    .await;
    assert_ne!(rotated.user(), first.user());
    assert_eq!(
        read(class, &rotated, "charge-1").await.unwrap(),
        "42.00",
        "rotation keeps data"
    );
    assert!(
        !reaches(class, &first, prod_resource).await,
        "dev credentials reach prod"
    );
    let dev_resource = broker::names::instance_resource(dev);
    let limit = enforced_connections(class, &dev_resource, &first.user()).await;
    assert_eq!(
        limit.map(|n| n == 20),
        class_has_limits(class),
        "dev is small"
    );
    let q = delete_query(class, "default");
    let b1_path = format!("/v2/service_instances/{dev}/service_bindings/{b1}");
    assert_eq!(
        b.status(Method::DELETE, &format!("{b1_path}?{q}"), None)
            .await,
        StatusCode::OK
    );
    assert!(
        read(class, &first, "charge-1").await.is_err(),
        "the unbound password still works"
    );
    assert_eq!(read(class, &rotated, "charge-1").await.unwrap(), "42.00");
    (first, rotated)
}

async fn lifecycle(class: &str, dev_provider: &str, prod_provider: &str) {
    let b = TestBroker::start().await;
    let (dev, prod) = (unique("dev"), unique("prod"));
    let dev_meta = provision(&b, class, &dev, "dev-billing").await;
    let prod_meta = provision(&b, class, &prod, &unique("prod")).await;
    let picked = |m: &Value| (label(m, "provider"), label(m, "size"));
    assert_eq!(picked(&dev_meta), (json!(dev_provider), json!("small")));
    assert_eq!(picked(&prod_meta), (json!(prod_provider), json!("medium")));
    let (dev_res, prod_res) = (
        broker::names::instance_resource(&dev),
        broker::names::instance_resource(&prod),
    );
    let b3 = unique("b3");
    let prod_creds = bind(&b, class, &prod, &b3, json!({}), true).await;
    let limit = enforced_connections(class, &prod_res, &prod_creds.user()).await;
    assert_eq!(
        limit.map(|n| n == 100),
        class_has_limits(class),
        "prod is medium"
    );
    let (first, rotated) = use_bindings(&b, class, &dev, &prod_res).await;

    let dev_path = format!(
        "/v2/service_instances/{dev}?{}",
        delete_query(class, "default")
    );
    assert_eq!(
        b.status(Method::DELETE, &dev_path, None).await,
        StatusCode::OK,
        "dev cascades"
    );
    assert!(read(class, &rotated, "charge-1").await.is_err());
    assert_eq!(
        leaked(class, &dev_res, &[first.user(), rotated.user()]).await,
        Vec::<String>::new()
    );
    b.delete_async(
        &format!("/v2/service_instances/{prod}/service_bindings/{b3}"),
        class,
    )
    .await;
    b.delete_async(&format!("/v2/service_instances/{prod}"), class)
        .await;
    assert_eq!(
        leaked(class, &prod_res, &[prod_creds.user()]).await,
        Vec::<String>::new()
    );
}

fn class_has_limits(class: &str) -> Option<bool> {
    (class != "redis").then_some(true)
}

#[tokio::test]
async fn postgresql_lifecycle() {
    lifecycle("postgresql", "postgres-shared", "postgres-prod").await;
}

#[tokio::test]
async fn mysql_lifecycle() {
    lifecycle("mysql", "mysql-shared", "mysql-prod").await;
}

#[tokio::test]
async fn redis_lifecycle() {
    lifecycle("redis", "redis-shared", "redis-prod").await;
}
