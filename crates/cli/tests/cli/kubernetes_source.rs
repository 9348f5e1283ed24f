//! Controller mode's source of resources, end to end against the **fake** API server
//! (`testkit::kube_fake`; no real one runs here): a real `meshwork control --kubernetes`
//! reads the store-billing example from the cluster's objects, real sidecars (`meshwork
//! proxy`, SVIDs by CSR from the control socket) and billing's demo app serve, and edits made
//! through the Kubernetes API reach the running sidecars: a policy as a CRD edit, an invalid
//! edit that changes nothing, a watch that expires (410) and recovers, an `HTTPRoute` created.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use testkit::kube_fake::{FakeApiServer, FakeVerb, meshwork_resources};

use crate::deploy::CONTROL_PLANE_RBAC;

use crate::harness::{eventually, example, meshwork};

/// A `meshwork` child whose output lines are kept for the test to wait on; killed on drop.
struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Spawned {
    fn start(name: &str, cmd: &mut Command) -> Spawned {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshwork");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (tx, name) = (tx.clone(), name.to_owned());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    let _ = tx.send(line);
                }
            });
        }
        Spawned { child, lines }
    }

    /// The lines up to and including the first containing `needle`.
    fn lines_until(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!("no line containing {needle:?} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The kind's API resource, as the controller watches it.
fn api_resource(object: &Value) -> ApiResource {
    let kind = object["kind"].as_str().expect("kind");
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').expect("group/version");
    let plural = match kind {
        "HTTPRoute" => "httproutes",
        "GRPCRoute" => "grpcroutes",
        _ => {
            let info = api::crd::KINDS.iter().find(|k| k.kind == kind);
            info.expect("a meshwork kind").plural
        }
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn objects_of(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(example("store-billing").join(file)).expect("read");
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).expect("yaml"))
        .filter(|v| v.get("kind").is_some())
        .collect()
}

/// The cluster, as a client of it sees it: the fake API server and a kube client.
struct Cluster {
    rt: tokio::runtime::Runtime,
    fake: FakeApiServer,
    client: kube::Client,
}

impl Cluster {
    fn start(kubeconfig: &Path) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let fake = rt
            .block_on(FakeApiServer::start(&meshwork_resources()))
            .expect("fake API server");
        fake.write_kubeconfig(kubeconfig).expect("kubeconfig");
        let client = rt.block_on(async {
            let file = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
            let options = kube::config::KubeConfigOptions::default();
            let config = kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .expect("config");
            kube::Client::try_from(config).expect("client")
        });
        Cluster { rt, fake, client }
    }

    fn api(&self, object: &Value) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), "default", &api_resource(object))
    }

    fn create(&self, object: &Value) {
        let typed: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        self.rt
            .block_on(self.api(object).create(&PostParams::default(), &typed))
            .expect("create");
    }

    /// A merge patch of `object`'s `spec`.
    fn patch_spec(&self, object: &Value, spec: Value) {
        let name = object["metadata"]["name"].as_str().expect("name");
        let patch = Patch::Merge(json!({ "spec": spec }));
        self.rt
            .block_on(
                self.api(object)
                    .patch(name, &PatchParams::default(), &patch),
            )
            .expect("patch");
    }
}

