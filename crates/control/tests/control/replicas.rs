//! Three control-plane replicas sharing a 3-member etcd cluster (real `etcd` processes on
//! loopback; skipped with a message when Debian's etcd-server is not installed, failed
//! under CI=true): a write through any replica is served by every replica, under the
//! same version; the leader's duties move when the leader stops; one join token admits
//! one agent even when two replicas redeem it at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::contract::admin::{CreateToken, ListEntries, PutEntry, RotateCa, Status, TokenRequest};
use api::contract::client::{Client, NoBody, UnixConnect};
use api::contract::{EndpointRegistration, RegisterEndpoint, Snapshot, SnapshotSince};
use api::entry::RegistrationEntrySpec;
use control::{ControlConfig, ControlError, EtcdConfig, StoreConfig};
use testkit::etcd::EtcdCluster;

use super::example;

/// How long a change may take to reach every replica (the bound is 1 s; the
/// directory poll adds up to 1 s for policy edits).
const PROPAGATION: Duration = Duration::from_secs(3);

struct Replica {
    state: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ControlError>>,
}

impl Replica {
    fn client(&self) -> Client<UnixConnect> {
        Client::new(UnixConnect(self.state.path().join("control.sock")))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .await
            .expect("join")
            .expect("replica stopped cleanly");
    }
}

/// A shared resource directory, a KEK and a replica starter.
struct Cluster {
    etcd: EtcdCluster,
    resources: tempfile::TempDir,
    kek: PathBuf,
    prefix: String,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let etcd = EtcdCluster::start_or_skip(3)?;
        let resources = tempfile::tempdir().expect("tempdir");
        for f in [
            "mesh.yaml",
            "services.yaml",
            "workloads.yaml",
            "policies.yaml",
        ] {
            std::fs::copy(example().join(f), resources.path().join(f)).expect("copy");
        }
        let kek = resources.path().join("kek");
        control::store::seal::Kek::create(&kek).expect("kek");
        let prefix = format!("/test-{}", std::process::id());
        Some(Cluster {
            etcd,
            resources,
            kek,
            prefix,
        })
    }

    fn replica(&self, id: &str) -> Replica {
        let state = tempfile::tempdir().expect("tempdir");
        let config = ControlConfig {
            socket: state.path().join("control.sock"),
            state_dir: state.path().to_owned(),
            resources: api::load_dir(self.resources.path()).expect("resources"),
            node_api: "127.0.0.1:0".parse().ok(),
            store: StoreConfig::Etcd(EtcdConfig {
                endpoints: self.etcd.endpoints(),
                // r3 spells the prefix with a trailing slash: the same store, and (the
                // prefix being the sealing scope) the same keys.
                prefix: Some(match id {
                    "r3" => format!("{}/", self.prefix),
                    _ => self.prefix.clone(),
                }),
                kek_file: self.kek.clone(),
                replica_id: id.to_owned(),
            }),
        };
        let (stop, rx) = tokio::sync::oneshot::channel();
        let dir = self.resources.path().to_owned();
        let task = tokio::spawn(control::serve_watching(config, Some(dir), async {
            let _ = rx.await;
        }));
        Replica {
            state,
            stop: Some(stop),
            task,
        }
    }
}

async fn wait_up(replica: &mut Replica) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if replica.client().call(&Status, &NoBody).await.is_ok() {
            return;
        }
        if replica.task.is_finished() {
            let ended = (&mut replica.task).await.expect("join");
            panic!("a replica stopped while starting: {ended:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a replica never served its socket");
}

async fn snapshot(replica: &Replica) -> Snapshot {
    replica
        .client()
        .call(&SnapshotSince(0), &NoBody)
        .await
        .expect("snapshot")
}

/// Waits until `check` holds for every replica's answer; how long that took.
async fn on_every<T>(
    replicas: &[&Replica],
    what: &str,
    get: impl AsyncFn(&Replica) -> T,
    check: impl Fn(&T) -> bool,
) -> Duration {
    let started = Instant::now();
    'again: while started.elapsed() < PROPAGATION {
        for r in replicas {
            if !check(&get(r).await) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue 'again;
            }
        }
        return started.elapsed();
    }
    panic!("{what}: not on every replica within {PROPAGATION:?}");
}

