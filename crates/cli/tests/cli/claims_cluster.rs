//! The setup of the `ServiceClaim`-as-Secret tests (`kubernetes_claims.rs`): the fake API
//! server, a real `meshwork broker` (store-billing's taxonomy, dev on the machine's
//! PostgreSQL), the claims controller process, and what PostgreSQL holds for a claim.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::Value;

use crate::harness::{example, meshwork};
use crate::kube_cluster::{Cluster, Spawned, free_port, objects_of};
use testkit::kube_fake::{FakeRequest, FakeResource, FakeVerb, meshwork_resources};

pub(crate) const CLAIM: &str = "charges-db";
pub(crate) const PASSWORD: &str = "kube-claims-test-password";
pub(crate) const DEADLINE: Duration = Duration::from_secs(90);

pub(crate) fn pg_admin_url() -> String {
    std::env::var("MESHWORK_BROKER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The broker, the controller's state and the cluster of one test.
pub(crate) struct Setup {
    /// The claim's namespace, different in each test: the first letters of the instance ids
    /// (and so of database names) differ, so a test counts every database of its claim.
    pub(crate) namespace: &'static str,
    dir: tempfile::TempDir,
    port: u16,
    pub(crate) cluster: Cluster,
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
        Setup::build(namespace, edit, &meshwork_resources())
    }

    /// A setup whose broker provisions asynchronously (store-billing's `dev` rule made
    /// `asynchronous`): the controller polls `last_operation`.
    pub(crate) fn asynchronous(namespace: &'static str) -> Setup {
        Setup::with_taxonomy(namespace, |taxonomy| {
            let sync = "      cascadeDelete: true\n";
            assert!(taxonomy.contains(sync), "the dev rule");
            taxonomy.replacen(
                sync,
                "      cascadeDelete: true\n      asynchronous: true\n",
                1,
            )
        })
    }

    /// Waits until the broker has created the claim's database and its owner role (and no
    /// binding user yet): an operation held after that step.
    pub(crate) fn wait_database_created(&self) {
        let deadline = Instant::now() + DEADLINE;
        while self.pg_state() != (1, 1, 0) {
            assert!(
                Instant::now() < deadline,
                "the broker never created the database"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A setup whose fake API server serves `resources` (e.g. a looser ServiceClaim schema).
    pub(crate) fn serving(namespace: &'static str, resources: &[FakeResource]) -> Setup {
        Setup::build(namespace, |t| t, resources)
    }

    fn build(
        namespace: &'static str,
        edit: impl FnOnce(String) -> String,
        resources: &[FakeResource],
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
        let cluster = Cluster::serving(&dir.path().join("kubeconfig"), resources);
        Setup {
            namespace,
            dir,
            port: free_port(),
            cluster,
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn broker(&self) -> Spawned {
        self.broker_held(None)
    }

    /// The broker, its operations held forever at progress step `hold` if given (the broker's
    /// crash-test seam).
    pub(crate) fn broker_held(&self, hold: Option<&str>) -> Spawned {
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
        let broker = Spawned::start("broker", &mut cmd);
        broker.lines_until("listening on", DEADLINE);
        broker
    }

    pub(crate) fn controller(&self, hold: Option<&str>) -> Spawned {
        self.controller_in("state", hold)
    }

    /// A controller whose state directory is `state` under the test's directory (another one
    /// than `state` has another platform id: a lost volume, or a second replica).
    pub(crate) fn controller_in(&self, state: &str, hold: Option<&str>) -> Spawned {
        let mut cmd = meshwork();
        cmd.args(["control", "--kubernetes", "--namespace", self.namespace])
            .arg("--kubeconfig")
            .arg(self.path("kubeconfig"))
            .arg("--state-dir")
            .arg(self.path(state))
            .args(["--broker-url", &format!("http://127.0.0.1:{}", self.port)])
            .arg("--broker-password-file")
            .arg(self.path("broker.password"))
            .args(["--environment", "dev", "--claims-recheck", "1s"])
            .args(["--claims-backoff-max", "2s"]);
        if let Some(step) = hold {
            cmd.args(["--test-hold-at-step", step]);
        }
        Spawned::start("controller", &mut cmd)
    }

    pub(crate) fn claims(&self) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: "meshwork.dev".into(),
            version: "v1alpha1".into(),
            api_version: "meshwork.dev/v1alpha1".into(),
            kind: "ServiceClaim".into(),
            plural: "serviceclaims".into(),
        };
        Api::namespaced_with(self.cluster.client.clone(), self.namespace, &resource)
    }

    pub(crate) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.cluster.client.clone(), self.namespace)
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
        for mut object in files.into_iter().flat_map(objects_of) {
            object["metadata"]["namespace"] = self.namespace.into();
            self.cluster.create(&object);
        }
    }

    /// Creates examples/store-billing's `charges-db` in the test namespace.
    pub(crate) fn create_claim(&self) {
        let text = std::fs::read_to_string(example("store-billing").join("claims.yaml")).unwrap();
        let mut claim: Value = serde_saphyr::from_str(&text).unwrap();
        claim["metadata"]["namespace"] = self.namespace.into();
        assert_eq!(claim["metadata"]["name"], CLAIM);
        let claim: DynamicObject = serde_json::from_value(claim).unwrap();
        self.cluster
            .rt
            .block_on(self.claims().create(&PostParams::default(), &claim))
            .unwrap();
    }

    pub(crate) fn delete_claim(&self) {
        self.cluster
            .rt
            .block_on(self.claims().delete(CLAIM, &DeleteParams::default()))
            .unwrap();
    }

    pub(crate) fn claim(&self) -> Option<Value> {
        let claim = self
            .cluster
            .rt
            .block_on(self.claims().get_opt(CLAIM))
            .unwrap()?;
        Some(serde_json::to_value(claim).unwrap())
    }

    pub(crate) fn secret(&self) -> Option<Secret> {
        self.cluster
            .rt
            .block_on(self.secrets().get_opt(CLAIM))
            .unwrap()
    }

    /// Merge-patches the claim (`metadata`, `spec`).
    pub(crate) fn patch_claim(&self, patch: &Value) {
        self.cluster
            .rt
            .block_on(self.claims().patch(
                CLAIM,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            ))
            .unwrap();
    }

    /// Waits until the controller has read the claim's Secret `rechecks` more times (each
    /// reconcile reads it), and returns what the controllers asked the API server meanwhile.
    pub(crate) fn wait_rechecks(&self, rechecks: usize) -> Vec<FakeRequest> {
        let start = self.cluster.fake.requests().len();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let window = self.cluster.fake.requests().split_off(start);
            let reads = window
                .iter()
                .filter(|r| {
                    r.verb == FakeVerb::Get
                        && r.resource == "secrets"
                        && r.name.as_deref() == Some(CLAIM)
                })
                .count();
            if reads >= rechecks {
                return window;
            }
            assert!(Instant::now() < deadline, "only {reads} rechecks");
            std::thread::sleep(Duration::from_millis(100));
        }
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
        self.cluster.rt.block_on(async {
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

pub(crate) fn condition<'a>(claim: &'a Value, type_: &str) -> Option<&'a Value> {
    claim["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
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
