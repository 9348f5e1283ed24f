//! Pod mode's kernel side (issue 10): the pods `meshwork pods create` (the code `up` runs)
//! makes exist, capture the pod's TCP, keep the host out and the pod's processes
//! unprivileged, and are gone after `delete`, or, after a `kill -9`, after the next `up`.
//!
//! Needs root, `ip` and `nft` (CI has them); skipped with a message otherwise. Every name is
//! the slot's (`mwbr<n>`, `mw<n>-…`), which only the creating process can hold: tests
//! running in parallel (here or in other worktrees) never touch each other's objects.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::harness::meshwork;

/// Why this machine cannot run the pod tests, if it cannot.
fn unable() -> Option<String> {
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if !root {
        return Some("needs root (CI runs as root)".into());
    }
    for tool in ["ip", "nft", "setpriv", "sysctl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

macro_rules! skip_unless_able {
    ($test:literal) => {
        if let Some(why) = unable() {
            eprintln!("SKIPPED: {}: {why}; this test did not run", $test);
            return;
        }
    };
}

/// One pod as `meshwork pods create` prints it.
#[derive(Debug, Clone)]
struct Pod {
    netns: String,
    ip: Ipv4Addr,
}

/// Pods created for a test, deleted at the end (also when the test panics).
struct Pods {
    state: tempfile::TempDir,
    pods: Vec<Pod>,
    slot: u64,
}

impl Pods {
    fn create(workloads: &[&str]) -> Pods {
        Pods::create_with(&[], workloads).0
    }

    /// `pods create ARGS… WORKLOADS…`, and what it printed.
    fn create_with(args: &[&str], workloads: &[&str]) -> (Pods, String) {
        let state = tempfile::tempdir().unwrap();
        let out = meshwork()
            .args(["pods", "create", "--state-dir"])
            .arg(state.path())
            .args(args)
            .args(workloads)
            .output()
            .unwrap();
        let pods = Pods {
            pods: parse_pods(&String::from_utf8_lossy(&out.stdout)),
            slot: slot_of(state.path()),
            state,
        };
        assert!(out.status.success(), "pods create: {}", text(&out));
        (pods, text(&out))
    }

    fn delete(&self) -> Output {
        meshwork()
            .args(["pods", "delete", "--state-dir"])
            .arg(self.state.path())
            .output()
            .unwrap()
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

fn parse_pods(stdout: &str) -> Vec<Pod> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && !l.starts_with('[')).then(|| Pod {
                netns: f[2].to_owned(),
                ip: f[3].parse().unwrap(),
            })
        })
        .collect()
}

fn slot_of(state: &Path) -> u64 {
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("pods.json")).unwrap_or_default())
            .unwrap_or_default();
    record["slot"]["index"].as_u64().unwrap_or(u64::MAX)
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sh(argv: &[&str]) -> Output {
    Command::new(argv[0]).args(&argv[1..]).output().unwrap()
}

fn stdout(argv: &[&str]) -> String {
    String::from_utf8_lossy(&sh(argv).stdout).into_owned()
}

/// Everything slot `slot` with these pods has: each name with the identity of what has that
/// name now (a link's ifindex, a table's handle, an inode), None when nothing has it.
/// Another test may take the slot as soon as it is free and create the same names: "gone"
/// is "not the same object", which a fresh one never is.
fn objects(slot: u64, pods: &[Pod]) -> Vec<(String, Option<String>)> {
    let link = |name: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            .ok()
            .map(|i| format!("ifindex {}", i.trim()))
    };
    let inode = |path: PathBuf| {
        std::fs::metadata(path)
            .ok()
            .map(|m| format!("inode {}", std::os::unix::fs::MetadataExt::ino(&m)))
    };
    let table = format!("meshwork_{slot}");
    let listed = stdout(&["nft", "-a", "list", "table", "inet", &table]);
    let handle = listed
        .lines()
        .next()
        .and_then(|l| l.split_once("# handle "))
        .map(|(_, h)| format!("handle {}", h.trim()));
    let mut all = vec![
        (format!("mwbr{slot}"), link(&format!("mwbr{slot}"))),
        (format!("table inet {table}"), handle),
    ];
    for (i, pod) in pods.iter().enumerate() {
        let veth = format!("mw{slot}p{i}");
        all.push((veth.clone(), link(&veth)));
        let ns = PathBuf::from("/run/netns").join(&pod.netns);
        all.push((ns.display().to_string(), inode(ns.clone())));
        let etc = PathBuf::from("/etc/netns").join(&pod.netns);
        all.push((etc.display().to_string(), inode(etc)));
    }
    all
}

