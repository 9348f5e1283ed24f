//! `meshwork policy explain --json`: the decision, the request and where the engine came from.

use identity::SpiffeId;
use policy::Decision;
use serde_json::json;

use super::{Question, Source};
use crate::policy_cmd::{PolicyFiles, RunningPolicies, SidecarPolicies};

pub(super) fn to_json(
    question: &Question,
    decision: &Decision,
    source: &Source,
) -> serde_json::Value {
    let request = match question {
        Question::Inbound {
            caller,
            service,
            method,
            raw_path,
            path,
            headers,
        } => json!({
            "kind": "inbound", "from": caller.as_ref().map(SpiffeId::as_str), "to": service,
            "method": method, "path": raw_path, "normalized_path": path.as_str(),
            "headers": headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        Question::Egress {
            caller,
            host,
            port,
            http,
        } => json!({
            "kind": "egress", "from": caller.as_str(), "host": host.to_string(), "port": port,
            "method": http.as_ref().map(|(m, ..)| m), "path": http.as_ref().map(|(_, p, _)| p),
            "normalized_path": http.as_ref().map(|(.., p)| p.as_str()),
        }),
    };
    let engine = match source {
        Source::Files(f) => {
            json!({"source": "files", "hash": f.engine.hash().to_string(), "dir": f.dir})
        }
        Source::Running {
            running,
            files,
            sidecar,
        } => json!({
            "source": "snapshot", "hash": running.hash, "state_dir": running.state_dir,
            "snapshot_version": running.version,
            "files": match files {
                Ok(f) => json!({"dir": f.dir, "hash": f.engine.hash().to_string(),
                                "matches": f.engine.hash().to_string() == running.hash}),
                Err(e) => json!({"error": format!("{e:#}")}),
            },
            "sidecar": sidecar.as_ref().map(|(name, asked)| sidecar_json(name, asked, running, files)),
        }),
    };
    json!({"allowed": decision.allowed, "decision": decision, "request": request, "engine": engine})
}

fn sidecar_json(
    name: &str,
    asked: &anyhow::Result<SidecarPolicies>,
    running: &RunningPolicies,
    files: &anyhow::Result<PolicyFiles>,
) -> serde_json::Value {
    match asked {
        Ok(s) => json!({
            "workload": name, "admin": s.admin.to_string(), "hash": s.snapshot.policy_hash,
            "snapshot_version": s.snapshot.version,
            "matches_control_plane": s.snapshot.policy_hash == running.hash,
            "matches_files": files.as_ref().ok()
                .map(|f| f.engine.hash().to_string() == s.snapshot.policy_hash),
        }),
        Err(e) => json!({"workload": name, "error": format!("{e:#}")}),
    }
}
