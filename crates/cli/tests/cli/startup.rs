//! Startup order under `meshwork up`: a sidecar serves before its app listens, so until
//! the app opens its port callers get a retryable `503 app_starting` (never a `502`), the
//! sidecar is not ready, and `up` does not print `ready`; an app that never listens stops
//! `up` with an error naming the workload.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::harness::{Up, eventually};

const MESH: &str = "apiVersion: meshwork.dev/v1alpha1
kind: Mesh
metadata:
  name: startup
spec:
  trustDomain: meshwork.local
";

/// `billing` opens its port only once `gate` exists; `store` calls it.
fn gated_billing(dir: &Path, gate: &Path) {
    let meshwork = env!("CARGO_BIN_EXE_meshwork");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; exec '{meshwork}' demo billing",
        gate.display()
    );
    let workloads = format!(
        "apiVersion: meshwork.dev/v1alpha1
kind: Workload
metadata:
  name: billing
  labels:
    app: billing
spec:
  command: [sh, -c, {script:?}]
---
apiVersion: meshwork.dev/v1alpha1
kind: Workload
metadata:
  name: store
  labels:
    app: store
spec:
  command: [meshwork, demo, store]
---
apiVersion: meshwork.dev/v1alpha1
kind: Service
metadata:
  name: billing
spec:
  selector:
    app: billing
  routes: [\"/healthz\"]
"
    );
    std::fs::write(dir.join("mesh.yaml"), MESH).unwrap();
    std::fs::write(dir.join("workloads.yaml"), workloads).unwrap();
}

/// One HTTP/1.1 exchange (`Connection: close`): status, lower-cased head, body.
fn exchange(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// `GET url` on `addr`: an absolute URL through a proxy names its host; a path goes to `addr`
/// itself (the admin listener answers only loopback hosts).
fn get(addr: SocketAddr, url: &str) -> (u16, String, String) {
    let host = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .map_or_else(|| addr.to_string(), str::to_owned);
    exchange(
        addr,
        &format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

fn addr(ready: &serde_json::Value, key: &str) -> SocketAddr {
    ready[key].as_str().unwrap().parse().unwrap()
}

fn ready_file(up: &Up, workload: &str) -> Option<serde_json::Value> {
    let path = up
        .state
        .path()
        .join("workloads")
        .join(format!("{workload}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[test]
fn callers_get_a_retryable_503_until_the_app_listens_and_up_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    gated_billing(dir.path(), &gate);
    let up = Up::spawn(dir.path(), &[]);
    eventually("both sidecars to be up", Duration::from_secs(60), || {
        ready_file(&up, "store").is_some() && ready_file(&up, "billing").is_some()
    });
    let outbound = addr(&ready_file(&up, "store").unwrap(), "outbound");
    let billing = ready_file(&up, "billing").unwrap();
    assert_eq!(billing["app_listening"], false, "{billing}");

    // Until store's sidecar has billing's endpoint it says so (a 502 from side "peer");
    // billing's sidecar itself must answer 503, never 502.
    let mut refusals = 0;
    eventually(
        "three 503s from billing's sidecar",
        Duration::from_secs(30),
        || {
            let (status, head, body) = get(outbound, "http://billing/healthz");
            let error: serde_json::Value = serde_json::from_str(&body).unwrap();
            match status {
                503 => {
                    assert_eq!(error["error"], "app_starting", "{body}");
                    assert_eq!(error["side"], "upstream", "{body}");
                    assert_eq!(error["retryable"], true, "{body}");
                    assert!(head.contains("\r\nretry-after: 1"), "{head}");
                    refusals += 1;
                }
                502 => assert_eq!(error["side"], "peer", "{body}"),
                _ => panic!("{status}: {body}"),
            }
            refusals >= 3
        },
    );
    let admin = addr(&billing, "admin");
    assert_eq!(get(admin, "/ready").0, 503);
    let early: Vec<String> = up.output.try_iter().collect();
    assert!(
        !early.iter().any(|line| line.contains("[up] ready")),
        "up printed ready before billing's app listened"
    );

    std::fs::File::create(&gate).unwrap();
    up.wait_for_line("[up] ready", Duration::from_secs(60));
    assert_eq!(ready_file(&up, "billing").unwrap()["app_listening"], true);
    assert_eq!(get(admin, "/ready").0, 200);
    let (status, _, body) = get(outbound, "http://billing/healthz");
    assert_eq!(status, 200, "{body}");

    let (_, _, metrics) = get(admin, "/metrics");
    assert!(
        metrics.contains("status_code=\"503\""),
        "the 503s are not in billing's metrics:\n{metrics}"
    );
    assert!(
        !metrics.contains("status_code=\"502\""),
        "a 502 is in billing's metrics:\n{metrics}"
    );
}