/// Asserts that every object of `before` exists.
fn assert_all_exist(before: &[(String, Option<String>)]) {
    for (name, id) in before {
        assert!(id.is_some(), "{name} should exist");
    }
}

/// Asserts that none of the objects of `before` exists any more.
fn assert_all_gone(
    before: &[(String, Option<String>)],
    now: &[(String, Option<String>)],
    when: &str,
) {
    for ((name, was), (_, is)) in before.iter().zip(now) {
        assert!(was != is, "{name} ({was:?}) is left {when}");
    }
}

/// Runs `f` on a thread inside `netns` (`setns`); sockets it creates stay in that namespace.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = PathBuf::from("/run/netns").join(netns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn pods_exist_capture_their_tcp_and_are_removed_without_a_trace() {
    skip_unless_able!("pods_exist_capture_their_tcp_and_are_removed_without_a_trace");
    let pods = Pods::create(&["pa", "pb"]);
    assert_eq!(pods.pods.len(), 2, "{:?}", pods.pods);
    let slot = pods.slot;
    assert_ne!(slot, u64::MAX, "pods.json names the slot");
    let before = objects(slot, &pods.pods);
    assert_all_exist(&before);
    let (a, b) = (&pods.pods[0], &pods.pods[1]);
    assert_eq!(a.netns, format!("mw{slot}-pa-0"));
    assert_eq!(a.ip, Ipv4Addr::new(198, 18, slot as u8, 2));
    assert_eq!(b.ip, Ipv4Addr::new(198, 18, slot as u8, 3));
    let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", a.netns)).unwrap();
    assert!(resolv.starts_with("nameserver 127.0.0.1\n"), "{resolv}");
    let in_pod = stdout(&["ip", "netns", "exec", &a.netns, "nft", "list", "tables"]);
    assert!(in_pod.contains("table inet meshwork"), "{in_pod}");
    let ipv6 = stdout(&[
        "ip",
        "netns",
        "exec",
        &a.netns,
        "sysctl",
        "-n",
        "net.ipv6.conf.all.disable_ipv6",
    ]);
    assert_eq!(ipv6.trim(), "1");

    capture_lands_on_the_capture_listener(a);
    the_host_cannot_reach_the_capture_listener(a);
    exec_runs_unprivileged_in_the_pod(&pods, a);

    let out = pods.delete();
    assert!(out.status.success(), "{}", text(&out));
    assert_all_gone(&before, &objects(slot, &pods.pods), "after delete");
    assert!(!pods.state.path().join("pods.json").exists());
}

/// A connection from inside the pod to 203.0.113.9:80 is accepted by the listener on the
/// pod's 127.0.0.1:4140, which reads the original destination.
fn capture_lands_on_the_capture_listener(pod: &Pod) {
    let (listener, client) = in_netns(&pod.netns, || {
        let listener = TcpListener::bind("127.0.0.1:4140").unwrap();
        let to = SocketAddr::from(([203, 0, 113, 9], 80));
        let client = TcpStream::connect_timeout(&to, Duration::from_secs(5));
        (listener, client)
    });
    let mut client = client.expect("the captured connect succeeds");
    client.write_all(b"x").unwrap();
    let (accepted, peer) = listener.accept().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        pod.ip.to_string(),
        "from the pod's address"
    );
    let original =
        nix::sys::socket::getsockopt(&accepted, nix::sys::socket::sockopt::OriginalDst).unwrap();
    let original = SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(original.sin_addr.s_addr)),
        u16::from_be(original.sin_port),
    );
    assert_eq!(original.to_string(), "203.0.113.9:80");
}

