//! The agent's admin endpoint (loopback HTTP): `/metrics` (Prometheus text, via
//! prometheus-client) with SVID and CA expiry gauges, and `/status` (JSON) for
//! `meshwork check`.

use std::net::SocketAddr;
use std::sync::Arc;

use api::contract::admin::AgentStatus;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Agent, AgentError};

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen {
            what: "agent admin listener",
            where_: addr.to_string(),
            source,
        })
}

pub(crate) async fn serve(listener: TcpListener, agent: Arc<Agent>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "agent admin endpoint (/metrics, /status) listening");
    }
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(agent);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "agent admin endpoint stopped");
    }
}

/// The current status of `agent`.
pub(crate) fn snapshot(agent: &Agent) -> AgentStatus {
    let state = agent.state.borrow();
    let node = agent.node.svid();
    AgentStatus {
        node_id: node.id().to_string(),
        node_svid_expires_at: node.not_after().unix_timestamp(),
        control_connected: state.control_connected,
        control_replica: agent.replicas.current().map(|(_, addr)| addr.to_string()),
        last_sync: state.last_sync.map(|t| t.unix_timestamp()),
        svids: state
            .svids
            .iter()
            .map(|(entry, s)| {
                (
                    entry.clone(),
                    s.id().to_string(),
                    s.not_after().unix_timestamp(),
                )
            })
            .collect(),
        ca_expires_at: state
            .bundle
            .roots()
            .iter()
            .filter_map(|r| not_after(r.as_ref()))
            .collect(),
        now: time::OffsetDateTime::now_utc().unix_timestamp(),
    }
}

async fn status(State(agent): State<Arc<Agent>>) -> Json<AgentStatus> {
    Json(snapshot(&agent))
}

fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SvidLabels {
    spiffe_id: String,
    entry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RootLabels {
    root: String,
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    let registry = registry(&snapshot(&agent));
    let mut body = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        tracing::error!(%error, "encoding metrics failed");
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], body)
}

/// The gauges, set from `status` (built per scrape: a handful of series).
fn registry(status: &AgentStatus) -> Registry {
    let mut registry = Registry::with_prefix("meshwork");
    let svids = Family::<SvidLabels, Gauge>::default();
    for (entry, spiffe_id, exp) in &status.svids {
        svids
            .get_or_create(&SvidLabels {
                spiffe_id: spiffe_id.clone(),
                entry: entry.clone(),
            })
            .set(*exp);
    }
    registry.register(
        "svid_expiry_timestamp_seconds",
        "notAfter of each workload X.509-SVID the agent holds",
        svids,
    );
    let node: Gauge = Gauge::default();
    node.set(status.node_svid_expires_at);
    registry.register(
        "node_svid_expiry_timestamp_seconds",
        "notAfter of the agent's node SVID",
        node,
    );
    let roots = Family::<RootLabels, Gauge>::default();
    for (i, exp) in status.ca_expires_at.iter().enumerate() {
        roots
            .get_or_create(&RootLabels {
                root: i.to_string(),
            })
            .set(*exp);
    }
    registry.register(
        "ca_expiry_timestamp_seconds",
        "notAfter of each root in the trust bundle",
        roots,
    );
    let connected: Gauge = Gauge::default();
    connected.set(i64::from(status.control_connected));
    registry.register(
        "control_connected",
        "1 when the last exchange with the control plane succeeded",
        connected,
    );
    registry
}

/// Asks an agent's admin endpoint for its status (for `meshwork check`).
pub async fn fetch_status(addr: SocketAddr) -> Result<AgentStatus, String> {
    use http_body_util::BodyExt;
    let ask = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = http::Request::get("/status")
            .header(header::HOST, "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = tx.send_request(request).await.map_err(|e| e.to_string())?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), ask)
        .await
        .unwrap_or_else(|_| Err("no answer within 5s".into()))
}
