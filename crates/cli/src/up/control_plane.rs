//! The control plane under `up`: one `meshwork control` on `<state>/control.redb` (the
//! default), or several replicas sharing an etcd cluster (`--etcd URL… --control-replicas
//! N`). Each replica is restarted if it dies; the agents know every replica's node API
//! and the sidecars every replica's socket, so each fails over to a live one.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::supervisor::{Child, Supervisor};
use super::{Launch, ports, remove_stale};

/// How `up` runs the control plane.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ControlPlaneArgs {
    /// Run this many control-plane replicas; more than one needs --etcd (they share
    /// their state through it).
    #[arg(long, default_value = "1", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=9))]
    pub control_replicas: u16,
    /// Keep the control plane's state in this etcd cluster (a member's client URL; repeat
    /// for each member) instead of `<state>/control.redb`.
    #[arg(long = "etcd", value_name = "URL")]
    pub etcd: Vec<String>,
    /// The key-encryption key sealing CA and JWT keys in etcd; `<state>/kek` (created on
    /// first use) by default.
    #[arg(long, requires = "etcd", value_name = "PATH")]
    pub kek_file: Option<PathBuf>,
}

/// The running replicas.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Each replica's node API, replica 0 first.
    pub node_apis: Vec<String>,
    /// Each replica's control socket, replica 0's (`<state>/control.sock`) first.
    pub sockets: Vec<PathBuf>,
}

impl ControlPlane {
    /// The node APIs as one line for the table.
    pub fn node_api_list(&self) -> String {
        self.node_apis.join(", ")
    }
}

/// Starts the replicas (node APIs on `ip`) and waits for each one's socket.
pub async fn start(
    sup: &mut Supervisor,
    l: &Launch<'_>,
    args: &ControlPlaneArgs,
    ip: IpAddr,
) -> anyhow::Result<ControlPlane> {
    if args.control_replicas > 1 && args.etcd.is_empty() {
        bail!(
            "--control-replicas {} needs --etcd: replicas share their state through an etcd \
             cluster (one process on <state>/control.redb is the default)",
            args.control_replicas
        );
    }
    let shared = shared_store(l, args)?;
    let mut plane = ControlPlane {
        node_apis: Vec::new(),
        sockets: Vec::new(),
    };
    for i in 0..args.control_replicas {
        // A fixed port for this run, so a restarted replica is where agents last saw it.
        let port = ports::free_port().context("allocating a node API port")?;
        let node_api = SocketAddr::new(ip, port).to_string();
        let (state_dir, socket) = replica_paths(l, shared.is_some(), i)?;
        let mut control = Child::meshwork(&l.exe, "control")
            .args(["--resources".as_ref(), l.dir.as_os_str()])
            .args(["--state-dir".as_ref(), state_dir.as_os_str()])
            .args(["--socket".as_ref(), socket.as_os_str()])
            .args(["--node-api", &node_api]);
        if let Some(store) = &shared {
            control = control.args(store.args(i));
        }
        // A socket left by an earlier run (even one still served by its orphaned control
        // plane for a moment) must not pass for this run's: only ours can bind it again.
        remove_stale(&socket)?;
        let name = match i {
            0 => "control".to_owned(),
            i => format!("control-{i}"),
        };
        sup.spawn_restartable(&name, control)?;
        sup.wait_for_socket(&name, &socket, l.timeout).await?;
        plane.node_apis.push(node_api);
        plane.sockets.push(socket);
    }
    if shared.is_some() {
        publish_for_agents(l, &plane)?;
    }
    Ok(plane)
}

/// `--control-socket` for each replica's socket, replica 0's first (a sidecar fails
/// over to the next when its replica stops answering).
pub fn socket_args(l: &Launch<'_>) -> Vec<std::ffi::OsString> {
    let shared = !l.control.etcd.is_empty();
    (0..l.control.control_replicas)
        .filter_map(|i| replica_paths(l, shared, i).ok())
        .flat_map(|(_, socket)| ["--control-socket".into(), socket.into_os_string()])
        .collect()
}

/// A replica's state directory and socket: `<state>` and `<state>/control.sock` for the
/// one process of a redb store; `<state>/replicas/r<i>` for replicas of a shared store
/// (replica 0 keeps `<state>/control.sock`, which the cli's commands use).
fn replica_paths(l: &Launch<'_>, shared: bool, i: u16) -> anyhow::Result<(PathBuf, PathBuf)> {
    if !shared {
        return Ok((l.state.path().to_owned(), l.state.control_socket()));
    }
    let dir = l.state.path().join("replicas").join(format!("r{i}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let socket = match i {
        0 => l.state.control_socket(),
        _ => dir.join("control.sock"),
    };
    Ok((dir, socket))
}

/// The etcd members and the KEK every replica is given.
struct SharedStore {
    etcd: Vec<String>,
    kek: PathBuf,
}

impl SharedStore {
    fn args(&self, replica: u16) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        for url in &self.etcd {
            args.extend(["--etcd".into(), url.into()]);
        }
        args.extend(["--kek-file".into(), self.kek.clone().into_os_string()]);
        args.extend(["--replica-id".into(), format!("r{replica}").into()]);
        args
    }
}

/// The shared store's settings, creating `<state>/kek` if no KEK file is given; `None`
/// for the default redb store.
fn shared_store(l: &Launch<'_>, args: &ControlPlaneArgs) -> anyhow::Result<Option<SharedStore>> {
    if args.etcd.is_empty() {
        return Ok(None);
    }
    let kek = match &args.kek_file {
        Some(path) => path.clone(),
        None => {
            let path = l.state.path().join("kek");
            if !path.exists() {
                control::store::seal::Kek::create(&path)?;
            }
            path
        }
    };
    Ok(Some(SharedStore {
        etcd: args.etcd.clone(),
        kek,
    }))
}

/// What the agent bootstraps from, which one control process writes itself: every
/// replica's node API (`<state>/node-api.addr`, one per line) and the trust bundle
/// (`<state>/bundle.pem`, replica 0's: the same on every replica, one CA).
fn publish_for_agents(l: &Launch<'_>, plane: &ControlPlane) -> anyhow::Result<()> {
    let state = l.state.path();
    let addrs = state.join("node-api.addr");
    std::fs::write(&addrs, plane.node_apis.join("\n"))
        .with_context(|| format!("writing {}", addrs.display()))?;
    // A link, not a copy: replica 0 keeps its file current across CA rotations (an agent
    // started later must bootstrap with the roots of the day).
    let to = state.join("bundle.pem");
    let _ = std::fs::remove_file(&to);
    std::os::unix::fs::symlink("replicas/r0/bundle.pem", &to)
        .with_context(|| format!("linking {} to replicas/r0/bundle.pem", to.display()))?;
    Ok(())
}
