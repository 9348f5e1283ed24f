//! `up --etcd … --control-replicas 3`: three control-plane processes sharing a 3-member
//! etcd cluster (real `etcd` processes on loopback; skipped with a message when Debian's
//! etcd-server is missing, failed under CI=true). The "done when": killing the
//! replica the agent is attached to (kill -9) loses no request; the agent moves to another
//! replica; SVID renewal and a policy edit succeed through the survivors; one etcd member
//! down changes nothing; two down make writes fail cleanly while requests keep flowing;
//! writes come back with the members.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::etcd::EtcdCluster;

use crate::harness::{Up, children_of, eventually, example};
use crate::identity::{charge, run};
use crate::policy::OPEN_CHARGES;

/// The example with 10 s SVIDs, so renewals happen within the test.
fn short_svids() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(example("store-billing")).expect("example") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text.replace("svidTtl: 1h", "svidTtl: 10s");
        std::fs::write(dir.path().join(path.file_name().expect("name")), text).expect("write");
    }
    dir
}

/// The agent's `/status`.
fn agent_status(state: &Path) -> serde_json::Value {
    let addr = std::fs::read_to_string(state.join("agent-admin.addr")).expect("agent admin");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://{}/status", addr.trim()),
        ])
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The pid of the control replica serving its node API on `node_api`.
fn replica_pid(up: &Up, node_api: &str) -> Option<u32> {
    children_of(up.pid()).into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.get(1) == Some(&&b"control"[..]) && args.contains(&node_api.as_bytes())
    })
}

/// Sends charges for `secs`, asserting each one succeeds; how many were sent.
fn steady_traffic(outbound: &str, secs: u64, what: &str) -> usize {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0;
    while Instant::now() < until {
        assert_eq!(charge(outbound), 201, "request {sent} failed {what}");
        sent += 1;
    }
    sent
}

#[test]
fn three_control_replicas_on_etcd_ride_out_replica_and_member_kills() {
    let Some(mut etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let dir = short_svids();
    let endpoints = etcd.endpoints();
    let mut args = vec!["--control-replicas", "3"];
    for e in &endpoints {
        args.extend(["--etcd", e.as_str()]);
    }
    let up = Up::spawn(dir.path(), &args);
    up.wait_for_line("[up] ready", Duration::from_secs(90));
    let state = up.state.path().to_owned();
    let outbound = up.ready("store")["outbound"]
        .as_str()
        .expect("outbound")
        .to_owned();
    let reporting = up.ready("reporting")["outbound"]
        .as_str()
        .expect("outbound")
        .to_owned();
    assert_eq!(charge(&outbound), 201);
    assert_eq!(charge(&reporting), 403, "reporting is read-only");
    let kek = std::fs::read_to_string(state.join("kek")).expect("the KEK up created");
    let stored = etcd_dump(&endpoints[0]);
    assert!(
        stored.contains("authorities"),
        "nothing in etcd: {stored:.200}"
    );
    assert!(
        !stored.contains("PRIVATE KEY"),
        "a private key is in etcd in the clear"
    );
    assert!(!stored.contains(kek.trim()), "the KEK is in etcd");

    // kill -9 the replica the agent is attached to, under traffic.
    let attached = agent_status(&state)["control_replica"]
        .as_str()
        .expect("replica")
        .to_owned();
    let pid = replica_pid(&up, &attached).expect("the attached replica runs");
    let node_before = agent_status(&state)["node_svid_expires_at"]
        .as_i64()
        .expect("node svid");
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let sent = steady_traffic(&outbound, 3, "after the agent's replica was killed");
    eprintln!("{sent} requests while the killed replica was down or restarting");
    eventually(
        "the agent to move to another replica",
        Duration::from_secs(15),
        || {
            agent_status(&state)["control_replica"]
                .as_str()
                .is_some_and(|r| r != attached)
        },
    );
    // Renewals (10 s SVIDs: every ~5 s) and a policy edit go through the survivors.
    eventually(
        "the node SVID to be renewed",
        Duration::from_secs(20),
        || {
            agent_status(&state)["node_svid_expires_at"]
                .as_i64()
                .is_some_and(|t| t > node_before)
        },
    );
    std::fs::write(dir.path().join("policies.yaml"), OPEN_CHARGES).expect("write");
    eventually(
        "the policy edit to reach reporting's sidecar",
        Duration::from_secs(20),
        || charge(&reporting) == 201,
    );

    // One etcd member down: nothing visible changes; writes still work.
    etcd.kill(0);
    steady_traffic(&outbound, 2, "with one etcd member down");
    let token = run(&state, &["token", "create"]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );

    // Two down: writes fail cleanly, naming the cause; requests keep flowing.
    etcd.kill(1);
    let refused = run(&state, &["token", "create"]);
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success(),
        "a write succeeded without quorum"
    );
    assert!(stderr.contains("unavailable"), "{stderr}");
    steady_traffic(&outbound, 3, "with two etcd members down");

    // The members return: writes work again and nothing was lost.
    etcd.restart(0).expect("restart member 0");
    etcd.restart(1).expect("restart member 1");
    eventually("writes to work again", Duration::from_secs(30), || {
        run(&state, &["token", "create"]).status.success()
    });
    assert_eq!(charge(&outbound), 201);
    let entries = run(&state, &["entry", "list"]);
    let sidecars = std::fs::read_dir(state.join("workloads"))
        .expect("workloads")
        .count();
    assert_eq!(
        String::from_utf8_lossy(&entries.stdout).lines().count(),
        sidecars
    );
}

/// Every key and value under the default prefix, as text.
fn etcd_dump(endpoint: &str) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "get", "--prefix", "/meshwork/"])
        .output()
        .expect("etcdctl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
