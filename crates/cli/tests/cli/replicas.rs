//! Issue 11's replicas, end to end: `examples/store-billing` runs billing with
//! `replicas: 2` — two apps, two sidecars, one identity — store's traffic reaches both, and
//! a replica whose app dies is restarted while `up` and the other replica keep serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Up, alive, children_of, eventually, example};

/// `POST http://billing/charges` through `outbound` (store's sidecar): status and the
/// replica that answered (the demo's `x-demo-replica` header).
fn charge(outbound: &str) -> (u16, Option<u16>) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "10"])
        .args(["-x", &format!("http://{outbound}"), "-X", "POST"])
        .arg("http://billing/charges")
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let replica = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-demo-replica")
            .then(|| value.trim().parse().ok())?
    });
    (status, replica)
}

/// Bursts of concurrent charges until both replicas have answered one (a balancer that
/// prefers the faster endpoint spreads load once requests overlap or estimates decay):
/// the replicas that answered `201`, and the statuses of the charges that failed.
fn replicas_answering(outbound: &str, limit: Duration) -> (BTreeSet<u16>, Vec<u16>) {
    let deadline = Instant::now() + limit;
    let (mut seen, mut failed) = (BTreeSet::new(), Vec::new());
    while seen.len() < 2 && Instant::now() < deadline {
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let outbound = outbound.to_owned();
                std::thread::spawn(move || charge(&outbound))
            })
            .collect();
        for answer in burst {
            match answer.join().expect("curl thread") {
                (201, replica) => {
                    seen.insert(replica.expect("every answer names its replica"));
                }
                (status, _) => failed.push(status),
            }
        }
    }
    (seen, failed)
}

/// The pid of the `meshwork demo billing` process of replica `replica` (not its guard)
/// under `up` (other tests run their own).
pub fn billing_app(up: &Up, replica: u16) -> Option<u32> {
    let wanted = format!("MESHWORK_REPLICA={replica}");
    // The app's parent is its guard, a child of `up`; the app itself names the guard.
    let guards = children_of(up.pid());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let under_up = guards.iter().any(|g| {
            env.split(|b| *b == 0)
                .any(|kv| kv == format!("MESHWORK_PARENT_PID={g}").as_bytes())
        });
        if !under_up {
            return None;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_app = args.get(1) == Some(&&b"demo"[..]) && args.get(2) == Some(&&b"billing"[..]);
        let ours = env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes());
        (is_app && ours && alive(pid)).then_some(pid)
    })
}

#[test]
fn store_billing_traffic_reaches_both_billing_replicas() {
    let up = Up::start(&example("store-billing"));
    let (zero, one) = (
        up.ready_replica("billing", 0),
        up.ready_replica("billing", 1),
    );
    assert_ne!(
        zero["inbound"], one["inbound"],
        "each replica has its own sidecar"
    );
    assert_eq!(
        zero["spiffe_id"], one["spiffe_id"],
        "and the workload's one identity"
    );
    assert_eq!(zero["app_listening"], true);
    assert_eq!(one["app_listening"], true);

    let store = up.ready("store")["outbound"].as_str().unwrap().to_owned();
    let (seen, failed) = replicas_answering(&store, Duration::from_secs(30));
    assert_eq!(seen, BTreeSet::from([0, 1]), "not every replica answered");
    assert!(failed.is_empty(), "charges failed: {failed:?}");

    // `exec --replica 1` goes through replica 1's sidecar.
    let out = up.exec_replica(
        "billing",
        1,
        &["sh", "-c", "echo $http_proxy $MESHWORK_REPLICA"],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let expected = format!("http://{} 1", one["outbound"].as_str().unwrap());
    assert_eq!(printed.trim(), expected, "{out:?}");
    let out = up.exec_replica("billing", 2, &["true"]);
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && error.contains("no replica 2"),
        "{error}"
    );
    let out = up.exec("biling", &["true"]);
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("billing (2 replicas)"), "{error}");
}

#[test]
fn a_dead_replica_is_restarted_while_the_other_serves() {
    let mut up = Up::start(&example("store-billing"));
    let store = up.ready("store")["outbound"].as_str().unwrap().to_owned();
    let pid = billing_app(&up, 1).expect("replica 1's app runs");
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let line = up.wait_for_line("[up] billing-1/app exited", Duration::from_secs(20));
    assert!(line.contains("restarting it"), "{line}");
    eventually(
        "replica 1's app to be back",
        Duration::from_secs(30),
        || billing_app(&up, 1).is_some_and(|new| new != pid),
    );
    assert!(
        up.child.try_wait().expect("try_wait").is_none(),
        "up stopped"
    );
    // Until its sidecar sees the new app listen, replica 1 may answer 503 (callers'
    // retries are not part of this test); then it answers again.
    let (seen, _) = replicas_answering(&store, Duration::from_secs(30));
    assert_eq!(
        seen,
        BTreeSet::from([0, 1]),
        "the restarted replica does not answer"
    );
}
