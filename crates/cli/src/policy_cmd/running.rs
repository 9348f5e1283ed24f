//! The policies a running mesh serves: its control plane's current snapshot (the one every
//! proxy follows), fetched over the control socket, plus the identities of its sidecars;
//! and what one sidecar actually enforces, from its admin endpoint's `/snapshot`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use api::contract::Snapshot;
use api::contract::traffic::ServiceTraffic;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use identity::SpiffeId;
use policy::Engine;
use proxy::AdminSnapshot;

use crate::state::{ReadyFile, StateDir};

/// A running mesh's policies, compiled, and where they came from.
pub struct RunningPolicies {
    /// The mesh's state directory.
    pub state_dir: PathBuf,
    /// The snapshot version the policies came with.
    pub version: u64,
    /// The snapshot's policy hash (equal to `engine.hash()`).
    pub hash: String,
    /// The snapshot's policies, compiled.
    pub engine: Engine,
    /// Workload name → SPIFFE ID, from the sidecars' ready files.
    pub workloads: BTreeMap<String, SpiffeId>,
    /// Each service's routes and knobs, as the snapshot carries them.
    pub traffic: BTreeMap<String, ServiceTraffic>,
}

/// How long the control plane may take to answer a command (it answers at once when well).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl RunningPolicies {
    /// Asks the control plane of the mesh in `state_dir` for its current snapshot.
    pub fn fetch(state_dir: &Path) -> anyhow::Result<RunningPolicies> {
        RunningPolicies::fetch_within(state_dir, FETCH_TIMEOUT)
    }

    /// [`RunningPolicies::fetch`], failing when the control plane has not answered within
    /// `timeout` (a hung one must not hang the caller).
    pub fn fetch_within(state_dir: &Path, timeout: Duration) -> anyhow::Result<RunningPolicies> {
        let state = StateDir::open(state_dir)?;
        let socket = state.control_socket();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The timeout is made inside the runtime: its timer needs one.
        let ask = async {
            tokio::time::timeout(timeout, snapshot(&socket))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
        };
        let snapshot = rt.block_on(ask).with_context(|| {
            format!(
                "asking the control plane at {} for its snapshot",
                socket.display()
            )
        })?;
        let engine = Engine::compile(&snapshot.policies)
            .context("the running mesh's policies do not compile")?;
        let hash = engine.hash().to_string();
        if snapshot.policy_hash != hash {
            bail!(
                "the running mesh announces policy hash {:?} but its policies hash to {hash}: \
                 is it running another meshwork version?",
                snapshot.policy_hash
            );
        }
        Ok(RunningPolicies {
            workloads: workload_ids(&state),
            state_dir: state.path().to_owned(),
            version: snapshot.version,
            traffic: snapshot
                .services
                .into_iter()
                .map(|(name, service)| (name, service.traffic))
                .collect(),
            hash,
            engine,
        })
    }
}

/// `GET /v1/snapshot?since=0` on the control socket: answers at once with the current one.
async fn snapshot(socket: &Path) -> anyhow::Result<Snapshot> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/v1/snapshot?since=0")
        .header(hyper::header::HOST, "control")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "control answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).context("parsing the snapshot")
}

/// Workload name → SPIFFE ID of every sidecar that wrote a ready file.
fn workload_ids(state: &StateDir) -> BTreeMap<String, SpiffeId> {
    let Ok(entries) = std::fs::read_dir(state.path().join("workloads")) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            // Every replica of a workload has its one identity: one row per workload.
            let name = crate::state::workload_of(path.file_stem()?.to_str()?).to_owned();
            let id = ReadyFile::read(&path).ok()?.spiffe_id.parse().ok()?;
            Some((name, id))
        })
        .collect()
}

/// What one running sidecar enforces, from its admin endpoint.
pub struct SidecarPolicies {
    /// Its admin listener.
    pub admin: SocketAddr,
    /// Its `GET /snapshot` answer.
    pub snapshot: AdminSnapshot,
}

impl SidecarPolicies {
    /// Reads `workload`'s ready file in `state_dir` and asks its admin endpoint for the
    /// snapshot it serves.
    pub fn fetch(state_dir: &Path, workload: &str) -> anyhow::Result<SidecarPolicies> {
        let state = StateDir::open(state_dir)?;
        let ready = ReadyFile::read(&state.ready_file(workload))
            .with_context(|| format!("no running sidecar for workload {workload:?}"))?;
        let Some(admin) = ready.admin else {
            bail!("the sidecar of {workload:?} runs without an admin endpoint (--admin)");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The timeout is made inside the runtime: its timer needs one.
        let ask =
            async { tokio::time::timeout(Duration::from_secs(5), admin_snapshot(admin)).await };
        let snapshot = rt
            .block_on(ask)
            .map_err(|_| anyhow::anyhow!("no answer within 5s"))
            .and_then(|answer| answer)
            .with_context(|| format!("asking the sidecar of {workload:?} at {admin}"))?;
        Ok(SidecarPolicies { admin, snapshot })
    }
}

/// `GET /snapshot` on a sidecar's admin listener (plain HTTP on loopback).
async fn admin_snapshot(admin: SocketAddr) -> anyhow::Result<AdminSnapshot> {
    let stream = tokio::net::TcpStream::connect(admin).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/snapshot")
        .header(hyper::header::HOST, admin.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "sidecar answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).context("parsing the sidecar's snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_plane_that_never_answers_is_given_up_on() {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // Accepts connections (the kernel's backlog) and never answers.
        let _hung = std::os::unix::net::UnixListener::bind(state.path().join("control.sock"))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = RunningPolicies::fetch_within(state.path(), Duration::from_millis(50))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("no answer within 50ms"), "{err}");
    }
}
