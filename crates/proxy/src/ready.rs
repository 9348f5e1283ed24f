//! The ready file: written once the proxy can serve, read by `meshwork up` and tests.
//!
//! Written to a temporary sibling and renamed into place, so a reader never sees a
//! half-written file (rename is atomic within a directory).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use identity::SpiffeId;
use serde::{Deserialize, Serialize};

/// Contents of the ready file, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The bound inbound (mTLS) listener.
    pub inbound: SocketAddr,
    /// The bound outbound (HTTP proxy) listener.
    pub outbound: SocketAddr,
    /// The identity this proxy serves and calls as.
    pub spiffe_id: SpiffeId,
    /// The bound admin listener (`/metrics`, `/snapshot`, `/ready`), if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<SocketAddr>,
    /// Whether the local app has opened its port. The file is first written with `false`
    /// (the app is started after its sidecar) and rewritten with `true` once it has: only
    /// then is the sidecar ready (`meshwork up` waits for it; admin `/ready` agrees).
    #[serde(default)]
    pub app_listening: bool,
    /// Pod mode: the pod this sidecar fronts (then `inbound` is on the pod's address and
    /// `outbound` is the capture listener, both inside the pod). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
}

/// The pod of a pod-mode sidecar, as the ready file reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// The pod's network namespace (`/run/netns/<name>`).
    pub netns: PathBuf,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

/// Why the ready file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write ready file {path}")]
pub struct ReadyFileError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Atomically writes `info` as JSON to `path`.
pub async fn write_ready_file(path: &Path, info: &ReadyInfo) -> Result<(), ReadyFileError> {
    let fail = |source| ReadyFileError {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec(info).map_err(|e| fail(std::io::Error::other(e)))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    tokio::fs::write(&tmp, json).await.map_err(fail)?;
    tokio::fs::rename(&tmp, path).await.map_err(fail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_is_written_in_pod_mode_only_and_old_files_still_read() {
        let old = r#"{"inbound":"127.0.0.1:1","outbound":"127.0.0.1:2",
                      "spiffe_id":"spiffe://meshwork.local/ns/default/sa/store"}"#;
        let mut info: ReadyInfo = serde_json::from_str(old).unwrap();
        assert_eq!(info.pod, None);
        assert!(!serde_json::to_string(&info).unwrap().contains("pod"));
        info.pod = Some(PodInfo {
            netns: PathBuf::from("/run/netns/mw0-store-0"),
            ip: Ipv4Addr::new(198, 18, 0, 2),
        });
        let json: serde_json::Value = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json["pod"],
            serde_json::json!({"netns": "/run/netns/mw0-store-0", "ip": "198.18.0.2"})
        );
    }
}