/// `POST http://billing/charges` through store's sidecar; the status code (0: no answer).
fn charge(outbound: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(["-x", &format!("http://{outbound}"), "-X", "POST"])
        .arg("http://billing/charges")
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The control plane's snapshot, from its socket.
fn snapshot(state: &Path) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(state.join("control.sock"))
        .arg("http://localhost/v1/snapshot")
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// A sidecar for `workload` (app on `app_port`), with its ready file in `<state>/workloads`.
fn sidecar(state: &Path, workload: &str, app_port: u16) -> (Spawned, Value) {
    let ready = state.join("workloads").join(format!("{workload}.json"));
    let proxy = Spawned::start(
        &format!("{workload}/proxy"),
        meshwork()
            .args(["proxy", "--workload", workload])
            .args(["--app", &format!("127.0.0.1:{app_port}")])
            .arg("--control-socket")
            .arg(state.join("control.sock"))
            .arg("--ready-file")
            .arg(&ready)
            .args(["--admin", "127.0.0.1:0"]),
    );
    eventually(
        &format!("{workload}'s sidecar to serve"),
        Duration::from_secs(30),
        || ready.exists(),
    );
    let info =
        serde_json::from_str(&std::fs::read_to_string(&ready).expect("ready")).expect("json");
    (proxy, info)
}

#[test]
fn cluster_edits_reach_running_sidecars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("workloads")).expect("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = Cluster::start(&kubeconfig);

    // Every resource of the example but its route, which comes later.
    let mut objects = Vec::new();
    for file in [
        "mesh.yaml",
        "services.yaml",
        "workloads.yaml",
        "policies.yaml",
        "taxonomy.yaml",
        "claims.yaml",
    ] {
        objects.extend(objects_of(file));
    }
    for object in &objects {
        cluster.create(object);
    }
    let policy = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "billing-charges")
        .expect("billing-charges")
        .clone();

    let control = Spawned::start(
        "control",
        meshwork()
            .args(["control", "--kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--state-dir")
            .arg(&state),
    );
    control.lines_until("starting the control plane", Duration::from_secs(30));
    eventually("the control socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(state.join("control.sock")).is_ok()
    });

    let billing_port = free_port();
    let (_billing_proxy, billing) = sidecar(&state, "billing", billing_port);
    let _billing_app = Spawned::start(
        "billing/app",
        meshwork()
            .args(["demo", "billing"])
            .env("PORT", billing_port.to_string())
            .env("MESHWORK_WORKLOAD", "billing")
            .env(
                "HTTP_PROXY",
                format!("http://{}", billing["outbound"].as_str().expect("outbound")),
            ),
    );
    let (_store_proxy, store) = sidecar(&state, "store", free_port());
    let outbound = store["outbound"].as_str().expect("outbound").to_owned();
    eventually(
        "store to charge through billing",
        Duration::from_secs(30),
        || charge(&outbound) == 201,
    );

    // A policy edited as a custom resource reaches the running sidecar.
    let healthz_only = json!({"rules": [policy["spec"]["rules"][1].clone()]});
    cluster.patch_spec(&policy, healthz_only.clone());
    eventually(
        "store to be refused after the edit",
        Duration::from_secs(10),
        || charge(&outbound) == 403,
    );
    control.lines_until("policies reloaded and published", Duration::from_secs(10));

    // An invalid edit (store's rule back, with a path that is not one) changes nothing.
    let version = snapshot(&state)["version"].as_u64().expect("version");
    let mut invalid = policy["spec"].clone();
    invalid["rules"][0]["to"][0]["paths"][0]["exact"] = json!("charges");
    cluster.patch_spec(&policy, invalid);
    let logged = control
        .lines_until(
            "AuthorizationPolicy default/billing-charges field `spec.rules[0]",
            Duration::from_secs(10),
        )
        .join("\n");
    assert!(
        logged.contains("resources not reloaded, the previous policies keep serving"),
        "{logged}"
    );
    assert!(
        !logged.contains(".yaml:"),
        "a cluster object is not a file: {logged}"
    );
    assert_eq!(charge(&outbound), 403, "the previous policies keep serving");
    assert_eq!(
        snapshot(&state)["version"].as_u64(),
        Some(version),
        "nothing was published"
    );

    // Every watch expires (410 Gone): the watchers list again, and the revert still arrives.
    cluster.fake.expire_watches();
    cluster.patch_spec(&policy, policy["spec"].clone());
    eventually(
        "store to be allowed again after the revert",
        Duration::from_secs(15),
        || charge(&outbound) == 201,
    );

    // A route created in the cluster reaches the control plane's snapshot.
    let route_timeout =
        |s: &Value| s["services"]["billing"]["traffic"]["rules"][0]["requestTimeoutMs"].as_u64();
    assert_eq!(route_timeout(&snapshot(&state)), None);
    let route = objects_of("routes.yaml").remove(0);
    cluster.create(&route);
    eventually(
        "the HTTPRoute in the snapshot",
        Duration::from_secs(10),
        || route_timeout(&snapshot(&state)) == Some(3000),
    );
}
