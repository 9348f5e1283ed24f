//! The meshwork sidecar data path.
//!
//! Owns: the inbound listener (mTLS only; verifies the caller's SVID and tells the
//! local app who called in `x-meshwork-client-id`), the outbound listener (an HTTP
//! forward proxy for the local app, routing mesh service names over mTLS to peer
//! sidecars, h2-multiplexed and pooled), and the client side of the proxy⇄control
//! contract (SVID by CSR, endpoint registration, snapshot long poll). With
//! `ControlSource::WorkloadApi` the SVID instead comes from the node agent's SPIFFE
//! Workload API, like any workload's, and is swapped in on every push (`workload_api`).
//!
//! Must not import `control`, `broker` or `cli`; talks to the control plane only
//! through [`api::contract`] over its socket ([`ControlClient`]: the contract's one
//! client, [`api::contract::client::Client`], over a unix socket).
//!
//! Runs on any tokio runtime, including `current_thread`: nothing here assumes
//! worker threads.
//!
//! ```text
//! app ──HTTP_PROXY──▶ outbound ──mTLS h2──▶ peer inbound ──HTTP──▶ peer app
//!                     (classify, telemetry,            (telemetry, hop_by_hop,
//!                      hop_by_hop, steer ┬ route policy  client_id, authorize, app
//!                                        │ split           over the pool)
//!                                        │ balance
//!                                        │ endpoint ─ pool
//!                                        ├ tunnel ⟲ (the same stack)
//!                                        └ egress)
//!
//! app ──CONNECT svc:port──▶ outbound ──mTLS `meshwork.opaque`──▶ peer inbound ──TCP──▶ peer app:port
//!                           (opaque: any port but 80)  (preamble, TCP policy: caller × port)
//! ```
//!
//! Every request is counted by the telemetry layer (service, route template, method,
//! status, peer, duration) into [`PrometheusMetrics`], served on the admin `/metrics`.

mod admin;
mod body;
mod config;
mod control_client;
mod denial;
mod discovery;
mod endpoint_slot;
mod exposition;
mod forward_error;
mod hop_by_hop;
mod inbound;
mod label;
#[cfg(test)]
mod layering;
mod metrics;
pub mod opaque_preamble;
mod outbound;
pub mod pod;
mod pool;
mod prometheus;
mod proxy;
mod ready;
mod reserved_headers;
mod resilience;
mod retry;
mod route_classifier;
mod routes;
mod sample_ring;
mod server;
mod span_notes;
mod start_error;
mod tap;
mod telemetry;
mod trace;
pub mod trace_context;
mod upgrade;
mod workload_api;

use std::future::Future;

pub use admin::AdminSnapshot;
pub use body::{BoxError, ProxyBody};
pub use config::{
    AppProtocol, ControlSource, EgressDns, OpaquePorts, OtlpExport, OtlpProtocol, PeerProtocol,
    PodConfig, Propagation, ProxyConfig, TracingConfig, UnknownOtlpProtocol, VirtualCidr,
    VirtualCidrError,
};
pub use control_client::{ControlClient, ControlError};
pub use forward_error::{ForwardError, OverloadLimit, Side, TimeoutKind};
pub use inbound::app_readiness::{AppConnect, AppReadiness};
pub use inbound::client_id::CLIENT_ID_HEADER;
pub use label::{Label, MethodLabel};
pub use metrics::{
    BUCKETS, Direction, NoMetrics, OpaqueOutcome, Protocol, ProxyMetrics, RequestRecord,
    RetryReason, SLOTS, SeriesKey, SeriesSample, SpanDrop,
};
pub use prometheus::PrometheusMetrics;
pub use proxy::Proxy;
pub use ready::{PodInfo, ReadyFileError, ReadyInfo};
pub use server::{DRAIN_TIMEOUT, PeerIdentity};
pub use start_error::ProxyError;

/// Runs one sidecar until `shutdown` resolves: starts it ([`Proxy::start`]), writes
/// the ready file if configured (again with `app_listening: true` once the app has
/// opened its port), serves, and drains in-flight requests on shutdown.
/// Shutdown during startup (e.g. while control is still unreachable) returns `Ok`.
pub async fn run(
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let ready_file = config.ready_file.clone();
    let mut shutdown = std::pin::pin!(shutdown);
    let proxy = tokio::select! {
        started = Proxy::start(config) => started?,
        () = &mut shutdown => return Ok(()),
    };
    let Some(path) = ready_file else {
        proxy.serve(shutdown).await;
        return Ok(());
    };
    let mut info = proxy.ready_info().clone();
    ready::write_ready_file(&path, &info).await?;
    let readiness = proxy.app_readiness();
    let serve = proxy.serve(shutdown);
    let mut serve = std::pin::pin!(serve);
    tokio::select! {
        () = &mut serve => return Ok(()),
        () = readiness.listening() => {}
    }
    info.app_listening = true;
    ready::write_ready_file(&path, &info).await?;
    serve.await;
    Ok(())
}
