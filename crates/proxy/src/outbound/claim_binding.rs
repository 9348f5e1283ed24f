//! Egress to a claimed service, by its name inside pods (`<claim>.<namespace>.claims.meshwork`,
//! `api::taxonomy::claim_host`): admitted for the workload the claim is bound to, and only
//! for it.
//!
//! `meshwork up` writes each binding's credentials, including the instance's `host` and
//! `port`, under `<state>/bindings/<workload>/<claim>/` (root-only files), and hands the
//! app in a pod a URI naming the claim instead of the address. This workload's sidecar reads
//! its own binding root on each connection to such a name: a binding there, on the port the
//! app asked for, is the admission (and its address is where the sidecar connects); no
//! binding is a refusal. Other workloads' sidecars have no such binding, whatever the app
//! knows of the credentials. Read on each connection, not at start: claims are bound after
//! the sidecars start, and rebinding may move the instance.

use std::path::{Path, PathBuf};

/// Where this workload's bindings are (`<state>/bindings/<workload>`).
#[derive(Debug, Clone)]
pub struct ClaimBindings {
    root: PathBuf,
}

/// What the binding root says about one claimed name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Bound to this workload on this port: connect to `host:port`.
    Bound {
        /// The instance's host (an address or a name the sidecar resolves).
        host: String,
        /// The instance's port.
        port: u16,
    },
    /// Not bound to this workload (or not on this port); why, for the log.
    Refused(String),
}

impl ClaimBindings {
    /// The bindings under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ClaimBindings { root: root.into() }
    }

    /// Whether this workload may reach `claim` on `port`, and where it is.
    pub async fn admit(&self, claim: &str, port: u16) -> Admission {
        let dir = self.root.join(claim);
        let (host, bound_port) = match (read(&dir, "host").await, read(&dir, "port").await) {
            (Some(host), Some(port)) => (host, port),
            _ => {
                return Admission::Refused(format!(
                    "no binding of claim {claim:?} to this workload"
                ));
            }
        };
        match bound_port.parse::<u16>() {
            Ok(p) if p == port => Admission::Bound { host, port },
            Ok(p) => Admission::Refused(format!(
                "claim {claim:?} is bound to this workload on port {p}, not {port}"
            )),
            Err(_) => Admission::Refused(format!(
                "the binding of claim {claim:?} has no valid port ({})",
                dir.join("port").display()
            )),
        }
    }
}

async fn read(dir: &Path, entry: &str) -> Option<String> {
    let text = tokio::fs::read_to_string(dir.join(entry)).await.ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_binding_on_the_port_asked_for_admits() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = root.path().join("charges-db");
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("host"), "127.0.0.1\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("port"), "5432").unwrap_or_else(|e| panic!("{e}"));
        let bindings = ClaimBindings::new(root.path());
        assert_eq!(
            bindings.admit("charges-db", 5432).await,
            Admission::Bound {
                host: "127.0.0.1".into(),
                port: 5432
            }
        );
        for (claim, port, why) in [
            ("charges-db", 5433, "on port 5432, not 5433"),
            ("other-db", 5432, "no binding of claim \"other-db\""),
        ] {
            match bindings.admit(claim, port).await {
                Admission::Refused(reason) => assert!(reason.contains(why), "{reason}"),
                bound => panic!("{claim}:{port} admitted: {bound:?}"),
            }
        }
        let none = ClaimBindings::new(root.path().join("absent"));
        assert!(matches!(
            none.admit("charges-db", 5432).await,
            Admission::Refused(_)
        ));
    }
}
