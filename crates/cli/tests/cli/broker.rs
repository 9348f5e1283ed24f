//! Issue 5's delivery side, end to end: `meshwork up examples/store-billing` provisions the
//! `charges-db` claim through a real `meshwork broker` (a private PostgreSQL cluster under the
//! state directory), delivers the binding to billing only, billing's charges land in that
//! database, restarts keep the data and rotate the credential, and `meshwork claims delete`
//! leaves no database or user behind.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::curl_json;
use crate::harness::{Up, children_of, example, meshwork};

const STORE_ID: &str = "spiffe://meshwork.local/ns/default/sa/store";

/// `meshwork up dir --state-dir state`, every output line also kept in the returned log.
fn up_in(dir: &Path, state: tempfile::TempDir) -> (Up, Arc<Mutex<Vec<String>>>) {
    let mut child = meshwork()
        .arg("up")
        .arg(dir)
        .arg("--state-dir")
        .arg(state.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshwork up");
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let streams: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for stream in streams {
        let (tx, log) = (tx.clone(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("{line}");
                log.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
    }
    let up = Up {
        child,
        state,
        output: rx,
    };
    up.wait_for_line("[up] ready", Duration::from_secs(90));
    (up, log)
}

fn charge(up: &Up) -> serde_json::Value {
    let args = [
        "curl",
        "-sS",
        "-X",
        "POST",
        "-d",
        "{\"amount\":4200}",
        "-w",
        "\n%{http_code}",
        "http://billing/charges",
    ];
    let (code, json) = curl_json(&up.exec("store", &args));
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["stored_in"], "postgresql", "{json}");
    json
}

fn binding_dir(state: &Path) -> PathBuf {
    state.join("bindings/billing/charges-db")
}

fn entry(state: &Path, key: &str) -> String {
    std::fs::read_to_string(binding_dir(state).join(key)).unwrap()
}

/// The servicebinding.io files: exactly the expected keys, files 0600, directories 0700.
fn check_binding_files(state: &Path) {
    let dir = binding_dir(state);
    let keys: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want = [
        "database", "host", "password", "port", "provider", "type", "uri", "username",
    ];
    assert_eq!(keys, want.iter().map(|s| s.to_string()).collect());
    for key in &keys {
        let mode = dir.join(key).metadata().unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    for d in [
        dir.clone(),
        state.join("bindings/billing"),
        state.join("bindings"),
    ] {
        assert_eq!(
            d.metadata().unwrap().mode() & 0o777,
            0o700,
            "{}",
            d.display()
        );
    }
    assert_eq!(entry(state, "type"), "postgresql");
    assert_eq!(entry(state, "provider"), "postgres-private");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The row billing wrote, read back with the binding's own credentials.
fn row(uri: &str, id: i64) -> (i64, String) {
    runtime().block_on(async {
        let db = connect(uri).await.expect("connect with the binding");
        let r = db
            .query_one("SELECT amount, caller FROM charges WHERE id = $1", &[&id])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    })
}

/// The private cluster's directory: `<state>/postgres-private`, or where its `location` file
/// says (as root, when `postgres` cannot traverse to the state directory).
fn cluster_dir(state: &Path) -> PathBuf {
    let home = state.join("postgres-private");
    match std::fs::read_to_string(home.join("location")) {
        Ok(text) => PathBuf::from(text.trim()),
        Err(_) => home,
    }
}

/// `meshwork broker purge` on `state`: removes what the store records, and a cluster kept
/// outside the state directory (which removing the temporary directory would leak).
fn purge(state: &Path, resources: &Path) {
    let out = meshwork()
        .args(["broker", "purge", "--state"])
        .arg(state.join("broker.redb"))
        .arg("--resources")
        .arg(resources)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "purge: {stderr}");
}

/// Databases and roles the broker made (`mw_…`), seen by the private cluster's superuser.
fn leftovers(state: &Path) -> Vec<String> {
    let dir = cluster_dir(state);
    let port = std::fs::read_to_string(dir.join("port")).unwrap();
    let pw = std::fs::read_to_string(dir.join("superuser.pw")).unwrap();
    let url = format!(
        "postgresql://postgres:{}@127.0.0.1:{}/postgres",
        pw.trim(),
        port.trim()
    );
    runtime().block_on(async {
        let db = connect(&url).await.expect("connect as superuser");
        let sql = "SELECT datname::text FROM pg_database WHERE datname LIKE 'mw\\_%' \
                   UNION ALL SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'mw\\_%'";
        let rows = db.query(sql, &[]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    })
}

/// Environment variables of `up`'s children whose command line contains `needle`.
fn env_of_child(up: &Up, needle: &str) -> Vec<String> {
    let pid = children_of(up.pid())
        .into_iter()
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        })
        .unwrap_or_else(|| panic!("no child running {needle:?}"));
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    env.split(|b| *b == 0)
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

fn has_var(env: &[String], var: &str) -> bool {
    env.iter().any(|kv| kv.starts_with(&format!("{var}=")))
}

/// First run: the charge is a row of the database the broker chose, written with billing's
/// binding; only billing's app holds the credentials; nothing printed them. Returns the row id.
fn first_run(up: &Up, log: &Arc<Mutex<Vec<String>>>) -> i64 {
    let s = up.state.path();
    check_binding_files(s);
    let first = charge(up);
    let uri = entry(s, "uri");
    assert!(
        uri.ends_with(&format!("/{}", entry(s, "database"))),
        "{uri}"
    );
    let id = first["row_id"].as_i64().unwrap();
    assert_eq!(row(&uri, id), (4200, STORE_ID.to_owned()));
    let billing = env_of_child(up, "demo billing");
    assert!(billing.contains(&format!("DATABASE_URL={uri}")));
    assert!(billing.contains(&format!("CHARGES_DB_URL={uri}")));
    let root = format!(
        "SERVICE_BINDING_ROOT={}",
        s.join("bindings/billing").display()
    );
    assert!(billing.contains(&root));
    for other in ["demo store", "demo reporting", "--workload billing"] {
        let env = env_of_child(up, other);
        assert!(!has_var(&env, "DATABASE_URL"), "{other} got DATABASE_URL");
        assert!(!has_var(&env, "SERVICE_BINDING_ROOT"), "{other}");
    }
    assert_never_printed(s, log);
    id
}

fn assert_never_printed(state: &Path, log: &Arc<Mutex<Vec<String>>>) {
    let password = entry(state, "password");
    assert!(password.len() >= 16);
    assert!(!log.lock().unwrap().iter().any(|l| l.contains(&password)));
}

fn claims_delete(state: &Path, extra: &[&str]) -> std::process::Output {
    meshwork()
        .args(["claims", "delete"])
        .arg(example("store-billing"))
        .arg("charges-db")
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .output()
        .unwrap()
}

/// Deprovisioning while billing runs is refused (billing would lose its database); with
/// `--force` (through the running up's broker) it leaves no database, user or file.
fn delete_leaves_nothing(state: &Path) {
    assert!(!leftovers(state).is_empty());
    let uri = entry(state, "uri");
    let refused = claims_delete(state, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "deleted a claim in use: {stderr}"
    );
    assert!(
        stderr.contains("claim charges-db is bound to workload billing, which is running")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        runtime().block_on(connect(&uri)).is_ok(),
        "the database is untouched"
    );
    let out = claims_delete(state, &["--force"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("charges-db: deprovisioned"), "{stdout}");
    assert_eq!(leftovers(state), Vec::<String>::new());
    assert!(!binding_dir(state).exists());
    assert!(runtime().block_on(connect(&uri)).is_err());
}

#[test]
fn billing_charges_land_in_the_claimed_database() {
    let (mut up, log) = up_in(&example("store-billing"), tempfile::tempdir().unwrap());
    let s = up.state.path().to_owned();
    let id = first_run(&up, &log);
    let uri = entry(&s, "uri");

    // A restart keeps the instance (and the data) and rotates the credential.
    let status = up.signal_and_wait("TERM", Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let state = std::mem::replace(&mut up.state, tempfile::tempdir().unwrap());
    drop(up);
    let (mut up, log) = up_in(&example("store-billing"), state);
    let second = charge(&up);
    assert!(second["row_id"].as_i64().unwrap() > id, "{second}");
    let new_uri = entry(&s, "uri");
    assert_ne!(new_uri, uri, "the binding was rotated");
    assert_eq!(row(&new_uri, id), (4200, STORE_ID.to_owned()));
    let old = runtime().block_on(connect(&uri));
    assert!(old.is_err(), "the previous credential still works");
    assert_never_printed(&s, &log);

    delete_leaves_nothing(&s);
    // Stop before the state directory goes: the broker stops its PostgreSQL cluster first.
    let status = up.signal_and_wait("TERM", Duration::from_secs(20));
    assert!(status.success(), "{status}");
    purge(&s, &example("store-billing"));
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Issue 9: root clones into a 0700 directory (its home; `mktemp -d`), where `postgres` cannot
/// traverse. `up` still works: the private cluster lives outside (postgres-owned), no
/// directory of the user's changes mode, and deleting the last claim removes the cluster.
#[test]
fn up_as_root_from_a_0700_directory() {
    if !is_root() {
        eprintln!("SKIP up_as_root_from_a_0700_directory: needs root (CI runs as root)");
        return;
    }
    // `mktemp -d` under root's home: both 0700.
    let private = || {
        let mut b = tempfile::Builder::new();
        b.permissions(std::fs::Permissions::from_mode(0o700));
        b
    };
    let parent = private().tempdir().unwrap();
    let work = private().tempdir_in(parent.path()).unwrap();
    for dir in [parent.path(), work.path()] {
        assert_eq!(dir.metadata().unwrap().mode() & 0o777, 0o700);
    }
    for entry in std::fs::read_dir(example("store-billing")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), work.path().join(entry.file_name())).unwrap();
    }
    let state = private()
        .prefix(".meshwork")
        .tempdir_in(work.path())
        .unwrap();
    let s = state.path().to_owned();
    // Declared before `up`, so dropped after it (and after the state directory).
    let mut cleanup = RemoveOnDrop(None);
    let (mut up, _log) = up_in(work.path(), state);
    let first = charge(&up);
    let id = first["row_id"].as_i64().unwrap();
    assert_eq!(row(&entry(&s, "uri"), id), (4200, STORE_ID.to_owned()));
    let outside = cluster_dir(&s);
    assert!(
        outside.starts_with("/var/lib/meshwork/postgres-private/"),
        "{}",
        outside.display()
    );
    cleanup.0 = Some(outside.clone());
    for dir in [parent.path(), work.path(), s.as_path()] {
        let mode = dir.metadata().unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} was chmod-ed", dir.display());
    }
    let status = up.signal_and_wait("TERM", Duration::from_secs(20));
    assert!(status.success(), "{status}");
    // Deleting the last claim (no `up` running) removes the cluster kept outside too.
    let out = meshwork()
        .args(["claims", "delete"])
        .arg(work.path())
        .arg("charges-db")
        .arg("--state-dir")
        .arg(&s)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("charges-db: deprovisioned"), "{stdout}");
    assert!(
        !outside.exists(),
        "claims delete leaves {}",
        outside.display()
    );
    assert!(!s.join("postgres-private/location").exists());
}

/// Removes the cluster kept outside the state directory if the test ends before its purge
/// (by a panic), so a failed run does not leave it in /var/lib.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn a_claim_for_a_missing_workload_is_reported_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "mesh.yaml",
        "services.yaml",
        "workloads.yaml",
        "taxonomy.yaml",
    ] {
        std::fs::copy(example("store-billing").join(f), dir.path().join(f)).unwrap();
    }
    let claim = "apiVersion: meshwork.dev/v1alpha1\nkind: ServiceClaim\nmetadata:\n  name: db\nspec:\n  class: postgresql\n  size: large\n  bindTo: payroll\n";
    std::fs::write(dir.path().join("zz-claims.yaml"), claim).unwrap();
    let out = meshwork().arg("validate").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "zz-claims.yaml:8:3: ServiceClaim/db field `spec.bindTo`: \"payroll\" names no Workload"
        ),
        "{err}"
    );
    assert!(
        err.contains("field `spec.size`: ServiceClass postgresql offers no size large"),
        "{err}"
    );
}

