//! The dev PostgreSQL flavour: a private cluster under the state directory, no server needed.

use std::os::unix::fs::PermissionsExt;

use broker::ProviderConfig;
use http::{Method, StatusCode};

use crate::harness::*;

/// Provisions and binds on the dev cluster; returns the binding's URI after checking it works.
async fn provision_bind_use(b: &TestBroker, path: &str) -> String {
    let body = provision_body("postgresql", "default", Some("dev-demo"));
    let (status, answer) = b.osb(Method::PUT, path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let bpath = format!("{path}/service_bindings/{}", unique("b"));
    let bind = Some(bind_body("postgresql", "default"));
    let (status, answer) = b.osb(Method::PUT, &bpath, bind).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_ne!(
        answer["credentials"]["port"], 5432,
        "served by the private cluster"
    );
    let uri = answer["credentials"]["uri"].as_str().unwrap().to_owned();
    let client = pg_connect(&uri).await.unwrap();
    let sql = "CREATE TABLE t (v int); INSERT INTO t VALUES (7)";
    client.batch_execute(sql).await.unwrap();
    let v: i32 = client
        .query_one("SELECT v FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 7);
    uri
}

#[tokio::test]
async fn private_postgres_cluster_serves_dev_and_stops_with_the_broker() {
    // 0755: when the tests run as root the cluster runs as `postgres`, which must reach it.
    let dir = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir()
        .unwrap();
    let cluster = dir.path().join("postgres-dev");
    let providers =
        ProviderConfig::local().with_private_postgres("postgres-shared", cluster.clone());
    let mut b = TestBroker::start_in(dir, taxonomy(false), providers, None).await;
    let path = format!("/v2/service_instances/{}", unique("pgdev"));
    let uri = provision_bind_use(&b, &path).await;
    let q = delete_query("postgresql", "default");
    let status = b.status(Method::DELETE, &format!("{path}?{q}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cluster.join("data/postmaster.pid").exists(), "running");
    b.shutdown().await;
    let pid = cluster.join("data/postmaster.pid");
    assert!(!pid.exists(), "stopped with the broker");
    assert!(pg_connect(&uri).await.is_err());
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Issue 9: as root, a state directory under a 0700 parent (root's home, `mktemp -d`) cannot
/// be traversed by `postgres`; the cluster lives in a postgres-owned directory outside it
/// (recorded in `location`), the user's directories keep their modes, and purge removes it.
#[tokio::test]
async fn as_root_a_cluster_postgres_cannot_reach_lives_outside_and_purge_removes_it() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        eprintln!("SKIP: needs root (the cluster runs as `postgres` only when the broker is root)");
        return;
    }
    let dir = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap();
    assert_eq!(dir.path().metadata().unwrap().mode() & 0o777, 0o700);
    let home = dir.path().join("postgres-private");
    let state = dir.path().join("broker.redb");
    let providers = ProviderConfig::local().with_private_postgres("postgres-shared", home.clone());
    let mut b = TestBroker::start_in(dir, taxonomy(false), providers.clone(), None).await;
    let path = format!("/v2/service_instances/{}", unique("pgroot"));
    let uri = provision_bind_use(&b, &path).await;

    let location = std::fs::read_to_string(home.join("location")).unwrap();
    let outside = std::path::PathBuf::from(location.trim());
    assert!(
        outside.starts_with("/var/lib/meshwork/postgres-private/"),
        "{}",
        outside.display()
    );
    let meta = outside.metadata().unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    let postgres_uid = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    let uid: u32 = String::from_utf8_lossy(&postgres_uid.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(meta.uid(), uid, "owned by postgres");
    assert!(outside.join("data/PG_VERSION").is_file());
    let parent = home.parent().unwrap();
    assert_eq!(
        parent.metadata().unwrap().mode() & 0o777,
        0o700,
        "never chmod-ed"
    );

    b.shutdown().await;
    let purged = broker::purge(config(state, taxonomy(false), providers, None))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(
        !outside.exists(),
        "purge removes the cluster outside the state directory"
    );
    assert!(!home.join("location").exists());
    assert!(pg_connect(&uri).await.is_err());
}

/// When the cluster cannot work, the answer says exactly what to change (not "DELETE the
/// instance to retry it", which does not help): here, a cluster made when `postgres` could
/// reach it sits under a directory it no longer can traverse.
#[tokio::test]
async fn a_cluster_postgres_cannot_reach_is_an_error_naming_the_fix() {
    if !is_root() {
        eprintln!("SKIP: needs root (the cluster runs as `postgres` only when the broker is root)");
        return;
    }
    let dir = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap();
    let home = dir.path().join("postgres-private");
    std::fs::create_dir_all(home.join("data")).unwrap();
    std::fs::write(home.join("data/PG_VERSION"), "15\n").unwrap();
    let providers = ProviderConfig::local().with_private_postgres("postgres-shared", home.clone());
    let b = TestBroker::start_in(dir, taxonomy(false), providers, None).await;
    let path = format!("/v2/service_instances/{}", unique("pgfix"));
    let body = provision_body("postgresql", "default", Some("dev-demo"));
    let (status, answer) = b.osb(Method::PUT, &path, Some(body)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    let (_, op) = b
        .osb(Method::GET, &format!("{path}/last_operation"), None)
        .await;
    let text = op["description"].as_str().unwrap();
    assert!(
        text.starts_with("failed: provider postgres-shared cannot run here"),
        "{text}"
    );
    assert!(
        text.contains("give the postgres user search (x) permission on"),
        "{text}"
    );
    assert!(!text.contains("DELETE"), "{text}");
    assert!(
        !home.join("location").exists(),
        "no second cluster was made"
    );
}
