//! What `up` prints once everything serves: where each process listens, and a first
//! command to try.

use std::path::Path;

use api::ResourceSet;

use super::Launch;
use crate::state::ReadyFile;

/// One line of the table: a workload copy as `up` calls it, its app's address (the pod's
/// address in pod mode) and its sidecar's ready file.
pub struct Row {
    /// `billing`, or `billing-0`, `billing-1`… for replicas.
    pub name: String,
    /// `127.0.0.1:PORT`, or `<pod ip>:PORT`.
    pub app: String,
    /// The sidecar's ready file.
    pub info: ReadyFile,
}

/// Prints the table of every workload copy (`name` as `up` calls it: `billing`, or
/// `billing-0`, `billing-1`… for replicas), then `[up] ready`.
pub fn print_table(
    rows: &[Row],
    l: &Launch<'_>,
    node_api: &str,
    agent: &Path,
    dashboard: std::net::SocketAddr,
) {
    let state = l.state.path();
    println!("[up] meshwork is up; state in {}", state.display());
    println!(
        "[up] control plane   {} (node API {node_api})",
        l.state.control_socket().display()
    );
    println!(
        "[up] node agent      {} (SPIFFE_ENDPOINT_SOCKET=unix:{0})",
        agent.display()
    );
    if let Ok(addr) = std::fs::read_to_string(crate::claims::addr_file(state)) {
        println!("[up] service broker  http://{}", addr.trim());
    }
    println!("[up] dashboard       http://{dashboard}/");
    print_tracing(l);
    print_workloads(rows);
    if l.set.workload("store").is_some() && l.set.workload("billing").is_some() {
        println!("[up] try: meshwork exec store -- curl -s -X POST http://billing/charges");
    } else if let Some((from, to)) = example_call(l.set) {
        println!("[up] try: meshwork exec {from} -- curl -s http://{to}/");
    }
    println!("[up] ready");
}

/// Where spans go, or that tracing is off.
fn print_tracing(l: &Launch<'_>) {
    let mesh_tracing = l.set.mesh().and_then(|m| m.spec.tracing.as_ref());
    match super::trace_flags::for_up(mesh_tracing) {
        Ok(Some(tracing)) => println!(
            "[up] tracing         spans over OTLP {} to {} (sampling {} of new traces)",
            tracing.otlp.protocol,
            tracing.otlp.endpoint,
            tracing.sampler.ratio()
        ),
        Ok(None) => println!(
            "[up] tracing         off (Mesh spec.tracing or OTEL_EXPORTER_OTLP_ENDPOINT turns it on)"
        ),
        // The sidecars refused the same settings and said why.
        Err(_) => {}
    }
}

/// One line per sidecar: its workload, identity and listeners.
fn print_workloads(rows: &[Row]) {
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(8).max(8);
    let id = rows
        .iter()
        .map(|r| r.info.spiffe_id.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let a = rows.iter().map(|r| r.app.len()).max().unwrap_or(15).max(15);
    println!(
        "[up] {:<w$}  {:<id$}  {:<a$}  {:<15}  {:<15}  ADMIN (/metrics)",
        "WORKLOAD", "SPIFFE ID", "APP", "INBOUND (mTLS)", "OUTBOUND (proxy)"
    );
    for Row { name, app, info } in rows {
        let admin = info.admin.map_or_else(|| "-".to_owned(), |a| a.to_string());
        println!(
            "[up] {name:<w$}  {:<id$}  {app:<a$}  {:<15}  {:<15}  {admin}",
            info.spiffe_id,
            info.inbound.to_string(),
            info.outbound.to_string()
        );
    }
}

/// A workload and a service it does not back, for the "try:" hint.
fn example_call(set: &ResourceSet) -> Option<(String, String)> {
    let service = set.services.first()?;
    let name = service.resource.metadata.name.to_string();
    let caller = set
        .workloads
        .iter()
        .map(|w| &w.resource)
        .find(|w| !w.matches(&service.resource.spec.selector))?;
    Some((caller.metadata.name.to_string(), name))
}
