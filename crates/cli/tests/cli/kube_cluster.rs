//! A cluster for controller-mode tests: the **fake** API server (`testkit::kube_fake`) with a
//! kube client to create and patch objects through its API, `meshwork` children whose output
//! lines a test waits on, sidecars, and a forwarder to take the API server away and back.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use testkit::kube_fake::{FakeApiServer, meshwork_resources};
use tokio::task::JoinHandle;

use crate::harness::{eventually, example, meshwork};

/// A `meshwork` child whose output lines are kept for the test to wait on; killed on drop.
pub struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Spawned {
    pub fn start(name: &str, cmd: &mut Command) -> Spawned {
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
    pub fn lines_until(&self, needle: &str, timeout: Duration) -> Vec<String> {
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

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The kind's API resource, as the controller watches it.
pub fn api_resource(object: &Value) -> ApiResource {
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

pub fn objects_of(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(example("store-billing").join(file)).expect("read");
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).expect("yaml"))
        .filter(|v| v.get("kind").is_some())
        .collect()
}

/// The cluster, as a client of it sees it: the fake API server and a kube client.
pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub fake: FakeApiServer,
    pub client: kube::Client,
}

impl Cluster {
    pub fn start(kubeconfig: &Path) -> Cluster {
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

    pub fn api(&self, object: &Value) -> Api<DynamicObject> {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        Api::namespaced_with(self.client.clone(), namespace, &api_resource(object))
    }

    pub fn create(&self, object: &Value) {
        let typed: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        self.rt
            .block_on(self.api(object).create(&PostParams::default(), &typed))
            .expect("create");
    }

    /// A merge patch of `object`'s `spec`.
    pub fn patch_spec(&self, object: &Value, spec: Value) {
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
pub fn charge(outbound: &str) -> u16 {
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
pub fn snapshot(state: &Path) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(state.join("control.sock"))
        .arg("http://localhost/v1/snapshot")
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// A sidecar for `workload` (app on `app_port`), with its ready file in `<state>/workloads`.
pub fn sidecar(state: &Path, workload: &str, app_port: u16) -> (Spawned, Value) {
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

/// Forwards `127.0.0.1:port` to `to` until aborted; aborting closes every connection, as an
/// API server going away does.
pub fn forward(
    rt: &tokio::runtime::Runtime,
    port: u16,
    to: std::net::SocketAddr,
) -> JoinHandle<()> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .expect("bind the forwarder");
    rt.spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// The policy hash of the control plane's snapshot (`None` while it does not answer).
pub fn policy_hash(state: &Path) -> Option<String> {
    snapshot(state)["policy_hash"].as_str().map(str::to_owned)
}
