//! `ServiceClaim`s as Secrets against the fake API server (`testkit::kube_fake`, no real
//! cluster on these machines): a real `meshwork broker` on the machine's PostgreSQL and a real
//! claims controller process (`meshwork claims-controller`, the claims half of
//! `control --kubernetes`). Each test waits on conditions with deadlines.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::harness::{example, meshwork};

/// The fake API server, serving everything meshwork's controller mode uses.
struct Fake(#[allow(dead_code)] testkit::kube_fake::FakeApiServer);

impl Fake {
    /// Starts it (on the caller's runtime) and writes its kubeconfig to `kubeconfig`.
    async fn start(kubeconfig: &Path) -> Fake {
        let resources = testkit::kube_fake::meshwork_resources();
        let fake = testkit::kube_fake::FakeApiServer::start(&resources)
            .await
            .unwrap();
        fake.write_kubeconfig(kubeconfig).unwrap();
        Fake(fake)
    }
}

const CLAIM: &str = "charges-db";
const PASSWORD: &str = "kube-claims-test-password";
const DEADLINE: Duration = Duration::from_secs(90);

fn pg_admin_url() -> String {
    std::env::var("MESHWORK_BROKER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A free loopback port (the broker is restarted on the same one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) and reaped when dropped; its output lines go to a channel.
struct Process {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    fn spawn(name: &'static str, mut cmd: std::process::Command) -> Process {
        cmd.env_remove("MESHWORK_PARENT_PID")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn meshwork");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    let _ = tx.send(line);
                }
            });
        }
        Process { name, child, lines }
    }

    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("{} never printed {needle:?}", self.name),
            }
        }
    }

    /// SIGKILL and reap: a crash, nothing cleaned up.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker, the controller's state and the cluster of one test.
struct Setup {
    /// The claim's namespace, different in each test: the first letters of the instance ids
    /// (and so of database names) differ, so a test counts every database of its claim.
    namespace: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    rt: tokio::runtime::Runtime,
    _fake: Fake,
    client: kube::Client,
}

