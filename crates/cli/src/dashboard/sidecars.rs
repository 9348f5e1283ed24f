//! The sidecars of a running mesh, from the ready files in `<state>/workloads/`, and the
//! plain-HTTP GETs the dashboard sends to their admin listeners.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::state::{ReadyFile, workload_of};

/// One sidecar that wrote a ready file with an admin address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Sidecar {
    /// The workload it fronts.
    pub workload: String,
    /// Its replica (from 0).
    pub replica: u16,
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// Its admin listener.
    pub admin: SocketAddr,
}

/// Every sidecar of the mesh in `state`, sorted by workload and replica; ready files that do
/// not parse or have no admin listener are skipped (a sidecar writes its file atomically,
/// so an unreadable one is being replaced or is not a sidecar's).
pub fn discover(state: &Path) -> Vec<Sidecar> {
    let Ok(entries) = std::fs::read_dir(state.join("workloads")) else {
        return Vec::new();
    };
    let mut found: Vec<Sidecar> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let stem = path
                .file_name()?
                .to_str()?
                .strip_suffix(".json")?
                .to_owned();
            let ready = ReadyFile::read(&path).ok()?;
            Some(Sidecar {
                workload: workload_of(&stem).to_owned(),
                replica: replica_of(&stem),
                spiffe_id: ready.spiffe_id,
                admin: ready.admin?,
            })
        })
        .collect();
    found.sort();
    found
}

/// `billing.1` → 1; `billing` → 0.
fn replica_of(stem: &str) -> u16 {
    stem.split_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// Sends `GET path` to `addr` and returns the response once its head arrived (any status
/// but 200 is an error), within `timeout`.
pub async fn open(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<Incoming> {
    let head = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        anyhow::Ok(sender.send_request(request).await?)
    };
    let response = tokio::time::timeout(timeout, head)
        .await
        .with_context(|| format!("http://{addr}{path}: no answer within {timeout:?}"))?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let status = response.status();
    if status != hyper::StatusCode::OK {
        bail!("GET http://{addr}{path} answered {status}");
    }
    Ok(response.into_body())
}

/// `GET path` from `addr`: the whole body, within `timeout`.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<Bytes> {
    let whole = async {
        let body = open(addr, path, timeout).await?;
        anyhow::Ok(body.collect().await?.to_bytes())
    };
    tokio::time::timeout(timeout, whole)
        .await
        .with_context(|| format!("http://{addr}{path}: body not read within {timeout:?}"))?
}

/// `GET path` from `addr`, parsed as JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<T> {
    let body = get(addr, path, timeout).await?;
    serde_json::from_slice(&body).with_context(|| format!("parsing http://{addr}{path}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ready_files_name_workload_and_replica() {
        let dir = tempfile::tempdir().unwrap();
        let workloads = dir.path().join("workloads");
        std::fs::create_dir_all(&workloads).unwrap();
        let ready = |admin: Option<&str>| {
            serde_json::json!({
                "inbound": "127.0.0.1:1", "outbound": "127.0.0.1:2",
                "spiffe_id": "spiffe://meshwork.local/ns/default/sa/billing",
                "admin": admin,
            })
            .to_string()
        };
        std::fs::write(workloads.join("billing.json"), ready(Some("127.0.0.1:10"))).unwrap();
        std::fs::write(
            workloads.join("billing.1.json"),
            ready(Some("127.0.0.1:11")),
        )
        .unwrap();
        std::fs::write(workloads.join("store.json"), ready(None)).unwrap();
        std::fs::write(workloads.join("broken.json"), "{").unwrap();
        let found = discover(dir.path());
        let names: Vec<(&str, u16, u16)> = found
            .iter()
            .map(|s| (s.workload.as_str(), s.replica, s.admin.port()))
            .collect();
        assert_eq!(names, [("billing", 0, 10), ("billing", 1, 11)]);
    }
}