/// The version and the exact snapshot of each replica agree.
async fn same_snapshot(replicas: &[&Replica]) -> Snapshot {
    let first = snapshot(replicas[0]).await;
    for r in &replicas[1..] {
        assert_eq!(
            snapshot(r).await,
            first,
            "replicas serve different snapshots"
        );
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_etcd_serve_one_state() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(cluster) = Cluster::start() else {
        return;
    };
    // Started at once on an empty store: one creates the CA, the others read it.
    let mut replicas = [
        cluster.replica("r1"),
        cluster.replica("r2"),
        cluster.replica("r3"),
    ];
    for r in &mut replicas {
        wait_up(r).await;
    }
    let all: Vec<&Replica> = replicas.iter().collect();
    let status = |r: &Replica| {
        let client = r.client();
        async move { client.call(&Status, &NoBody).await.expect("status") }
    };
    let roots = status(&replicas[0]).await.authorities;
    assert_eq!(roots.len(), 1);
    for r in &replicas[1..] {
        assert_eq!(
            status(r).await.authorities,
            roots,
            "one CA for all replicas"
        );
    }
    let mut first = same_snapshot(&all).await;
    // Same version for the same state, after a startup race over who writes first.
    on_every(&all, "the start snapshot", snapshot, |s| {
        s.version == first.version
    })
    .await;

    // An endpoint registered through r2 is routed by r1 and r3.
    let inbound = "127.0.0.1:40001".parse().expect("addr");
    let registration = EndpointRegistration {
        workload: "billing".into(),
        inbound,
        replica: 0,
    };
    let client = replicas[1].client();
    client
        .call(&RegisterEndpoint, &registration)
        .await
        .expect("register");
    let took = on_every(&all, "the endpoint", snapshot, |s| {
        s.services["billing"]
            .endpoints
            .iter()
            .any(|e| e.addr == inbound)
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let second = same_snapshot(&all).await;
    assert!(second.version > first.version);
    first = second;

    // An entry put through r1 is in r3's list.
    let spec: RegistrationEntrySpec = serde_json::from_value(serde_json::json!({
        "spiffeId": "spiffe://meshwork.local/x", "selectors": ["unix:uid:1"]
    }))
    .expect("spec");
    replicas[0]
        .client()
        .call(&PutEntry("x"), &spec)
        .await
        .expect("put");
    let entries = |r: &Replica| {
        let client = r.client();
        async move { client.call(&ListEntries, &NoBody).await.expect("entries") }
    };
    let took = on_every(&all, "the entry", entries, |e| {
        e.iter().any(|e| e.id == "x")
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A CA rotation through r3 is in every replica's bundle; a second one anywhere is refused.
    replicas[2]
        .client()
        .call(&RotateCa, &NoBody)
        .await
        .expect("rotate");
    on_every(&all, "the new root", status, |s| s.authorities.len() == 2).await;
    let again = replicas[0].client().call(&RotateCa, &NoBody).await;
    assert!(
        again.is_err_and(|e| e.to_string().contains("rotation_in_progress")
            || e.to_string().contains("already in progress")),
        "a second rotation was accepted"
    );

    // A policy edit (applied by whichever replica leads) reaches every replica.
    edit_policies(cluster.resources.path());
    on_every(&all, "the policy edit", snapshot, |s| {
        s.policy_hash != first.policy_hash
    })
    .await;
    let edited = same_snapshot(&all).await;

    // The leader's duties move: with two replicas stopped (cleanly: they resign), the
    // last one applies the next edit whichever of them led.
    let [r1, r2, r3] = replicas;
    r1.stop().await;
    r2.stop().await;
    restore_policies(cluster.resources.path());
    on_every(&[&r3], "the edit after the leader stopped", snapshot, |s| {
        s.policy_hash == first.policy_hash && s.version > edited.version
    })
    .await;
    r3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_redeemed_through_two_replicas_at_once_admits_one_agent() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (mut a, mut b) = (cluster.replica("a"), cluster.replica("b"));
    wait_up(&mut a).await;
    wait_up(&mut b).await;
    for round in 0..5 {
        let request = TokenRequest {
            ttl_secs: Some(600),
        };
        let token = a
            .client()
            .call(&CreateToken, &request)
            .await
            .expect("token");
        // Each agent stops as soon as it serves: it joined.
        let join = |r: &Replica, name: &str| {
            let socket = r.state.path().join(name);
            let config = agent_config(r, token.token.clone(), &socket);
            control::agent::run(config, async move {
                super::workload_api::wait_for_socket(&socket).await
            })
        };
        let (x, y) = tokio::join!(
            join(&a, &format!("x{round}.sock")),
            join(&b, &format!("y{round}.sock"))
        );
        let joined = [x.is_ok(), y.is_ok()];
        assert_eq!(
            joined.iter().filter(|j| **j).count(),
            1,
            "round {round}: {x:?} {y:?}"
        );
    }
    let agents = a
        .client()
        .call(&Status, &NoBody)
        .await
        .expect("status")
        .agents;
    assert_eq!(agents, 5);
    a.stop().await;
    b.stop().await;
}

/// An agent that joins through `replica` only.
fn agent_config(replica: &Replica, token: String, socket: &Path) -> control::agent::AgentConfig {
    let state = replica.state.path();
    let addr = std::fs::read_to_string(state.join("node-api.addr")).expect("addr");
    let bundle = std::fs::read_to_string(state.join("bundle.pem")).expect("bundle");
    let td: identity::TrustDomain = "meshwork.local".parse().expect("td");
    control::agent::AgentConfig {
        control: vec![addr.trim().parse().expect("addr")],
        bootstrap_bundle: identity::TrustBundle::from_pem(td.clone(), &bundle).expect("bundle"),
        trust_domain: td,
        join_token: Some(token),
        data_dir: None,
        socket: socket.to_owned(),
        admin: None,
    }
}

fn edit_policies(dir: &Path) {
    let path = dir.join("policies.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    let edited = text.replace("ports: [443]", "ports: [443, 8443]");
    assert_ne!(edited, text, "the example's egress policy changed shape");
    std::fs::write(&path, edited).expect("write");
}

fn restore_policies(dir: &Path) {
    let path = dir.join("policies.yaml");
    std::fs::copy(example().join("policies.yaml"), &path).expect("restore");
}
