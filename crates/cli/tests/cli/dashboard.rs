//! The dashboard (`meshwork dashboard`, started by `up`) against a running
//! `examples/store-billing` with traffic: its JSON endpoints, then the page in a real
//! headless browser (Debian's `chromium` driven by npm's `playwright-core`, both installed
//! by `.ci/run`; `tests/browser/dashboard.mjs`), which must show the services, the
//! store → billing edge with its success rate, and a denial appearing without a reload.
//! The browser part is skipped with a message where node, chromium or playwright-core is
//! missing, and fails under `CI=true`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::curl_json;
use crate::harness::{Up, eventually, example, meshwork};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `GET http://addr/path` as JSON, with curl (no proxy: the dashboard is on loopback).
fn api(addr: &str, path: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", &format!("http://{addr}{path}")])
        .output()
        .expect("run curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{path}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn post(up: &Up, workload: &str, url: &str) -> (u16, serde_json::Value) {
    curl_json(&up.exec(
        workload,
        &["curl", "-sS", "-X", "POST", "-w", "\n%{http_code}", url],
    ))
}

/// node, chromium and playwright-core, or why not.
struct Browser {
    chromium: PathBuf,
    node_modules: PathBuf,
}

impl Browser {
    fn find() -> Result<Browser, String> {
        let node = Command::new("node").arg("--version").output();
        if !node.is_ok_and(|o| o.status.success()) {
            return Err("node is not installed".into());
        }
        let chromium = std::env::var_os("MESHWORK_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        if !chromium.exists() {
            return Err(format!(
                "no browser at {} (apt-get install chromium)",
                chromium.display()
            ));
        }
        let node_modules = repo().join(".ci/node/node_modules");
        if !node_modules.join("playwright-core").exists() {
            return Err(format!(
                "playwright-core is not in {} (npm install --prefix .ci/node playwright-core@1.65.2)",
                node_modules.display()
            ));
        }
        Ok(Browser {
            chromium,
            node_modules,
        })
    }

    fn find_or_skip() -> Option<Browser> {
        match Browser::find() {
            Ok(b) => Some(b),
            Err(why) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "the browser test cannot run: {why}; .ci/run installs what it needs"
                );
                eprintln!("SKIPPED: the dashboard's browser test: {why}; this part did not run");
                None
            }
        }
    }
}

#[test]
fn the_dashboard_shows_the_mesh_and_its_denials_live_in_a_browser() {
    let up = Up::start(&example("store-billing"));
    let addr = std::fs::read_to_string(up.state.path().join("dashboard.addr"))
        .expect("up wrote the dashboard's address");
    for _ in 0..5 {
        let (code, json) = post(&up, "store", "http://billing/charges");
        assert_eq!(code, 201, "{json}");
    }
    // Its JSON first: the numbers are the sidecars' (five charges, all answered).
    eventually(
        "the dashboard to see store's five charges",
        Duration::from_secs(20),
        || {
            let graph = api(&addr, "/api/graph");
            graph["edges"].as_array().unwrap().iter().any(|e| {
                e["from"] == "store"
                    && e["to"] == "billing"
                    && e["requests"] == 5
                    && e["success_rate"] == 1.0
            })
        },
    );
    let graph = api(&addr, "/api/graph");
    let nodes: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    // The four workloads, and billing's calls to Stripe out of the mesh.
    assert_eq!(
        nodes,
        ["billing", "egress", "reporting", "store", "stripe"],
        "{graph}"
    );
    let services = api(&addr, "/api/services");
    let billing = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "billing")
        .expect("billing");
    let charges = billing["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/charges")
        .expect("/charges");
    assert_eq!(
        (charges["method"].as_str(), charges["requests"].as_u64()),
        (Some("POST"), Some(5)),
        "{services}"
    );
    let identities = api(&addr, "/api/identities");
    assert_eq!(
        identities["identities"].as_array().unwrap().len(),
        5,
        "{identities}"
    );
    assert!(
        identities["identities"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["svid_expiry"].as_i64() > identities["now"].as_i64()),
        "{identities}"
    );
    let claims = api(&addr, "/api/claims");
    assert_eq!(claims["claims"][0]["claim"], "charges-db", "{claims}");
    assert_eq!(
        claims["claims"][0]["labels"]["meshwork.dev/environment"], "dev",
        "{claims}"
    );

    match Browser::find_or_skip() {
        Some(browser) => in_the_browser(&up, &addr, &browser),
        None => {
            let (code, json) = post(&up, "reporting", "http://billing/charges");
            assert_eq!(code, 403, "{json}");
            assert_denial_listed(&addr, &json);
        }
    }
}

/// The denial the 403 `body` names is in `/api/denials`, with the 403's policy and rule.
fn assert_denial_listed(addr: &str, body: &serde_json::Value) {
    let id = body["decision_id"].as_str().expect("decision id");
    eventually(
        "the denial in /api/denials",
        Duration::from_secs(20),
        || {
            api(addr, "/api/denials")["denials"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["decision_id"] == id)
        },
    );
    let denials = api(addr, "/api/denials");
    let d = denials["denials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["decision_id"] == id)
        .unwrap();
    assert_eq!(
        (&d["caller_workload"], &d["service"], &d["route"]),
        (&"reporting".into(), &"billing".into(), &"/charges".into()),
        "{d}"
    );
    assert_eq!(
        (&d["policy"], &d["rule"]),
        (&body["policy"], &body["rule"]),
        "{d} vs {body}"
    );
}

fn in_the_browser(up: &Up, addr: &str, browser: &Browser) {
    let screenshot = repo().join("target/dashboard.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&screenshot);
    let mut node = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs"))
        .arg(format!("http://{addr}/"))
        .arg(&screenshot)
        .env("MESHWORK_CHROMIUM", &browser.chromium)
        .env("MESHWORK_NODE_MODULES", &browser.node_modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // node's stderr, read aside (a full pipe would block it) and shown on failure.
    let mut err_pipe = node.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut text);
        text
    });
    let mut steps = BufReader::new(node.stdout.take().unwrap()).lines();
    let first = steps.next().and_then(Result::ok).unwrap_or_default();
    if !first.contains("waiting-for-denial") {
        let _ = node.kill();
        let _ = node.wait();
        panic!(
            "the page did not load: {first:?}; node's stderr:\n{}",
            stderr.join().unwrap_or_default()
        );
    }

    // reporting's forbidden call, while the page stays open.
    let (code, body) = post(up, "reporting", "http://billing/charges");
    assert_eq!(code, 403, "{body}");
    assert_denial_listed(addr, &body);
    let denial = serde_json::json!({
        "decision_id": body["decision_id"], "policy": body["policy"], "rule": body["rule"],
    });
    let mut stdin = node.stdin.take().unwrap();
    // node may have died already (a broken pipe): its stderr says why, below.
    let written = writeln!(stdin, "{denial}");
    let rest: Vec<String> = steps.map_while(Result::ok).collect();
    let status = node.wait().expect("wait for node");
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        status.success() && written.is_ok(),
        "the browser test failed ({status}, writing the denial: {written:?}): {rest:?}; \
         node's stderr:\n{stderr}"
    );
    assert!(rest.iter().any(|l| l.contains("\"done\"")), "{rest:?}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}

#[test]
fn the_dashboard_serves_on_loopback_only() {
    let state = tempfile::tempdir().unwrap();
    let out = meshwork()
        .args(["dashboard", "--listen", "0.0.0.0:0", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("run meshwork dashboard");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen 0.0.0.0:0") && err.contains("loopback"),
        "{err}"
    );
}
