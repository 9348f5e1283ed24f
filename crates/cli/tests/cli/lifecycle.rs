//! Issue 9, end to end: `up`'s startup is bounded and fails loudly, every path out of `up`
//! stops every process it started (meshwork or not, `kill -9` of `up` included), a healthy
//! start is quiet, and `exec`'s mistakes say what to do.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Up, alive, eventually, example, meshwork};

/// A resource directory with `workloads` (name, YAML flow list of the command), nothing else.
fn mesh_dir(workloads: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {name: lifecycle}\n\
                spec: {trustDomain: lifecycle.test}\n";
    std::fs::write(dir.path().join("mesh.yaml"), mesh).expect("mesh.yaml");
    let docs: Vec<String> = workloads
        .iter()
        .map(|(name, command)| {
            format!(
                "apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}}}\n\
                 spec:\n  command: {command}\n"
            )
        })
        .collect();
    std::fs::write(dir.path().join("workloads.yaml"), docs.join("---\n")).expect("workloads.yaml");
    dir
}

/// An application that is not meshwork: a shell that records its pid in `<name>.pid`, starts
/// a background `sleep` (recorded in `<name>-bg.pid`), and then becomes `then`. It runs in
/// the resource directory, so the files land there.
fn shell_app(name: &str, then: &str) -> String {
    format!("[sh, -c, 'sleep 1000 & echo $! > {name}-bg.pid; echo $$ > {name}.pid; exec {then}']")
}

/// The pid a shell app wrote to `file` (waits for it: the app starts during `up`'s startup).
fn pid_in(dir: &Path, file: &str) -> u32 {
    let path = dir.join(file);
    let mut pid = None;
    eventually(
        &format!("{file} to be written"),
        Duration::from_secs(60),
        || {
            pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        },
    );
    pid.expect("pid")
}

fn python3() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: python3 is not installed (apt-get install python3)");
    }
    found
}

fn assert_gone(pids: &[u32], when: &str) {
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "{when}: still running: {left:?}");
}

/// Ctrl-C while `up` waits for an application that never listens: `up` stops, and neither
/// the application (a shell exec'd into `sleep`) nor its background `sleep` is left behind.
#[test]
fn sigint_during_startup_leaves_no_process_behind() {
    let dir = mesh_dir(&[("sleeper", &shell_app("sleeper", "sleep 1000"))]);
    let mut up = Up::spawn(dir.path(), &["--ready-timeout", "600"]);
    let pids = [
        pid_in(dir.path(), "sleeper.pid"),
        pid_in(dir.path(), "sleeper-bg.pid"),
    ];
    let status = up.signal_and_wait("INT", Duration::from_secs(30));
    assert_gone(&pids, "after up exited");
    assert_eq!(
        status.code(),
        Some(130),
        "up exits 128+SIGINT when interrupted"
    );
    let out = up.remaining_output().join("\n");
    assert!(out.contains("SIGINT before meshwork was ready"), "{out}");
}

