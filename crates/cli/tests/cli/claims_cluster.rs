//! The setup of the `ServiceClaim`-as-Secret tests (`kubernetes_claims.rs`): the fake API
//! server, a real `meshwork broker` (store-billing's taxonomy, dev on the machine's
//! PostgreSQL), the claims controller process, and what PostgreSQL holds for a claim.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::Value;

use crate::harness::{example, meshwork};

/// The fake API server, serving everything meshwork's controller mode uses.
pub(crate) struct Fake(#[allow(dead_code)] testkit::kube_fake::FakeApiServer);

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

pub(crate) const CLAIM: &str = "charges-db";
pub(crate) const PASSWORD: &str = "kube-claims-test-password";
pub(crate) const DEADLINE: Duration = Duration::from_secs(90);

pub(crate) fn pg_admin_url() -> String {
    std::env::var("MESHWORK_BROKER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A free loopback port (the broker is restarted on the same one).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) and reaped when dropped; its output lines go to a channel.
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    pub(crate) fn spawn(name: &'static str, mut cmd: std::process::Command) -> Process {
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

    pub(crate) fn wait_for_line(&self, needle: &str) -> String {
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
    pub(crate) fn kill(mut self) {
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
pub(crate) struct Setup {
    /// The claim's namespace, different in each test: the first letters of the instance ids
    /// (and so of database names) differ, so a test counts every database of its claim.
    pub(crate) namespace: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    pub(crate) rt: tokio::runtime::Runtime,
    _fake: Fake,
    client: kube::Client,
}

impl Setup {
    pub(crate) fn new(namespace: &'static str) -> Setup {
        Setup::with_taxonomy(namespace, |t| t)
    }

    /// A setup whose broker serves store-billing's taxonomy edited by `edit`.
    pub(crate) fn with_taxonomy(
        namespace: &'static str,
        edit: impl FnOnce(String) -> String,
    ) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        // store-billing's taxonomy, with dev on the machine's PostgreSQL server instead of a
        // private cluster (no initdb in a test).
        let taxonomy = std::fs::read_to_string(example("store-billing").join("taxonomy.yaml"))
            .unwrap()
            .replace("provider: postgres-private", "provider: postgres-shared");
        let taxonomy = edit(taxonomy);
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

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn broker(&self) -> Process {
        self.broker_held(None)
    }

    /// The broker, its operations held forever at progress step `hold` if given (the broker's
    /// crash-test seam).
    pub(crate) fn broker_held(&self, hold: Option<&str>) -> Process {
        let mut cmd = meshwork();
        cmd.args(["broker", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--state")
            .arg(self.path("broker.redb"))
            .arg("--resources")
            .arg(self.path("taxonomy"))
            .arg("--password-file")
            .arg(self.path("broker.password"))
            .env("MESHWORK_BROKER_USERNAME", "meshwork");
        if let Some(step) = hold {
            cmd.args(["--test-hold-at-step", step]);
        }
        let broker = Process::spawn("broker", cmd);
        broker.wait_for_line("listening on");
        broker
    }

    pub(crate) fn controller(&self, hold: Option<&str>) -> Process {
        let mut cmd = meshwork();
        cmd.args(["control", "--kubernetes", "--namespace", self.namespace])
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

    pub(crate) fn claims(&self) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: "meshwork.dev".into(),
            version: "v1alpha1".into(),
            api_version: "meshwork.dev/v1alpha1".into(),
            kind: "ServiceClaim".into(),
            plural: "serviceclaims".into(),
        };
        Api::namespaced_with(self.client.clone(), self.namespace, &resource)
    }

    pub(crate) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Creates the rest of examples/store-billing (mesh, services, workloads, policies,
    /// taxonomy, routes) in the test namespace, so the control plane beside the claims
    /// controller has a mesh to serve.
    pub(crate) fn create_example(&self) {
        let files = [
            "mesh.yaml",
            "services.yaml",
            "workloads.yaml",
            "policies.yaml",
            "taxonomy.yaml",
            "routes.yaml",
        ];
        for file in files {
            let text = std::fs::read_to_string(example("store-billing").join(file)).unwrap();
            let documents = text
                .split("\n---\n")
                .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
                .filter(|doc| doc.get("kind").is_some());
            for mut object in documents {
                object["metadata"]["namespace"] = self.namespace.into();
                let api = Api::namespaced_with(
                    self.client.clone(),
                    self.namespace,
                    &api_resource(&object),
                );
                let object: DynamicObject = serde_json::from_value(object).unwrap();
                self.rt
                    .block_on(api.create(&PostParams::default(), &object))
                    .unwrap();
            }
        }
    }

    /// Creates examples/store-billing's `charges-db` in the test namespace.
    pub(crate) fn create_claim(&self) {
        let text = std::fs::read_to_string(example("store-billing").join("claims.yaml")).unwrap();
        let mut claim: Value = serde_saphyr::from_str(&text).unwrap();
        claim["metadata"]["namespace"] = self.namespace.into();
        assert_eq!(claim["metadata"]["name"], CLAIM);
        let claim: DynamicObject = serde_json::from_value(claim).unwrap();
        self.rt
            .block_on(self.claims().create(&PostParams::default(), &claim))
            .unwrap();
    }

    pub(crate) fn delete_claim(&self) {
        self.rt
            .block_on(self.claims().delete(CLAIM, &DeleteParams::default()))
            .unwrap();
    }

    pub(crate) fn claim(&self) -> Option<Value> {
        let claim = self.rt.block_on(self.claims().get_opt(CLAIM)).unwrap()?;
        Some(serde_json::to_value(claim).unwrap())
    }

    pub(crate) fn secret(&self) -> Option<Secret> {
        self.rt.block_on(self.secrets().get_opt(CLAIM)).unwrap()
    }

    /// Waits until the claim's condition `type_` has `status` (and `reason`, when given).
    pub(crate) fn wait_condition(&self, type_: &str, status: &str, reason: Option<&str>) -> Value {
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
    pub(crate) fn instance_id(&self) -> String {
        let id = std::fs::read_to_string(self.path("state/platform-id")).unwrap();
        format!("{CLAIM}.{}.{}", self.namespace, id.trim())
    }

    /// What PostgreSQL holds for every instance of this test's claim, whatever its platform id.
    pub(crate) fn pg_state(&self) -> (i64, i64, i64) {
        pg_state(&self.pg_prefix())
    }

    /// `mw_` and the readable part of the claim's instance ids (`broker::names`).
    pub(crate) fn pg_prefix(&self) -> String {
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

/// The API resource of an example object's kind.
fn api_resource(object: &Value) -> ApiResource {
    let kind = object["kind"].as_str().unwrap();
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap();
    let plural = match kind {
        "HTTPRoute" => "httproutes",
        _ => {
            api::crd::KINDS
                .iter()
                .find(|k| k.kind == kind)
                .unwrap()
                .plural
        }
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub(crate) fn condition<'a>(claim: &'a Value, type_: &str) -> Option<&'a Value> {
    claim["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub(crate) async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(config, &options)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// What the machine's PostgreSQL holds for the instances whose names start with `prefix`:
/// (databases, group roles, login roles that are members of those groups: one per binding).
pub(crate) fn pg_state(prefix: &str) -> (i64, i64, i64) {
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