#[test]
fn a_policy_naming_an_unknown_provider_is_refused_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let taxonomy = std::fs::read_to_string(example("store-billing").join("taxonomy.yaml")).unwrap();
    let bad = taxonomy.replace("provider: postgres-private", "provider: rds-aurora");
    std::fs::write(dir.path().join("taxonomy.yaml"), bad).unwrap();
    let out = meshwork()
        .args(["broker", "--listen", "127.0.0.1:0", "--resources"])
        .arg(dir.path())
        .arg("--state")
        .arg(dir.path().join("broker.redb"))
        .env("MESHWORK_BROKER_USERNAME", "platform")
        .env("MESHWORK_BROKER_PASSWORD", "not-on-argv")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("taxonomy.yaml:")
            && err.contains(
                "ServicePolicy/store-billing field `spec.rules[name=dev-postgresql].provider`"
            )
            && err.contains("no provider named \"rds-aurora\""),
        "{err}"
    );
    assert!(!err.contains("not-on-argv"));
}

/// A broker killed outright (`kill -9`, or a second Ctrl-C) cannot stop its private
/// PostgreSQL cluster, whose postmaster `pg_ctl` started in a session of its own (so in no
/// process group `up` signals): `up`, which then stops everything, must stop it too, so that
/// nothing outlives `up`.
#[test]
fn a_killed_broker_leaves_no_private_postgres_running() {
    let (mut up, log) = up_in(&example("store-billing"), tempfile::tempdir().unwrap());
    let s = up.state.path().to_owned();
    let pid_file = cluster_dir(&s).join("data/postmaster.pid");
    let postmaster: u32 = std::fs::read_to_string(&pid_file)
        .expect("postmaster.pid of the private cluster")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid on postmaster.pid's first line");
    assert!(crate::harness::alive(postmaster));
    let broker = children_of(up.pid())
        .into_iter()
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("\0broker\0--listen")
        })
        .expect("the broker among up's children");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &broker.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = up.wait_exit(Duration::from_secs(60));
    assert!(
        !status.success(),
        "a dead broker stops up with an error: {status}"
    );
    assert!(
        !crate::harness::alive(postmaster),
        "the private cluster's postmaster {postmaster} outlived up"
    );
    assert!(!pid_file.exists(), "the cluster was not shut down cleanly");
    let printed = log.lock().unwrap().join("\n");
    assert!(
        printed.contains("stopped the private PostgreSQL cluster the broker left running"),
        "{printed}"
    );
    purge(&s, &example("store-billing"));
}