impl Setup {
    fn new(namespace: &'static str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        // store-billing's taxonomy, with dev on the machine's PostgreSQL server instead of a
        // private cluster (no initdb in a test).
        let taxonomy = std::fs::read_to_string(example("store-billing").join("taxonomy.yaml"))
            .unwrap()
            .replace("provider: postgres-private", "provider: postgres-shared");
        std::fs::create_dir(dir.path().join("taxonomy")).unwrap();
        std::fs::write(dir.path().join("taxonomy/taxonomy.yaml"), taxonomy).unwrap();
        std::fs::write(dir.path().join("broker.password"), PASSWORD).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let fake = rt.block_on(Fake::start(&dir.path().join("kubeconfig")));
        let client = rt.block_on(client(&dir.path().join("kubeconfig")));
        Setup {
            namespace,
            dir,
            port: free_port(),
            rt,
            _fake: fake,
            client,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn broker(&self) -> Process {
        let mut cmd = meshwork();
        cmd.args(["broker", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--state")
            .arg(self.path("broker.redb"))
            .arg("--resources")
            .arg(self.path("taxonomy"))
            .arg("--password-file")
            .arg(self.path("broker.password"))
            .env("MESHWORK_BROKER_USERNAME", "meshwork");
        let broker = Process::spawn("broker", cmd);
        broker.wait_for_line("listening on");
        broker
    }

    fn controller(&self, hold: Option<&str>) -> Process {
        let mut cmd = meshwork();
        cmd.args(["claims-controller", "--namespace", self.namespace])
            .arg("--kubeconfig")
            .arg(self.path("kubeconfig"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .args(["--broker-url", &format!("http://127.0.0.1:{}", self.port)])
            .arg("--broker-password-file")
            .arg(self.path("broker.password"))
            .args(["--environment", "dev", "--claims-recheck", "1s"])
            .args(["--claims-backoff-max", "2s"])
            .env("RUST_LOG", "info");
        if let Some(step) = hold {
            cmd.args(["--test-hold-at-step", step]);
        }
        Process::spawn("controller", cmd)
    }

    fn claims(&self) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: "meshwork.dev".into(),
            version: "v1alpha1".into(),
            api_version: "meshwork.dev/v1alpha1".into(),
            kind: "ServiceClaim".into(),
            plural: "serviceclaims".into(),
        };
        Api::namespaced_with(self.client.clone(), self.namespace, &resource)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Creates examples/store-billing's `charges-db` in the test namespace.
    fn create_claim(&self) {
        let text = std::fs::read_to_string(example("store-billing").join("claims.yaml")).unwrap();
        let mut claim: Value = serde_saphyr::from_str(&text).unwrap();
        claim["metadata"]["namespace"] = self.namespace.into();
        assert_eq!(claim["metadata"]["name"], CLAIM);
        let claim: DynamicObject = serde_json::from_value(claim).unwrap();
        self.rt
            .block_on(self.claims().create(&PostParams::default(), &claim))
            .unwrap();
    }

    fn delete_claim(&self) {
        self.rt
            .block_on(self.claims().delete(CLAIM, &DeleteParams::default()))
            .unwrap();
    }

    fn claim(&self) -> Option<Value> {
        let claim = self.rt.block_on(self.claims().get_opt(CLAIM)).unwrap()?;
        Some(serde_json::to_value(claim).unwrap())
    }

    fn secret(&self) -> Option<Secret> {
        self.rt.block_on(self.secrets().get_opt(CLAIM)).unwrap()
    }

    /// Waits until the claim's condition `type_` has `status` (and `reason`, when given).
    fn wait_condition(&self, type_: &str, status: &str, reason: Option<&str>) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let claim = self.claim();
            let found = claim.as_ref().and_then(|c| condition(c, type_));
            if let Some(c) = &found
                && c["status"] == status
                && reason.is_none_or(|r| c["reason"] == r)
            {
                return claim.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{type_} never became {status} {reason:?}; the claim: {claim:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The OSB instance id of the claim (the controller's platform id is in its state dir).
    fn instance_id(&self) -> String {
        let id = std::fs::read_to_string(self.path("state/platform-id")).unwrap();
        format!("{CLAIM}.{}.{}", self.namespace, id.trim())
    }

    /// What PostgreSQL holds for every instance of this test's claim, whatever its platform id.
    fn pg_state(&self) -> (i64, i64, i64) {
        pg_state(&self.pg_prefix())
    }

    /// `mw_` and the readable part of the claim's instance ids (`broker::names`).
    fn pg_prefix(&self) -> String {
        let readable: String = format!("{CLAIM}.{}.", self.namespace)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        assert_eq!(readable.len(), 12, "the namespace makes the prefix unique");
        format!("{}{readable}_", broker::names::PREFIX)
    }
}

impl Drop for Setup {
    /// Drops what a failed test left on the shared server (never panics: this may run while a
    /// failed test unwinds).
    fn drop(&mut self) {
        let prefix = self.pg_prefix();
        self.rt.block_on(async {
            let Ok((db, conn)) =
                tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await
            else {
                return;
            };
            tokio::spawn(conn);
            let like = format!("{}%", prefix.replace('_', "\\_"));
            let Ok(rows) = db
                .query(
                    "SELECT 'DATABASE ' || datname FROM pg_database WHERE datname LIKE $1 \
                     UNION ALL SELECT 'ROLE ' || u.rolname FROM pg_auth_members m \
                     JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
                     WHERE g.rolname LIKE $1 \
                     UNION ALL SELECT 'ROLE ' || rolname FROM pg_roles WHERE rolname LIKE $1",
                    &[&like],
                )
                .await
            else {
                return;
            };
            for row in rows {
                let what: String = row.get(0);
                let force = if what.starts_with("DATABASE") {
                    " WITH (FORCE)"
                } else {
                    ""
                };
                let sql = format!("DROP {what}{force}");
                eprintln!("cleanup: {sql}");
                let _ = db.batch_execute(&sql).await;
            }
        });
    }
}

fn condition<'a>(claim: &'a Value, type_: &str) -> Option<&'a Value> {
    claim["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(config, &options)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// What the machine's PostgreSQL holds for the instances whose names start with `prefix`:
/// (databases, group roles, login roles that are members of those groups: one per binding).
fn pg_state(prefix: &str) -> (i64, i64, i64) {
    let like = format!("{}%", prefix.replace('_', "\\_"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (db, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL at 127.0.0.1:5432 as admin");
        tokio::spawn(conn);
        let count = |sql: &'static str| {
            let (db, like) = (&db, &like);
            async move { db.query_one(sql, &[like]).await.unwrap().get::<_, i64>(0) }
        };
        (
            count("SELECT count(*) FROM pg_database WHERE datname LIKE $1").await,
            count("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1").await,
            count(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                 WHERE g.rolname LIKE $1",
            )
            .await,
        )
    })
}

/// Connects with the Secret's `uri` and runs a query: the credentials work.
fn connect_with(secret: &Secret) -> Result<(), tokio_postgres::Error> {
    let data = secret.data.as_ref().unwrap();
    let uri = String::from_utf8(data["uri"].0.clone()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (db, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        db.batch_execute("CREATE TABLE IF NOT EXISTS charges (id int)")
            .await
    })
}

fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().unwrap();
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// Asserts the claim is `Ready=True` with its Secret in the servicebinding.io layout, owned by
/// the claim, with working credentials for the instance's one database.
fn assert_ready(setup: &Setup) -> Secret {
    let claim = setup.wait_condition("Ready", "True", Some("Ready"));
    assert_eq!(claim["status"]["binding"]["name"], CLAIM, "{claim:#}");
    let ready = condition(&claim, "Ready").unwrap();
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("environment dev") && message.contains("provider postgres-shared"),
        "the environment decision chain: {message}"
    );
    assert!(
        message.contains("bound to billing: Secret charges-db"),
        "{message}"
    );
    for type_ in ["Provisioned", "Bound"] {
        assert_eq!(
            condition(&claim, type_).unwrap()["status"],
            "True",
            "{claim:#}"
        );
    }
    assert_eq!(ready["observedGeneration"], claim["metadata"]["generation"]);
    let secret = setup.secret().expect("the Secret exists");
    assert_eq!(
        secret.type_.as_deref(),
        Some("servicebinding.io/postgresql")
    );
    let keys: Vec<&str> = secret
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "type", "provider", "host", "port", "database", "username", "password", "uri",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert_eq!(text(&secret, "type"), "postgresql");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ServiceClaim", CLAIM)
    );
    assert_eq!(
        Some(&owner.uid),
        claim["metadata"]["uid"]
            .as_str()
            .map(str::to_owned)
            .as_ref()
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let instance = setup.instance_id();
    assert_eq!(
        text(&secret, "database"),
        broker::names::instance_resource(&instance)
    );
    assert_eq!(
        setup.pg_state(),
        (1, 1, 1),
        "one database, one binding user"
    );
    connect_with(&secret).expect("the Secret's credentials connect");
    secret
}

/// Deletes the claim and waits until it is gone; then nothing is left of it.
fn assert_delete_leaves_nothing(setup: &Setup) {
    setup.delete_claim();
    let deadline = Instant::now() + DEADLINE;
    while setup.claim().is_some() {
        assert!(Instant::now() < deadline, "the claim was never finalized");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(setup.pg_state(), (0, 0, 0), "database or users left");
    let deadline = Instant::now() + DEADLINE;
    while setup.secret().is_some() {
        assert!(Instant::now() < deadline, "the Secret outlived its claim");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn claim_becomes_a_database_and_a_secret_and_deleting_it_drops_both() {
    let setup = Setup::new("ka1");
    let _broker = setup.broker();
    let _controller = setup.controller(None);
    setup.create_claim();
    let secret = assert_ready(&setup);
    let claim = setup.claim().unwrap();
    assert_eq!(
        claim["metadata"]["finalizers"],
        json!(["meshwork.dev/deprovision"])
    );

    // Level-based, no rotation: later reconciles (every second here) keep the same Secret.
    let ready_since = condition(&claim, "Ready").unwrap()["lastTransitionTime"].clone();
    std::thread::sleep(Duration::from_secs(3)); // three rechecks; nothing may change
    let again = setup.secret().unwrap();
    assert_eq!(again.data, secret.data, "credentials were rotated");
    let claim = setup.claim().unwrap();
    assert_eq!(
        condition(&claim, "Ready").unwrap()["lastTransitionTime"],
        ready_since
    );

    assert_delete_leaves_nothing(&setup);
}

#[test]
fn broker_outage_shows_in_ready_and_heals_on_its_own() {
    let setup = Setup::new("ka2");
    let broker = setup.broker();
    let _controller = setup.controller(None);
    setup.create_claim();
    let secret = assert_ready(&setup);

    broker.kill();
    let claim = setup.wait_condition("Ready", "False", Some("BrokerUnreachable"));
    let ready = condition(&claim, "Ready").unwrap();
    assert!(
        ready["message"].as_str().unwrap().contains("broker"),
        "{ready:#}"
    );
    // The credentials themselves still work: the database did not go anywhere.
    assert_eq!(setup.secret().unwrap().data, secret.data);

    let _broker = setup.broker();
    assert_ready(&setup);
    assert_eq!(setup.secret().unwrap().data, secret.data, "no rotation");
    assert_delete_leaves_nothing(&setup);
}

/// The controller dies after the broker bound (credentials only in its memory) and before the
/// Secret was written; a restarted controller ends Ready with one binding, and deleting the
/// claim leaves nothing.
#[test]
fn controller_killed_mid_provisioning_loses_and_leaks_nothing() {
    let setup = Setup::new("ka3");
    let _broker = setup.broker();
    let held = setup.controller(Some("bound"));
    setup.create_claim();
    held.wait_for_line("test seam: holding claim charges-db at step Bound");
    held.kill();
    assert!(setup.secret().is_none(), "the Secret was not written yet");
    assert_eq!(setup.pg_state(), (1, 1, 1), "bound before the crash");

    let _controller = setup.controller(None);
    assert_ready(&setup);
    assert_delete_leaves_nothing(&setup);
}

/// Level-based: a Secret someone edited is corrected from the broker's binding (same
/// credentials, no rotation); a deleted Secret comes back with a fresh password (a new
/// binding).
#[test]
fn secret_is_corrected_in_place_and_rotated_by_deleting_it() {
    let setup = Setup::new("ka4");
    let _broker = setup.broker();
    let _controller = setup.controller(None);
    setup.create_claim();
    let original = assert_ready(&setup);

    let tampered = json!({"data": {"password": "dGFtcGVyZWQ=", "extra": "eA=="}});
    setup
        .rt
        .block_on(setup.secrets().patch(
            CLAIM,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&tampered),
        ))
        .unwrap();
    wait_secret(&setup, "the tampered Secret corrected", |s| {
        s.data == original.data
    });

    setup
        .rt
        .block_on(setup.secrets().delete(CLAIM, &DeleteParams::default()))
        .unwrap();
    wait_secret(&setup, "a new Secret with a new password", |s| {
        text(s, "password") != text(&original, "password")
    });
    let rotated = assert_ready(&setup);
    assert_eq!(text(&rotated, "username"), text(&original, "username"));
    // (That the old password stops working is the broker's unbind, tested there; the
    // machine's PostgreSQL trusts loopback connections, so it cannot be seen here.)
    assert_delete_leaves_nothing(&setup);
}

/// A claim meshwork cannot read (no schema validation in the fake; a real API server's CRD
/// schema refuses this one) is `Ready=False`/`InvalidSpec`, and deleting it is not held up.
#[test]
fn unreadable_claim_says_why_and_deletes_cleanly() {
    let setup = Setup::new("ka5");
    let _broker = setup.broker();
    let _controller = setup.controller(None);
    let claim: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "meshwork.dev/v1alpha1", "kind": "ServiceClaim",
        "metadata": {"name": CLAIM, "namespace": setup.namespace},
        "spec": {"class": "postgresql", "size": "huge", "bindTo": "billing"},
    }))
    .unwrap();
    setup
        .rt
        .block_on(setup.claims().create(&PostParams::default(), &claim))
        .unwrap();
    let claim = setup.wait_condition("Ready", "False", Some("InvalidSpec"));
    let ready = condition(&claim, "Ready").unwrap();
    assert!(
        ready["message"].as_str().unwrap().contains("huge"),
        "{ready:#}"
    );
    assert_eq!(setup.pg_state(), (0, 0, 0));
    assert_delete_leaves_nothing(&setup);
}

fn wait_secret(setup: &Setup, what: &str, done: impl Fn(&Secret) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !setup.secret().is_some_and(|s| done(&s)) {
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