/// The host connecting to the pod's address on 4140 (or any port) does not reach the capture
/// listener on the pod's loopback: it is redirected to the mTLS port, where nothing listens.
fn the_host_cannot_reach_the_capture_listener(pod: &Pod) {
    let listener = in_netns(&pod.netns, || TcpListener::bind("127.0.0.1:4140").unwrap());
    listener.set_nonblocking(true).unwrap();
    let to = SocketAddr::from((pod.ip, 4140));
    let connect = TcpStream::connect_timeout(&to, Duration::from_secs(3));
    assert!(connect.is_err(), "the host reached {to}");
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the pod's capture listener accepted a host connection: {accepted:?}"
    );
}

/// `meshwork exec` in pod mode: the command runs in the pod as 65534 without proxy variables,
/// and cannot change the pod's rules.
fn exec_runs_unprivileged_in_the_pod(pods: &Pods, pod: &Pod) {
    let state = pods.state.path();
    std::fs::create_dir_all(state.join("workloads")).unwrap();
    std::fs::write(state.join("workloads/pa.json"), "{}").unwrap();
    let exec = |cmd: &[&str]| {
        meshwork()
            .args(["exec", "pa", "--state-dir"])
            .arg(state)
            .arg("--")
            .args(cmd)
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = exec(&[
        "sh",
        "-c",
        "id -u; echo proxy=$HTTP_PROXY; echo ip=$MESHWORK_POD_IP",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said, format!("65534\nproxy=\nip={}\n", pod.ip));
    let flush = exec(&["nft", "flush", "ruleset"]);
    assert!(
        !flush.status.success(),
        "an unprivileged process flushed the pod's rules"
    );
    let rules = sh(&[
        "ip", "netns", "exec", &pod.netns, "nft", "list", "table", "inet", "meshwork",
    ]);
    assert!(
        rules.status.success(),
        "the pod's rules are gone: {}",
        text(&rules)
    );
}

/// `pods create --hold WORKLOAD` in `state`, killed with SIGKILL once its pods exist: its
/// pods and slot, left behind.
fn killed_holder(state: &Path, workload: &str) -> (Vec<Pod>, u64) {
    let mut holder = meshwork()
        .args(["pods", "create", "--hold", "--state-dir"])
        .arg(state)
        .arg(workload)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    for line in BufReader::new(holder.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("holding") {
            break;
        }
    }
    holder.kill().unwrap(); // SIGKILL: no chance to clean up
    holder.wait().unwrap();
    let pods = parse_pods(&printed);
    assert_eq!(pods.len(), 1, "{printed}");
    (pods, slot_of(state))
}

#[test]
fn the_next_up_removes_what_a_killed_one_left() {
    skip_unless_able!("the_next_up_removes_what_a_killed_one_left");
    let state = tempfile::tempdir().unwrap();
    // Whatever happens next, nothing stays behind.
    let stale_state = StaleGuard(state.path().to_owned());
    let (pods, slot) = killed_holder(state.path(), "pk");
    let before = objects(slot, &pods);
    assert_all_exist(&before);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  \
         trustDomain: meshwork.local\n---\napiVersion: meshwork.dev/v1alpha1\nkind: Workload\n\
         metadata: {name: w}\nspec:\n  command: [sleep, \"30\"]\n",
    )
    .unwrap();
    let mut up = meshwork()
        .arg("up")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(state.path())
        .arg("--isolation=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut said = String::new();
    for line in BufReader::new(up.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("isolation: off") {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    up.wait().unwrap();
    let removed = said
        .lines()
        .find(|l| l.starts_with("[up] removed what pid"))
        .unwrap_or_else(|| panic!("no cleanup line in:\n{said}"));
    assert!(removed.contains(&format!("on mwbr{slot}")), "{removed}");
    assert_all_gone(&before, &objects(slot, &pods), "after the next up");
    assert!(!state.path().join("pods.json").exists());
    drop(stale_state);
}

/// Deletes the pods a test's state directory records, if the test failed before `up` did.
struct StaleGuard(PathBuf);

impl Drop for StaleGuard {
    fn drop(&mut self) {
        let _ = meshwork()
            .args(["pods", "delete", "--state-dir"])
            .arg(&self.0)
            .output();
    }
}

/// `up` in pod mode that fails during startup (an app that never opens its port): the pods
/// were created (none for a `hostNetwork` workload), and `up` removes every one on its way out.
#[test]
fn up_removes_its_pods_when_startup_fails() {
    skip_unless_able!("up_removes_its_pods_when_startup_fails");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  \
         trustDomain: meshwork.local\n---\napiVersion: meshwork.dev/v1alpha1\nkind: Workload\n\
         metadata: {name: pupa}\nspec:\n  command: [sleep, \"30\"]\n---\n\
         apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {name: pupb}\nspec:\n  \
         command: [sleep, \"30\"]\n  hostNetwork: true\n",
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let _guard = StaleGuard(state.path().to_owned());
    let mut up = meshwork()
        .arg("up")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(state.path())
        // pupa's app never opens a port: `up` gives up after --app-timeout.
        .args(["--isolation=pods", "--ready-timeout=10", "--app-timeout=3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = up.stderr.take().unwrap();
    let errors = std::thread::spawn(move || std::io::read_to_string(err).unwrap());
    let said = std::io::read_to_string(up.stdout.take().unwrap()).unwrap();
    let status = up.wait().unwrap();
    let errors = errors.join().unwrap();
    let all = format!("{said}\n{errors}");
    let created = said
        .lines()
        .find(|l| l.starts_with("[up] pods on mwbr"))
        .unwrap_or_else(|| panic!("no pods line:\n{all}"));
    let netns = created
        .split_whitespace()
        .find_map(|w| w.split_once('=').map(|(ns, _)| ns.to_owned()))
        .unwrap();
    assert!(netns.ends_with("-pupa-0"), "{created}");
    assert!(
        !created.contains("pupb"),
        "hostNetwork has no pod: {created}"
    );
    assert!(!status.success(), "{all}");
    assert!(all.contains("[up] error: workload pupa"), "{all}");
    assert!(said.contains("[up] removed 1 pod(s) on mwbr"), "{all}");
    assert!(!state.path().join("pods.json").exists(), "{all}");
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "{netns} is left"
    );
    assert!(
        !Path::new("/etc/netns").join(&netns).exists(),
        "/etc/netns/{netns} is left"
    );
}

/// `--isolation=pods` without the privileges pods need is an error naming what is missing.
#[test]
fn pods_without_privileges_name_what_is_missing() {
    skip_unless_able!("pods_without_privileges_name_what_is_missing");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  \
         trustDomain: meshwork.local\n",
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    for d in [dir.path(), state.path()] {
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        std::fs::set_permissions(d, mode).unwrap();
    }
    let up = |isolation: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_meshwork"))
            .arg("up")
            .arg(dir.path())
            .arg("--state-dir")
            .arg(state.path())
            .arg(format!("--isolation={isolation}"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = up("pods");
    if String::from_utf8_lossy(&out.stderr).contains("Permission denied") {
        eprintln!(
            "SKIPPED: the test binary is not readable by uid 65534: {}",
            text(&out)
        );
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--isolation=pods: not root: euid 65534 without CAP_NET_ADMIN and CAP_SYS_ADMIN"
        ),
        "{err}"
    );
}

/// A slot whose owner was killed is reclaimed by an `up` of another state directory that
/// finds its bridge taken: the dead owner's objects are removed first.
#[test]
fn a_dead_owners_slot_is_reclaimed_from_another_state_directory() {
    skip_unless_able!("a_dead_owners_slot_is_reclaimed_from_another_state_directory");
    let stale = tempfile::tempdir().unwrap();
    let _guard = StaleGuard(stale.path().to_owned());
    let (pods, slot) = killed_holder(stale.path(), "pr");
    let before = objects(slot, &pods);
    assert_all_exist(&before);
    let first = slot.to_string();
    let (taker, said) = Pods::create_with(&["--first-slot", &first], &["ps"]);
    assert!(
        said.contains(&format!("reclaimed mwbr{slot} from pid")),
        "{said}"
    );
    assert_all_gone(
        &before,
        &objects(slot, &pods),
        "after the slot was reclaimed",
    );
    assert!(!stale.path().join("pods.json").exists());
    assert_eq!(taker.pods.len(), 1, "{said}");
}
