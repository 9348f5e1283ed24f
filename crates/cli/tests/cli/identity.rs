//! Issue 3's "done when", end to end: the control plane killed with SIGKILL during
//! steady traffic between two workloads whose sidecars hold SVIDs from the node agent
//! (SPIFFE Workload API); requests keep succeeding, the restarted control plane has
//! the same CA, entries and join tokens, and the sidecars resync with it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Up, children_of, eventually, example, meshwork};
use crate::policy::{OPEN_CHARGES, example_copy};

/// `POST http://billing/charges` through store's sidecar; the status code.
pub(crate) fn charge(outbound: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args([
            "-x",
            &format!("http://{outbound}"),
            "-X",
            "POST",
            "http://billing/charges",
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The pid of up's control-plane child.
fn control_pid(up: &Up) -> Option<u32> {
    child_pid(up, "control")
}

/// The pid of up's `meshwork <sub>` child.
fn child_pid(up: &Up, sub: &str) -> Option<u32> {
    children_of(up.pid()).into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmdline.split(|b| *b == 0).nth(1) == Some(sub.as_bytes())
    })
}

pub(crate) fn run(state: &Path, args: &[&str]) -> std::process::Output {
    meshwork()
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run meshwork")
}

/// The restarted control plane's snapshot lists a billing endpoint again: the
/// sidecars noticed the restart, re-registered and resynced.
fn billing_endpoints(state: &Path) -> usize {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(state.join("control.sock"))
        .arg("http://localhost/v1/snapshot")
        .output()
        .expect("curl");
    let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    snapshot["services"]["billing"]["endpoints"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn sigkill_of_the_control_plane_during_traffic() {
    let dir = example_copy();
    let up = Up::start(dir.path());
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

    // State to find intact after the crash: the CA, the entries and an unused token.
    let token = String::from_utf8(run(&state, &["token", "create"]).stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(!token.is_empty());
    let entries = run(&state, &["entry", "list"]).stdout;
    let sidecars = std::fs::read_dir(state.join("workloads"))
        .expect("workloads")
        .count();
    assert_eq!(
        String::from_utf8_lossy(&entries).lines().count(),
        sidecars,
        "one entry per sidecar"
    );
    let bundle = std::fs::read_to_string(state.join("bundle.pem")).expect("bundle");

    let pid = control_pid(&up).expect("control is running");
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());

    // Steady traffic while control is dead and then restarting: nothing fails.
    let until = Instant::now() + Duration::from_secs(3);
    let (mut sent, mut while_down) = (0, 0);
    while Instant::now() < until {
        let down = std::os::unix::net::UnixStream::connect(state.join("control.sock")).is_err();
        assert_eq!(
            charge(&outbound),
            201,
            "request {sent} failed (control down: {down})"
        );
        sent += 1;
        while_down += usize::from(down);
    }
    assert!(
        while_down > 0,
        "no request was sent while the control plane was down"
    );
    eprintln!("{sent} requests, {while_down} of them while the control plane was down");
    eventually(
        "up to restart the control plane",
        Duration::from_secs(20),
        || {
            control_pid(&up).is_some_and(|p| p != pid)
                && std::os::unix::net::UnixStream::connect(state.join("control.sock")).is_ok()
        },
    );
    eventually(
        "sidecars to resync with the new control plane",
        Duration::from_secs(30),
        || billing_endpoints(&state) > 0,
    );
    assert_eq!(charge(&outbound), 201);
    // Endpoints survive in redb, so the check above holds even without a resync. A
    // policy edit reaches the sidecars only in a snapshot from the NEW control
    // process: their long polls must have reconnected to it.
    std::fs::write(dir.path().join("policies.yaml"), OPEN_CHARGES).expect("write");
    eventually(
        "sidecars to apply a snapshot from the restarted control plane",
        Duration::from_secs(10),
        || charge(&reporting) == 201,
    );

    assert_eq!(
        std::fs::read_to_string(state.join("bundle.pem")).expect("bundle"),
        bundle,
        "CA changed"
    );
    assert_eq!(
        run(&state, &["entry", "list"]).stdout,
        entries,
        "entries changed"
    );
    // The token issued before the crash still joins a (second) agent.
    let socket = state.join("agent2.sock");
    let mut agent = meshwork()
        .args(["agent", "--join-token", &token, "--socket"])
        .arg(&socket)
        .arg("--data-dir")
        .arg(state.join("agent2"))
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(state.join("agent2.log")).expect("log"))
        .spawn()
        .expect("agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        let log = std::fs::read_to_string(state.join("agent2.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the second agent did not join:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    // And the first agent is connected again: `meshwork check` is green.
    eventually("meshwork check to pass", Duration::from_secs(30), || {
        run(&state, &["check"]).status.success()
    });
}

#[test]
fn check_reports_a_dead_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ERROR") && text.contains("control plane"),
        "{text}"
    );
}

#[test]
fn sidecars_rotate_short_lived_svids_without_failing_requests() {
    // The example with 4 s SVIDs: the agent renews them every ~2 s and pushes them to
    // the sidecars over the Workload API while traffic flows.
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(example("store-billing")).expect("example") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text.replace("svidTtl: 1h", "svidTtl: 4s");
        std::fs::write(dir.path().join(path.file_name().expect("name")), text).expect("write");
    }
    // -v: the rotations are INFO lines, which `up` hides by default.
    let up = Up::spawn(dir.path(), &["-v"]);
    up.wait_for_line("[up] ready", Duration::from_secs(60));
    let outbound = up.ready("store")["outbound"]
        .as_str()
        .expect("outbound")
        .to_owned();
    let until = Instant::now() + Duration::from_secs(6);
    let mut sent = 0;
    while Instant::now() < until {
        assert_eq!(
            charge(&outbound),
            201,
            "request {sent} failed across SVID rotations"
        );
        sent += 1;
    }
    // Both ends of that traffic rotated at least once meanwhile.
    let lines: Vec<String> = up.output.try_iter().collect();
    for who in ["billing-0", "billing-1", "store"] {
        let prefix = format!("[{who}/proxy]");
        let rotations = lines
            .iter()
            .filter(|l| l.starts_with(&prefix) && l.contains("SVID rotated (Workload API)"))
            .count();
        assert!(rotations >= 1, "{who}'s sidecar never rotated its SVID");
    }
}

#[test]
fn sigkill_of_the_agent_is_ridden_out() {
    let up = Up::start(&example("store-billing"));
    let state = up.state.path().to_owned();
    let outbound = up.ready("store")["outbound"]
        .as_str()
        .expect("outbound")
        .to_owned();
    let pid = child_pid(&up, "agent").expect("agent is running");
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // Sidecars hold their SVIDs; traffic does not notice.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(charge(&outbound), 201);
    }
    // up restarts the agent, which resumes with its saved node SVID (its join token
    // is spent), and `meshwork check` sees it connected again.
    eventually("the agent to come back", Duration::from_secs(20), || {
        child_pid(&up, "agent").is_some_and(|p| p != pid)
    });
    eventually("meshwork check to pass", Duration::from_secs(30), || {
        run(&state, &["check"]).status.success()
    });
    assert_eq!(charge(&outbound), 201);
}
