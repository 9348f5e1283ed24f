//! Opaque TCP on the inbound listener: a peer sidecar that negotiated ALPN
//! `meshwork.opaque` sends the 8-byte preamble ([`crate::opaque_preamble`]) naming a port;
//! the connection is authorized as (verified caller × port) by the `AuthorizationPolicy` TCP
//! rules of the services this workload backs ([`policy::Engine::authorize_tcp`]), then
//! spliced to the app at `<app ip>:<port>` ([`connect_app`]).
//!
//! - The preamble must arrive within [`PREAMBLE_TIMEOUT`]; anything else closes.
//! - The app's HTTP port is never spliced: HTTP to it goes through the HTTP stack, where the
//!   caller's identity is stamped (`x-meshwork-client-id`) and L7 rules apply. A raw splice
//!   would let a caller forge that header and skip those rules.
//! - Denied: the connection is closed (TCP has no error page), the decision is logged with a
//!   decision id, and counted in `meshwork_opaque_connections_total{outcome="denied"}`.
//! - Shutdown: a splice is not an HTTP exchange that can finish; it is not watched by the
//!   graceful drain and ends when the listener's tasks are aborted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use identity::SpiffeId;
use policy::{Decision, DecisionKind, DecisionReason, TcpRequest};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::app_connector::connect_app;
use super::app_readiness::AppReadiness;
use crate::denial::decision_id;
use crate::label::Label;
use crate::metrics::{Direction, OpaqueOutcome, ProxyMetrics};
use crate::opaque_preamble::Preamble;
use crate::routes::{RouteTable, Routes};

/// A peer sends its preamble right after the handshake: a connection that has not within
/// this is closed.
pub const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sending the TLS close_notify of a refused connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connecting to the app for a splice.
const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the inbound listener needs to serve opaque connections.
#[derive(Clone)]
pub struct OpaqueInbound {
    routes: Routes,
    own: Arc<SpiffeId>,
    /// The app: its address's IP is where splices go (its port is never spliced), and it
    /// knows how to reach the app (from inside its pod in pod mode).
    app: Arc<AppReadiness>,
    metrics: Arc<dyn ProxyMetrics>,
}

impl OpaqueInbound {
    /// Serves opaque connections to the app at `app`'s IP for workload `own`, deciding with
    /// the policies in `routes`.
    pub fn new(
        routes: Routes,
        own: SpiffeId,
        app: Arc<AppReadiness>,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Self {
        OpaqueInbound {
            routes,
            own: Arc::new(own),
            app,
            metrics,
        }
    }

    /// Reads the preamble, decides, and splices `tls` to the app until either side closes.
    pub async fn serve<I>(&self, mut tls: I, caller: SpiffeId)
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let table = self.routes.load();
        let service = Label::intern(table.services_of(&self.own).first().map_or("-", |s| s));
        let (mut app, port, id) = match self.open(&mut tls, &caller, &table).await {
            Ok(opened) => opened,
            Err(outcome) => {
                self.count(service, outcome);
                // A TLS close_notify, so the caller sees a clean end rather than a cut.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, tls.shutdown()).await;
                return;
            }
        };
        self.count(service, OpaqueOutcome::Spliced);
        match tokio::io::copy_bidirectional(&mut tls, &mut app).await {
            Ok((up, down)) => {
                tracing::debug!(%caller, port, up, down, decision_id = %id, "opaque connection closed")
            }
            Err(error) => {
                tracing::debug!(%caller, port, %error, decision_id = %id, "opaque connection ended with an error")
            }
        }
    }

    /// The preamble, the decision and the connection to the app: the app's socket, the
    /// port and the decision id; else the outcome to count.
    async fn open<I>(
        &self,
        tls: &mut I,
        caller: &SpiffeId,
        table: &RouteTable,
    ) -> Result<(TcpStream, u16, String), OpaqueOutcome>
    where
        I: AsyncRead + Unpin,
    {
        let preamble = Preamble::read(tls, PREAMBLE_TIMEOUT)
            .await
            .map_err(|error| {
                tracing::info!(%caller, error = %crate::forward_error::error_chain(&error),
                "opaque connection refused: bad preamble");
                OpaqueOutcome::Refused
            })?;
        let port = preamble.port;
        if port == self.app.addr().port() {
            tracing::warn!(%caller, port, "opaque connection refused: the app's HTTP port is \
                served as HTTP only (identity stamping and L7 policy)");
            return Err(OpaqueOutcome::Refused);
        }
        let (decision, decided_for) = decide(table, &self.own, caller, port);
        let id = decision_id();
        log(
            &decision,
            &id,
            caller,
            decided_for,
            port,
            &table.policies().hash,
        );
        if !decision.allowed {
            return Err(OpaqueOutcome::Denied);
        }
        let addr = SocketAddr::new(self.app.addr().ip(), port);
        match connect_app(&self.app, addr, APP_CONNECT_TIMEOUT).await {
            Ok(app) => Ok((app, port, id)),
            Err(error) => {
                tracing::info!(%caller, %addr, %error, decision_id = %id, "opaque connection: the app port is not reachable");
                Err(OpaqueOutcome::Unreachable)
            }
        }
    }

    fn count(&self, service: Label, outcome: OpaqueOutcome) {
        self.metrics
            .opaque_connection(Direction::Inbound, service, outcome);
    }
}

/// The first denial over the services this workload backs, else the first one's decision
/// (as for HTTP requests, `super::authorize`); policies that do not compile deny.
fn decide<'t>(
    table: &'t RouteTable,
    own: &SpiffeId,
    caller: &SpiffeId,
    port: u16,
) -> (Decision, &'t str) {
    let engine = match &table.policies().engine {
        Ok(engine) => engine,
        Err(error) => {
            let reason = format!("this proxy's policies do not compile: {error}");
            return (refusal(reason, DecisionKind::DefaultDeny), "");
        }
    };
    let mut allowed = None;
    for service in table.services_of(own) {
        let decision = engine.authorize_tcp(&TcpRequest {
            target_service: service,
            caller: Some(caller),
            port,
        });
        if !decision.allowed {
            return (decision, service);
        }
        allowed.get_or_insert((decision, service.as_str()));
    }
    allowed.unwrap_or_else(|| {
        let reason = "this workload backs no mesh service, so no policy targets it";
        let mut decision = refusal(reason.to_owned(), DecisionKind::NoPolicy);
        decision.allowed = true;
        (decision, "")
    })
}

fn refusal(matcher: String, kind: DecisionKind) -> Decision {
    Decision {
        allowed: false,
        reason: DecisionReason {
            policy: None,
            rule: None,
            matcher,
            kind,
        },
        audit: Vec::new(),
    }
}

fn log(decision: &Decision, id: &str, caller: &SpiffeId, service: &str, port: u16, hash: &str) {
    let caller = caller.as_str();
    for note in &decision.audit {
        tracing::info!(decision_id = id, caller, service, port, policy_hash = hash,
            outcome = ?note.outcome, policy = ?note.reason.policy, rule = ?note.reason.rule,
            matcher = %note.reason.matcher, "audit: policy in audit mode would decide otherwise");
    }
    let reason = &decision.reason;
    if decision.allowed {
        tracing::debug!(decision_id = id, caller, service, port, kind = ?reason.kind,
            policy = ?reason.policy, rule = ?reason.rule, "inbound opaque connection allowed");
    } else {
        tracing::warn!(decision_id = id, caller, service, port, policy_hash = hash,
            kind = ?reason.kind, policy = ?reason.policy, rule = ?reason.rule,
            matcher = %reason.matcher, "inbound opaque connection denied by policy");
    }
}
