//! Issue 15's multi-host "done when", end to end: two workloads on two simulated hosts
//! (separate agents) talk over mTLS across the pod network. `meshwork up --hosts a,b --place
//! billing=b examples/store-billing` as root: each host a network namespace on the fabric
//! with its own pod subnet and node agent. Skipped, with the reason printed, where pods
//! cannot be made (not root, no `nft`/`ip`) or without tshark.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::pod_mesh::{NOT_TLS, count_so_far, curl_post_charge, frames, pods_unavailable, text};
use crate::harness::{Up, children_of, eventually, example};

/// The `pods.json` of a running `up`.
fn record(up: &Up) -> Value {
    let text = std::fs::read_to_string(up.state.path().join("pods.json")).expect("pods.json");
    serde_json::from_str(&text).expect("pods.json is JSON")
}

/// The /24 of a slot as `pods.json` records it (`198.18.5.0`).
fn base(slot: &Value) -> String {
    slot["base"].as_str().expect("slot base").to_owned()
}

/// Whether `ip` is in the /24 whose network address is `base`.
fn in_slot(ip: &str, base: &str) -> bool {
    let prefix = |a: &str| a.rsplit_once('.').map(|(p, _)| p.to_owned());
    prefix(ip) == prefix(base)
}

/// The network namespace inode of process `pid`.
fn netns_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.display().to_string())
}

/// The `/status` of host `name`'s agent, read from inside the host (its admin listener is
/// on the host's own loopback).
fn agent_status(up: &Up, host: &Value) -> Value {
    let name = host["name"].as_str().unwrap();
    let addr_file = up
        .state
        .path()
        .join(format!("hosts/{name}/agent-admin.addr"));
    let addr = std::fs::read_to_string(&addr_file).expect("the agent's admin address");
    let netns = host["netns"].as_str().unwrap();
    let url = format!("http://{}/status", addr.trim());
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "curl",
            "-sS",
            "--noproxy",
            "*",
            &url,
        ])
        .output()
        .expect("curl in the host");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("/status is JSON")
}

/// The pid of the child of `up` that serves `socket` as a node agent.
fn agent_pid(up: &Up, socket: &std::path::Path) -> u32 {
    let wanted = socket.display().to_string();
    children_of(up.pid())
        .into_iter()
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter().any(|a| a == "agent") && args.windows(2).any(|w| w[1] == wanted)
        })
        .unwrap_or_else(|| panic!("no agent process serves {wanted}"))
}

