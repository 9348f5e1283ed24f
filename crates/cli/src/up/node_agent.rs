//! The node agent under `up`: a join token from the control plane, one `meshwork agent`,
//! and a registration entry per sidecar.
//!
//! Every process `up` starts runs as the same uid and (for `meshwork` workloads) the
//! same executable, so uid and path alone cannot tell one sidecar from another. Each
//! entry therefore also pins the exact process `up` just spawned —
//! `unix:process:<pid>:<start time>` — which only that process can match (the start
//! time guards against pid reuse). The honest limit: any process of the same uid could
//! ptrace or impersonate a sibling anyway; per-uid isolation is what the OS offers.
//! See docs/identity.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use api::contract::admin::{CreateToken, PutEntry, TokenRequest};
use api::contract::client::{Client, UnixConnect};
use api::entry::{RegistrationEntrySpec, Selector};
use identity::SpiffeId;

use super::supervisor::{Child, Supervisor};
use crate::state::StateDir;

/// Where one node agent runs and what it serves.
pub struct AgentPlace {
    /// Its name in `up`'s logs (`agent`, `agent@a`).
    pub name: String,
    /// The network namespace it runs in (a simulated host's); `None`: `up`'s own.
    pub netns: Option<String>,
    /// Its Workload API socket.
    pub socket: PathBuf,
    /// Where it keeps its node SVID; `None`: `<state>/agent`.
    pub data_dir: Option<PathBuf>,
    /// The control plane's node APIs (one per replica); empty: what
    /// `<state>/node-api.addr` says.
    pub control: Vec<String>,
    /// The file its admin address (`/status`, `/metrics`, on its namespace's loopback) is
    /// written to.
    pub admin_file: PathBuf,
}

impl AgentPlace {
    /// The one agent of an `up` without simulated hosts.
    pub fn single(state: &StateDir) -> AgentPlace {
        AgentPlace {
            name: "agent".to_owned(),
            netns: None,
            socket: state.path().join("agent.sock"),
            data_dir: None,
            control: Vec::new(),
            admin_file: state.path().join("agent-admin.addr"),
        }
    }
}

/// Creates a join token, starts the agent at `place` and waits for its Workload API socket.
pub async fn start(
    sup: &mut Supervisor,
    exe: &std::path::Path,
    state: &StateDir,
    place: AgentPlace,
    timeout: Duration,
) -> anyhow::Result<PathBuf> {
    let admin = Client::new(UnixConnect(state.control_socket()));
    let request = TokenRequest { ttl_secs: Some(60) };
    let token = bounded(
        timeout,
        &format!("creating the join token of {}", place.name),
        admin.call(&CreateToken, &request),
    )
    .await?;
    // In a host's namespace, its own loopback: free there whatever is free here.
    let port = super::ports::free_port().context("allocating the agent's admin port")?;
    let admin_addr = format!("127.0.0.1:{port}");
    let mut agent = match &place.netns {
        Some(netns) => Child::meshwork_in(netns, exe, "agent"),
        None => Child::meshwork(exe, "agent"),
    }
    .args(["--state-dir".as_ref(), state.path().as_os_str()])
    .args(["--socket".as_ref(), place.socket.as_os_str()])
    .args(["--admin", &admin_addr])
    .env("MESHWORK_JOIN_TOKEN", &token.token);
    if let Some(dir) = &place.data_dir {
        agent = agent.args(["--data-dir".as_ref(), dir.as_os_str()]);
    }
    for control in &place.control {
        agent = agent.args(["--control", control]);
    }
    super::remove_stale(&place.socket)?;
    // Restartable: a restarted agent resumes with the node SVID saved in its data dir.
    sup.spawn_restartable(&place.name, agent)?;
    sup.wait_for_socket(&place.name, &place.socket, timeout)
        .await?;
    std::fs::write(&place.admin_file, &admin_addr)
        .with_context(|| format!("writing {}", place.admin_file.display()))?;
    Ok(place.socket)
}

/// Registers the entry that gives the just-spawned child `name` the identity `id`.
pub async fn register(
    sup: &Supervisor,
    state: &StateDir,
    name: &str,
    entry_id: &str,
    id: SpiffeId,
    timeout: Duration,
) -> anyhow::Result<()> {
    let Some(pid) = sup.pid(name) else {
        bail!("{name} is not running")
    };
    let facts = {
        let start_time = control::agent::process_start_time(pid)
            .with_context(|| format!("reading /proc/{pid}/stat of {name}"))?;
        let path = std::fs::read_link(format!("/proc/{pid}/exe"))
            .with_context(|| format!("reading /proc/{pid}/exe of {name}"))?;
        let uid = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(format!("/proc/{pid}")).context("stat /proc/pid")?,
        );
        vec![
            Selector::Uid(uid),
            Selector::Path(path),
            Selector::Process { pid, start_time },
        ]
    };
    let spec = RegistrationEntrySpec {
        spiffe_id: id,
        selectors: facts,
        hint: None,
    };
    let admin = Client::new(UnixConnect(state.control_socket()));
    let what = format!("registering {name} with the control plane");
    bounded(timeout, &what, admin.call(&PutEntry(entry_id), &spec)).await?;
    Ok(())
}

/// `call` to the control plane, given up on after `timeout` (a control plane that accepts
/// but never answers must not hold `up`'s startup forever).
async fn bounded<T, E>(
    timeout: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.with_context(|| what.to_owned()),
        Err(_) => bail!(
            "{what}: the control plane did not answer within {}s",
            timeout.as_secs()
        ),
    }
}
