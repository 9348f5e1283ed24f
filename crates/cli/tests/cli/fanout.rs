//! `bench/fanout`'s tool as a smoke test: 100 simulated sidecars long-poll a real
//! `meshwork control`, two policy changes are made through its resource directory, and
//! every sidecar must see each one (the tool exits 1 if any misses one).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{eventually, meshwork};
use crate::policy::example_copy;

#[test]
fn a_policy_change_reaches_every_simulated_sidecar() {
    let resources = example_copy();
    let state = tempfile::tempdir().expect("tempdir");
    let mut control = meshwork()
        .arg("control")
        .arg("--resources")
        .arg(resources.path())
        .arg("--state-dir")
        .arg(state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("meshwork control");
    let socket = state.path().join("control.sock");
    eventually("the control socket", Duration::from_secs(20), || {
        socket.exists()
    });
    let report = state.path().join("fanout.json");
    let out = meshwork()
        .arg("fanout")
        .arg("--socket")
        .arg(&socket)
        .args(["--sidecars", "100", "--rounds", "2", "--idle-secs", "0"])
        .arg("--resources")
        .arg(resources.path())
        .args(["--control-pid", &control.id().to_string()])
        .arg("--json")
        .arg(&report)
        .output()
        .expect("meshwork fanout");
    let _ = control.kill();
    let _ = control.wait();
    assert!(
        out.status.success(),
        "fanout failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["sidecars"], 100);
    assert_eq!(report["missed"], 0, "{report:#}");
    let versions: Vec<u64> = report["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert!(
        versions.len() == 2 && versions[0] < versions[1],
        "each change is a new version: {versions:?}"
    );
    let per_proxy = report["control"]["rss_per_proxy_kib"].as_f64().unwrap();
    assert!(per_proxy > 0.0, "{report:#}");
}