/// Captures on `link` (in the root namespace) while `during` runs; the capture file.
fn capture(up: &Up, link: &str, during: impl FnOnce()) -> std::path::PathBuf {
    use std::io::Read;
    let pcap = up.state.path().join("fabric.pcap");
    let mut tshark = Command::new("tshark")
        .args(["-i", link, "-w"])
        .arg(&pcap)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tshark");
    let mut stderr = tshark.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Capturing on") {
        let n = stderr.read(&mut chunk).expect("tshark's stderr");
        assert!(n > 0, "tshark ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    during();
    // As pod_mesh.rs: stop dumpcap only once the file holds the exchange.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while count_so_far(&pcap, "tls.app_data") < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tshark.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    tshark.wait().unwrap();
    pcap
}

#[test]
fn store_on_one_host_charges_billing_on_another_over_mtls_across_the_fabric() {
    if let Some(why) = pods_unavailable() {
        eprintln!("SKIPPED: pod mode unavailable: {why}");
        return;
    }
    if Command::new("tshark").arg("-v").output().is_err() {
        eprintln!("SKIPPED: tshark is not installed (.ci/run installs it)");
        return;
    }
    let hosts_args = ["--isolation=pods", "--hosts", "a,b", "--place", "billing=b"];
    let mut up = Up::spawn(&example("store-billing"), &hosts_args);
    up.wait_for_line("[up] ready", Duration::from_secs(120));

    // Where everything went: store (unplaced) on a, both billing replicas on b.
    let record = record(&up);
    let hosts: BTreeMap<String, Value> = record["hosts"]
        .as_array()
        .expect("hosts in pods.json")
        .iter()
        .map(|h| (h["name"].as_str().unwrap().to_owned(), h.clone()))
        .collect();
    assert_eq!(hosts.keys().collect::<Vec<_>>(), ["a", "b"], "{record}");
    let (a, b) = (&hosts["a"], &hosts["b"]);
    let pods = record["pods"].as_array().unwrap();
    let pod = |w: &str, r: u64| {
        pods.iter()
            .find(|p| p["workload"] == w && p["replica"] == r)
            .unwrap_or_else(|| panic!("no pod of {w} {r}: {record}"))
    };
    let store = pod("store", 0);
    assert_eq!(store["host"], "a");
    assert!(in_slot(store["ip"].as_str().unwrap(), &base(&a["slot"])));
    // Recorded in the order made, so removed (in reverse) pods first, then the hosts, then
    // the fabric.
    let objects: Vec<String> = record["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| format!("{} {}", o["kind"].as_str().unwrap(), o["name"]))
        .collect();
    let (fabric, sa, sb) = (
        &record["slot"]["index"],
        &a["slot"]["index"],
        &b["slot"]["index"],
    );
    assert_eq!(
        objects[..6],
        [
            format!("bridge \"mwbr{fabric}\""),
            format!("host_table \"meshwork_{fabric}\""),
            format!("netns {}", a["netns"]),
            format!("host_veth \"mwbr{sa}\""),
            format!("netns {}", b["netns"]),
            format!("host_veth \"mwbr{sb}\""),
        ],
        "{objects:#?}"
    );
    let pod_objects = &objects[6..];
    assert_eq!(
        pod_objects.len(),
        2 * 4,
        "an etc dir and a netns per pod: {objects:#?}"
    );
    assert!(
        pod_objects
            .iter()
            .all(|o| o.starts_with("etc_dir") || o.starts_with("netns"))
    );
    let billing: Vec<String> = (0..2)
        .map(|r| {
            let p = pod("billing", r);
            assert_eq!(p["host"], "b", "{p}");
            let ip = p["ip"].as_str().unwrap().to_owned();
            assert!(in_slot(&ip, &base(&b["slot"])), "{ip} outside b's slot");
            ip
        })
        .collect();

    // The request, captured on b's link to the fabric (in the root namespace).
    let link = format!("mwbr{}", b["slot"]["index"]);
    let pcap = capture(&up, &link, || {
        for _ in 0..5 {
            let (code, json) = curl_post_charge(&up, "store");
            assert_eq!(code, 201, "{json}");
            assert_eq!(
                json["caller"],
                "spiffe://meshwork.local/ns/default/sa/store"
            );
            assert_eq!(json["stored_in"], "postgresql", "{json}");
        }
    });
    // TLS from a's pod subnet to billing's mTLS port: the connection left host a and
    // entered host b across the fabric, encrypted.
    let a_net = format!("{}/24", base(&a["slot"]));
    let to_billing = billing
        .iter()
        .map(|ip| format!("ip.dst == {ip}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let hellos = frames(
        &pcap,
        &format!(
            "tls.handshake.type == 1 && ip.src == {a_net} && tcp.dstport == 4143 && ({to_billing})"
        ),
        "ip.src",
    );
    assert!(
        !hellos.is_empty(),
        "no ClientHello from {a_net} to billing on {link}"
    );
    let records = frames(
        &pcap,
        &format!("tls.app_data && ip.src == {a_net}"),
        "frame.number",
    );
    assert!(
        records.len() >= 5,
        "too little TLS from {a_net}: {records:?}"
    );
    // A retransmitted segment (a loaded machine) or one of a record split over segments is
    // not shown as TLS by itself; the clear-text check below reads every payload anyway.
    let plain = frames(
        &pcap,
        &format!("tcp.port == 4143 && {NOT_TLS}"),
        "frame.number",
    );
    assert!(
        plain.is_empty(),
        "non-TLS payload to billing in frames {plain:?}"
    );
    let payloads = frames(&pcap, "tcp.port == 4143 && tcp.len > 0", "tcp.payload").concat();
    for needle in ["charges", "HTTP/1.1", "spiffe://"] {
        let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            !payloads.contains(&hex),
            "{needle:?} in clear on the fabric"
        );
    }

    // Two agents: two processes, each in its own host's namespace, each with its own node
    // SVID, each joined to the control plane's node API over the fabric.
    let node_api = std::fs::read_to_string(up.state.path().join("node-api.addr")).unwrap();
    let fabric = record["slot"]["base"].as_str().unwrap();
    assert!(
        in_slot(node_api.trim(), fabric),
        "node API {node_api} is not on the fabric"
    );
    let mut ids = Vec::new();
    let mut pids = Vec::new();
    for host in [a, b] {
        let name = host["name"].as_str().unwrap();
        let socket = up.state.path().join(format!("hosts/{name}/agent.sock"));
        let pid = agent_pid(&up, &socket);
        let ns = std::fs::metadata(format!("/run/netns/{}", host["netns"].as_str().unwrap()))
            .unwrap()
            .ino();
        assert_eq!(
            netns_of(pid),
            Some(format!("net:[{ns}]")),
            "agent of {name}"
        );
        let status = agent_status(&up, host);
        assert_eq!(status["control_connected"], true, "{status}");
        assert_eq!(status["control_replica"], node_api.trim(), "{status}");
        ids.push(status["node_id"].as_str().unwrap().to_owned());
        pids.push(pid);
    }
    assert_ne!(pids[0], pids[1]);
    assert_ne!(ids[0], ids[1], "one node SVID for two hosts");

    // Everything the hosts used goes with `up`.
    let netns: Vec<String> = [a, b]
        .iter()
        .map(|h| h["netns"].as_str().unwrap().to_owned())
        .collect();
    let links = [
        format!("mwbr{}", record["slot"]["index"]),
        format!("mwbr{}", a["slot"]["index"]),
        link,
    ];
    up.signal_and_wait("TERM", Duration::from_secs(30));
    for ns in &netns {
        assert!(
            !std::path::Path::new("/run/netns").join(ns).exists(),
            "{ns} left"
        );
    }
    for link in &links {
        let out = Command::new("ip")
            .args(["link", "show", link])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{link} left");
    }
    assert!(!up.state.path().join("pods.json").exists());
}

#[test]
fn what_a_killed_up_left_on_its_hosts_is_removed_by_the_next_up() {
    if let Some(why) = pods_unavailable() {
        eprintln!("SKIPPED: pod mode unavailable: {why}");
        return;
    }
    let hosts_args = ["--isolation=pods", "--hosts", "a,b", "--place", "billing=b"];
    let mut up = Up::spawn(&example("store-billing"), &hosts_args);
    up.wait_for_line("[up] ready", Duration::from_secs(120));
    let record = record(&up);
    let hosts = record["hosts"].as_array().unwrap();
    let netns: Vec<String> = hosts
        .iter()
        .map(|h| h["netns"].as_str().unwrap().to_owned())
        .collect();
    let mut links = vec![format!("mwbr{}", record["slot"]["index"])];
    links.extend(hosts.iter().map(|h| format!("mwbr{}", h["slot"]["index"])));
    let pid = up.pid();
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    // Its children follow (they watch its pid); the control plane's store is free then.
    eventually(
        "the killed up's children to exit",
        Duration::from_secs(30),
        || children_of(pid).is_empty(),
    );
    let exists = |ns: &String| std::path::Path::new("/run/netns").join(ns).exists();
    assert!(netns.iter().all(exists), "kill -9 removed {netns:?}?");

    // The next `up` on that state directory removes it all before it starts.
    let state = std::mem::replace(&mut up.state, tempfile::tempdir().unwrap());
    drop(up);
    let next = Up::spawn_in(state, &example("store-billing"), &["--isolation=pods"], &[]);
    let line = next.wait_for_line("left in the kernel", Duration::from_secs(60));
    assert!(line.contains("4 pod(s)"), "{line}");
    for ns in &netns {
        assert!(
            !std::path::Path::new("/run/netns").join(ns).exists(),
            "{ns} left"
        );
    }
    next.wait_for_line("[up] ready", Duration::from_secs(120));
    let record = self::record(&next);
    assert!(record["hosts"].is_null(), "{record}");
    // A link of that name now is another `up`'s (this one's, or a test's running beside it).
    let alias = format!(
        "meshwork:{}",
        next.state.path().canonicalize().unwrap().display()
    );
    let own = format!("mwbr{}", record["slot"]["index"]);
    for link in links.iter().filter(|l| **l != own) {
        let now = std::fs::read_to_string(format!("/sys/class/net/{link}/ifalias"));
        assert!(
            now.is_err() || now.is_ok_and(|a| a.trim() != alias),
            "{link} of the killed up is still there"
        );
    }
}