/// SIGTERM once ready, with a Python server as the application: everything ends.
#[test]
fn sigterm_after_ready_stops_a_python_app_and_its_children() {
    if !python3() {
        return;
    }
    let server = shell_app("web", "python3 -m http.server --bind 127.0.0.1 $PORT");
    let dir = mesh_dir(&[("web", &server)]);
    let mut up = Up::spawn(dir.path(), &[]);
    up.wait_for_line("[up] ready", Duration::from_secs(60));
    let pids = [
        pid_in(dir.path(), "web.pid"),
        pid_in(dir.path(), "web-bg.pid"),
    ];
    let status = up.signal_and_wait("TERM", Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_gone(&pids, "after up exited");
}

/// `kill -9` of `up` itself: its applications are stopped too (they cannot watch
/// MESHWORK_PARENT_PID; their guard does).
#[test]
fn sigkill_of_up_stops_non_meshwork_apps() {
    if !python3() {
        return;
    }
    let server = shell_app("web", "python3 -m http.server --bind 127.0.0.1 $PORT");
    let dir = mesh_dir(&[("web", &server), ("idle", "[sleep, '1000']")]);
    let mut up = Up::spawn(dir.path(), &[]);
    // `idle` never listens: `up` is killed while it still waits for it.
    let pids = [
        pid_in(dir.path(), "web.pid"),
        pid_in(dir.path(), "web-bg.pid"),
    ];
    up.signal_and_wait("KILL", Duration::from_secs(5));
    eventually(
        "up's applications to be stopped",
        Duration::from_secs(15),
        || pids.iter().all(|p| !alive(*p)),
    );
}

/// An application that exits 3 while another one is still (forever) starting: `up` reports
/// the one that failed, with its last output, at once — not after the other's timeout.
#[test]
fn an_app_exiting_during_startup_fails_up_naming_it() {
    // It fails once `slow` has started (and recorded its pids), so both are known.
    let failing = "[sh, -c, 'until [ -s slow.pid ]; do sleep 0.05; done; \
                   echo cannot open the frobnicator >&2; exit 3']";
    let dir = mesh_dir(&[
        ("slow", &shell_app("slow", "sleep 1000")),
        ("zfailing", failing),
    ]);
    let mut up = Up::spawn(dir.path(), &["--ready-timeout", "600"]);
    let slow = [
        pid_in(dir.path(), "slow.pid"),
        pid_in(dir.path(), "slow-bg.pid"),
    ];
    let status = up.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    assert_gone(&slow, "after up failed");
    let out = up.remaining_output().join("\n");
    assert!(
        out.contains("[up] error: zfailing/app exited with status 3 during startup"),
        "{out}"
    );
    assert!(
        out.contains("[up]   | cannot open the frobnicator"),
        "{out}"
    );
}

/// An application that runs but never opens its port fails the start after --app-timeout,
/// naming the workload, and leaves none of its processes behind.
#[test]
fn an_app_never_ready_fails_up_after_the_timeout() {
    let dir = mesh_dir(&[("deaf", &shell_app("deaf", "sleep 1000"))]);
    let mut up = Up::spawn(dir.path(), &["--app-timeout", "2"]);
    let pids = [
        pid_in(dir.path(), "deaf.pid"),
        pid_in(dir.path(), "deaf-bg.pid"),
    ];
    let status = up.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    assert_gone(&pids, "after up failed");
    let out = up.remaining_output().join("\n");
    assert!(
        out.contains("workload deaf: app never listened on 127.0.0.1:")
            && out.contains("(waited 2s; see --app-timeout)"),
        "{out}"
    );
}

/// A control plane that cannot open its state file: `up` says so and exits 1.
#[test]
fn a_broken_control_state_fails_up_naming_the_control_plane() {
    let dir = mesh_dir(&[("idle", "[sleep, '1000']")]);
    let state = tempfile::tempdir().expect("state");
    let file = state.path().join("control.redb");
    std::fs::write(&file, b"this is not a redb file").expect("write");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let started = Instant::now();
    let out = meshwork()
        .arg("up")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--ready-timeout", "600"])
        .output()
        .expect("run up");
    eprintln!("up failed after {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[up] error: control exited with status 2 during startup"),
        "{err}"
    );
    assert!(
        err.contains("[up]   | meshwork: error: state file")
            && err.contains("control.redb cannot be opened"),
        "{err}"
    );
}

/// A healthy start of the canonical example prints no WARN or ERROR and no child's INFO
/// lines: `up`'s own lines and the table with the ADMIN column.
#[test]
fn a_healthy_start_is_quiet() {
    let up = Up::spawn(&example("store-billing"), &[]);
    let lines = up.lines_until("[up] ready", Duration::from_secs(60));
    let noisy: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains(" INFO "))
        .collect();
    assert!(noisy.is_empty(), "a healthy start logged: {noisy:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[up] WORKLOAD") && l.contains("ADMIN")),
        "{lines:#?}"
    );
}

/// `exec` with a misspelt workload lists the running ones and fails.
#[test]
fn exec_of_an_unknown_workload_lists_the_running_ones() {
    let dir = mesh_dir(&[
        ("billing", "[meshwork, demo, billing]"),
        ("store", "[meshwork, demo, store]"),
    ]);
    let up = Up::spawn(dir.path(), &[]);
    up.wait_for_line("[up] ready", Duration::from_secs(60));
    let out = up.exec("stroe", &["true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"stroe\" is not running")
            && err.contains("running workloads: billing, store"),
        "{err}"
    );
}

/// `exec` where there is no state directory tells how to point it at one.
#[test]
fn exec_without_a_state_dir_mentions_how_to_name_it() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = meshwork()
        .args(["exec", "store", "--", "true"])
        .current_dir(cwd.path())
        .env_remove("MESHWORK_STATE_DIR")
        .output()
        .expect("run exec");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--state-dir") && err.contains("MESHWORK_STATE_DIR"),
        "{err}"
    );
}

/// `exec` after `up` was killed (its ready files left behind) says `up` is gone rather
/// than sending the command to a sidecar that no longer exists.
#[test]
fn exec_after_up_was_killed_says_up_is_gone() {
    let dir = mesh_dir(&[("billing", "[meshwork, demo, billing]")]);
    let mut up = Up::spawn(dir.path(), &[]);
    up.wait_for_line("[up] ready", Duration::from_secs(60));
    let pid = up.pid();
    up.signal_and_wait("KILL", Duration::from_secs(5));
    let out = up.exec("billing", &["true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("(pid {pid}) is gone")), "{err}");
}
