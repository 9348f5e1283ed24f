//! Crash recovery of the real process: `meshwork broker` is SIGKILLed while an asynchronous
//! provision is held (by the hidden `--test-hold-at-step` seam) right after the database was
//! created, then restarted on the same state file. The operation ends `succeeded` (server
//! reachable) or cleanly `failed` (server unreachable), and DELETE leaves no database or role
//! in the machine's PostgreSQL.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use broker::taxonomy::ids;
use serde_json::{Value, json};

use super::curl_json;
use crate::harness::meshwork;

const USER: &str = "platform";
const PASSWORD: &str = "crash-test-platform-password";
/// The step at which a provider has created the instance's database but not finished it.
const HELD_STEP: &str = broker::provider::STEP_INSTANCE_CREATED;
/// A closed port: a PostgreSQL server the restarted broker cannot reach.
const UNREACHABLE_PG: &str = "postgres://postgres@127.0.0.1:1/postgres";

/// The admin URL of the machine's PostgreSQL, as the broker's `postgres-shared` provider sees it.
fn pg_admin_url() -> String {
    std::env::var("MESHWORK_BROKER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A `meshwork broker` process; killed (SIGKILL) and reaped when dropped, also on panic.
struct BrokerProcess {
    child: Child,
    url: String,
}

impl BrokerProcess {
    /// Starts the broker on `state` (demo taxonomy: dev postgresql → the machine's server),
    /// optionally held at `hold` and with another PostgreSQL admin URL, and waits until it serves.
    fn start(state: &Path, hold: Option<&str>, pg_url: Option<&str>) -> BrokerProcess {
        let mut cmd = meshwork();
        cmd.args(["broker", "--listen", "127.0.0.1:0", "--state"])
            .arg(state)
            .env("MESHWORK_BROKER_USERNAME", USER)
            .env("MESHWORK_BROKER_PASSWORD", PASSWORD)
            .env_remove("MESHWORK_PARENT_PID")
            .stdout(Stdio::piped());
        if let Some(step) = hold {
            cmd.args(["--test-hold-at-step", step]);
        }
        if let Some(url) = pg_url {
            cmd.env("MESHWORK_BROKER_POSTGRES_URL", url);
        }
        let mut child = cmd.spawn().expect("spawn meshwork broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[broker] {line}");
                let _ = tx.send(line);
            }
        });
        // Guard first, so a broker that never prints its address is still killed.
        let mut broker = BrokerProcess {
            child,
            url: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the broker printed no address (see its stderr)");
        broker.url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        broker
    }

    /// An authenticated OSB 2.17 request through curl: (status, JSON body).
    fn osb(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-X", method, "-u", &format!("{USER}:{PASSWORD}")])
            .args(["-H", "X-Broker-API-Version: 2.17"])
            .args(["-H", "Content-Type: application/json"])
            .args(["-w", "\n%{http_code}"]);
        if let Some(body) = body {
            cmd.args(["-d", &body.to_string()]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("run curl");
        curl_json(&out)
    }

    /// Polls the instance's last_operation until `done` holds (deadline 60 s); the last answer.
    fn poll_operation(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/v2/service_instances/{id}/last_operation");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, op) = self.osb("GET", &path, None);
            if status == 200 && done(&op) {
                return op;
            }
            assert!(
                Instant::now() < deadline,
                "last_operation never showed {what}: {status} {op}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the operation is no longer `in progress`.
    fn settle(&self, id: &str) -> Value {
        self.poll_operation(id, "a final state", |op| op["state"] != "in progress")
    }

    /// SIGKILL (what `Child::kill` sends) and reap: a crash, nothing cleaned up.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the broker");
        self.child.wait().expect("reap the broker");
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drops the instance's database and role if a failed test left them on the shared server.
struct PgCleanup(String);

impl Drop for PgCleanup {
    fn drop(&mut self) {
        // Two round trips: DROP DATABASE refuses to run inside a (multi-statement) transaction.
        let drop_db = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0);
        let drop_role = format!("DROP ROLE IF EXISTS {}", self.0);
        // Never panics: this runs while a failed test unwinds.
        runtime().block_on(async {
            let Ok(db) = try_admin().await else { return };
            for sql in [drop_db, drop_role] {
                if let Err(e) = db.batch_execute(&sql).await {
                    eprintln!("cleanup: {sql}: {e}");
                }
            }
        });
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn try_admin() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn admin() -> tokio_postgres::Client {
    try_admin()
        .await
        .expect("connect to PostgreSQL at 127.0.0.1:5432 as admin")
}

/// (databases, roles) named `name` on the machine's PostgreSQL.
fn pg_objects(name: &str) -> (i64, i64) {
    runtime().block_on(async {
        let db = admin().await;
        let count = |sql: &'static str| {
            let db = &db;
            async move { db.query_one(sql, &[&name]).await.unwrap().get::<_, i64>(0) }
        };
        (
            count("SELECT count(*) FROM pg_database WHERE datname = $1").await,
            count("SELECT count(*) FROM pg_roles WHERE rolname = $1").await,
        )
    })
}

fn instance_path(id: &str) -> String {
    format!("/v2/service_instances/{id}")
}

fn delete_query() -> String {
    let plan = ids::plan_id("postgresql", ids::PlanChoice::Default);
    format!(
        "service_id={}&plan_id={plan}",
        ids::service_id("postgresql")
    )
}

/// A broker held at [`HELD_STEP`] gets an async postgresql provision (dev environment), shows
/// the step in last_operation, and is SIGKILLed there. Returns the instance id, with the
/// guard that removes its database should the test fail.
fn provision_and_kill(state: &Path) -> (String, PgCleanup) {
    let id = format!("crash-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let cleanup = PgCleanup(broker::names::instance_resource(&id));
    let held = BrokerProcess::start(state, Some(HELD_STEP), None);
    let body = json!({
        "service_id": ids::service_id("postgresql"),
        "plan_id": ids::plan_id("postgresql", ids::PlanChoice::Default),
        "organization_guid": "org",
        "space_guid": "space",
        "context": {"platform": "kubernetes", "namespace": "dev-crash", "clusterid": "test"},
    });
    let path = format!("{}?accepts_incomplete=true", instance_path(&id));
    let (status, answer) = held.osb("PUT", &path, Some(&body));
    assert_eq!(status, 202, "{answer}");
    held.poll_operation(&id, HELD_STEP, |op| {
        op["state"] == "in progress"
            && op["description"]
                .as_str()
                .is_some_and(|d| d.contains(HELD_STEP))
    });
    held.kill();
    assert_eq!(
        pg_objects(&cleanup.0),
        (1, 1),
        "database and role half-created"
    );
    (id, cleanup)
}

/// DELETE answers 200, and neither the database nor its role is left on the server.
fn delete_leaves_nothing(broker: &BrokerProcess, id: &str, name: &str) {
    let path = format!("{}?{}", instance_path(id), delete_query());
    let (status, body) = broker.osb("DELETE", &path, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(pg_objects(name), (0, 0), "database or role of {id} leaked");
}

#[test]
fn sigkilled_broker_resumes_provision_to_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("broker.redb");
    let (id, cleanup) = provision_and_kill(&state);

    let broker = BrokerProcess::start(&state, None, None);
    let op = broker.settle(&id);
    assert_eq!(op["state"], "succeeded", "{op}");
    let (status, instance) = broker.osb("GET", &instance_path(&id), None);
    assert_eq!(status, 200, "{instance}");
    delete_leaves_nothing(&broker, &id, &cleanup.0);
}

#[test]
fn sigkilled_broker_fails_cleanly_when_the_server_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("broker.redb");
    let (id, cleanup) = provision_and_kill(&state);

    // Restarted while PostgreSQL is unreachable: the resumed provision fails, it does not hang.
    let cut_off = BrokerProcess::start(&state, None, Some(UNREACHABLE_PG));
    let op = cut_off.settle(&id);
    assert_eq!(op["state"], "failed", "{op}");
    let why = op["description"].as_str().unwrap_or_default();
    assert!(why.contains("cannot connect"), "{op}");
    cut_off.kill();
    assert_eq!(pg_objects(&cleanup.0), (1, 1), "the orphan is still there");

    // The server is back: DELETE removes what the crash left (orphan mitigation).
    let broker = BrokerProcess::start(&state, None, None);
    assert_eq!(broker.settle(&id)["state"], "failed");
    delete_leaves_nothing(&broker, &id, &cleanup.0);
}
