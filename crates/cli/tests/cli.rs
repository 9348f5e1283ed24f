//! End-to-end tests: real `meshwork` processes, real sockets, real TLS, curl.

#[path = "cli/acknowledged_writes.rs"]
mod acknowledged_writes;
#[path = "cli/broker.rs"]
mod broker;
#[path = "cli/broker_crash.rs"]
mod broker_crash;
#[path = "cli/claims_cluster.rs"]
mod claims_cluster;
#[path = "cli/claims_deletion.rs"]
mod claims_deletion;
#[path = "cli/control_ha.rs"]
mod control_ha;
#[path = "cli/crds.rs"]
mod crds;
#[path = "cli/dashboard.rs"]
mod dashboard;
#[path = "cli/deploy.rs"]
mod deploy;
#[path = "cli/fanout.rs"]
mod fanout;
#[path = "cli/harness.rs"]
mod harness;
#[path = "cli/hosts.rs"]
mod hosts;
#[path = "cli/identity.rs"]
mod identity;
#[path = "cli/kube_cluster.rs"]
mod kube_cluster;
#[path = "cli/kubernetes_claims.rs"]
mod kubernetes_claims;
#[path = "cli/kubernetes_source.rs"]
mod kubernetes_source;
#[path = "cli/lifecycle.rs"]
mod lifecycle;
#[path = "cli/observe.rs"]
mod observe;
#[path = "cli/pod_mesh.rs"]
mod pod_mesh;
#[path = "cli/pod_ruleset.rs"]
mod pod_ruleset;
#[path = "cli/pods.rs"]
mod pods;
#[path = "cli/policy.rs"]
mod policy;
#[path = "cli/replicas.rs"]
mod replicas;
#[path = "cli/resiliency.rs"]
mod resiliency;
#[path = "cli/startup.rs"]
mod startup;
#[path = "cli/trace_config.rs"]
mod trace_config;
#[path = "cli/traces.rs"]
mod traces;
#[path = "cli/tracing_demo.rs"]
mod tracing_demo;
#[path = "cli/validate.rs"]
mod validate;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use harness::{Up, children_of, eventually, example, meshwork};

const STORE_ID: &str = "spiffe://meshwork.local/ns/default/sa/store";

fn curl_json(out: &std::process::Output) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "no status in curl output: {text:?} stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"));
    (code, json)
}

#[test]
fn store_billing_through_two_sidecars() {
    let mut up = Up::start(&example("store-billing"));

    // The acceptance command from the README, with the status appended.
    let out = up.exec(
        "store",
        &[
            "curl",
            "-sS",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            "http://billing/charges",
        ],
    );
    let (code, json) = curl_json(&out);
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["caller"], STORE_ID);

    // A caller cannot claim another identity: the sidecar replaces the header.
    let spoof = "x-meshwork-client-id: spiffe://meshwork.local/ns/default/sa/admin";
    let out = up.exec(
        "store",
        &[
            "curl",
            "-sS",
            "-X",
            "POST",
            "-H",
            spoof,
            "-w",
            "\n%{http_code}",
            "http://billing/charges",
        ],
    );
    let (code, json) = curl_json(&out);
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["caller"], STORE_ID, "spoofed identity reached the app");

    // Through a CONNECT tunnel (`-p`): HTTP inside it still takes the mesh path.
    let out = up.exec(
        "store",
        &[
            "curl",
            "-sS",
            "-p",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            "http://billing/charges",
        ],
    );
    let (code, json) = curl_json(&out);
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["caller"], STORE_ID, "the tunnel bypassed identity");

    // Two hops: reporting -> store (/checkout) -> billing; billing sees store.
    let out = up.exec(
        "reporting",
        &[
            "curl",
            "-sS",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            "http://store/checkout",
        ],
    );
    let (code, json) = curl_json(&out);
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["billing"]["caller"], STORE_ID);

    // Unknown mesh names are refused by the sidecar, with a JSON reason naming the
    // nearest service.
    let out = up.exec(
        "store",
        &["curl", "-sS", "-w", "\n%{http_code}", "http://biling/x"],
    );
    let (code, json) = curl_json(&out);
    assert_eq!(
        (code, json["error"].as_str()),
        (404, Some("unknown_service")),
        "{json}"
    );
    assert_eq!(
        json["did_you_mean"],
        serde_json::json!(["billing"]),
        "{json}"
    );

    let status = up.signal_and_wait("TERM", Duration::from_secs(15));
    assert!(status.success(), "up exited with {status}");
    eventually("every child of up to exit", Duration::from_secs(5), || {
        children_of(up.pid()).is_empty()
    });
}

#[test]
fn inbound_port_speaks_only_tls() {
    let up = Up::start(&example("store-billing"));
    let inbound = up.ready("billing")["inbound"]
        .as_str()
        .expect("inbound")
        .to_owned();
    let mut stream = TcpStream::connect(&inbound).expect("connect inbound");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"POST /charges HTTP/1.1\r\nHost: billing\r\nContent-Length: 0\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("HTTP/"),
        "plaintext client got an HTTP response: {text:?}"
    );
    assert!(
        !text.contains("caller"),
        "plaintext request reached the app: {text:?}"
    );
}

#[test]
fn killed_up_leaves_no_orphans() {
    let mut up = Up::start(&example("store-billing"));
    assert!(
        children_of(up.pid()).len() >= 7,
        "control + 3 proxies + 3 apps"
    );
    up.signal_and_wait("KILL", Duration::from_secs(5));
    eventually(
        "children to notice up is gone",
        Duration::from_secs(10),
        || children_of(up.pid()).is_empty(),
    );
}

#[test]
fn invalid_resources_are_reported_with_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["mesh.yaml", "services.yaml", "workloads.yaml"] {
        std::fs::copy(example("store-billing").join(f), dir.path().join(f)).expect("copy");
    }
    let bad = "apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: extra\nspec:\n  command: [x]\n  prot: http1\n";
    std::fs::write(dir.path().join("zz-bad.yaml"), bad).expect("write");
    let out = meshwork()
        .arg("up")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zz-bad.yaml:7:3")
            && err.contains("Workload/extra")
            && err.contains("spec.prot"),
        "{err}"
    );
}
