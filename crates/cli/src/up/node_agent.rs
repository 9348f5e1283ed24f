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

/// Creates a join token, starts the agent and waits for its Workload API socket.
pub async fn start(
    sup: &mut Supervisor,
    exe: &std::path::Path,
    state: &StateDir,
    socket: PathBuf,
    timeout: Duration,
) -> anyhow::Result<PathBuf> {
    let admin = Client::new(UnixConnect(state.control_socket()));
    let request = TokenRequest { ttl_secs: Some(60) };
    let token = bounded(
        timeout,
        "creating the agent's join token",
        admin.call(&CreateToken, &request),
    )
    .await?;
    let port = super::ports::free_port().context("allocating the agent's admin port")?;
    let admin_addr = format!("127.0.0.1:{port}");
    let agent = Child::meshwork(exe, "agent")
        .args(["--state-dir".as_ref(), state.path().as_os_str()])
        .args(["--socket".as_ref(), socket.as_os_str()])
        .args(["--admin", &admin_addr])
        .env("MESHWORK_JOIN_TOKEN", &token.token);
    // Restartable: a restarted agent resumes with the node SVID saved in <state>/agent.
    sup.spawn_restartable("agent", agent)?;
    sup.wait_for_socket("agent", &socket, timeout).await?;
    let addr_file = state.path().join("agent-admin.addr");
    std::fs::write(&addr_file, &admin_addr)
        .with_context(|| format!("writing {}", addr_file.display()))?;
    Ok(socket)
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
