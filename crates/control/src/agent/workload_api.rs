//! The SPIFFE Workload API (gRPC over a unix socket), served from [`AgentState`].
//!
//! Every call must carry `workload.spiffe.io: true` (else `InvalidArgument`, as the
//! spec says). The caller is attested from its peer credentials; a caller matching
//! no registration entry gets `PermissionDenied` with a fixed message, learning
//! nothing about which identities exist. Connections pass through
//! [`AuthorityShim`] so that clients sending the socket path as `:authority` work.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use api::entry::ProcessFacts;
use api::workload::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use api::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    SECURITY_HEADER, ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest,
    X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};
use futures_util::Stream;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use super::h2_authority::AuthorityShim;
use super::state::{AgentState, Identities};
use super::{Agent, AgentError, attest};

type Stream2<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The answer for a caller that matches no entry: deliberately uninformative.
const NO_IDENTITY: &str = "no identity issued";

/// Creates the socket (replacing a stale file) with mode 0666: any local process
/// may ask; attestation decides what it gets.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| AgentError::Listen {
        what: "Workload API socket",
        where_: path.display().to_string(),
        source,
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

/// Serves the Workload API until `stop` is cancelled.
pub(crate) async fn serve(listener: UnixListener, agent: Arc<Agent>, stop: CancellationToken) {
    let service = SpiffeWorkloadApiServer::new(WorkloadApi { agent });
    // Every connection goes through the shim that makes h2 accept the `:authority` of
    // gRPC C-core, grpc-java and grpc-swift clients (see `h2_authority`).
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityShim::new));
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stop.cancelled())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "Workload API server stopped");
    }
}

struct WorkloadApi {
    agent: Arc<Agent>,
}

/// Checks the security header and attests the caller.
fn caller<T>(request: &Request<T>) -> Result<ProcessFacts, Status> {
    let header = request
        .metadata()
        .get(SECURITY_HEADER)
        .and_then(|v| v.to_str().ok());
    if header != Some("true") {
        return Err(Status::invalid_argument(
            "security header missing from request",
        ));
    }
    request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .and_then(|cred| attest::facts(&cred))
        .ok_or_else(|| Status::permission_denied(NO_IDENTITY))
}

fn x509_response(
    ids: &[(api::contract::node::Entry, Arc<identity::Svid>)],
    state: &AgentState,
) -> X509svidResponse {
    let bundle = der_concat(state.bundle.roots());
    let svids = ids
        .iter()
        .map(|(entry, svid)| X509svid {
            spiffe_id: svid.id().to_string(),
            x509_svid: der_concat(svid.cert_chain()),
            x509_svid_key: svid.key().secret_der().to_vec(),
            bundle: bundle.clone(),
            hint: entry.spec.hint.clone().unwrap_or_default(),
        })
        .collect();
    X509svidResponse {
        svids,
        crl: vec![],
        federated_bundles: Default::default(),
    }
}

fn der_concat(certs: &[rustls::pki_types::CertificateDer<'_>]) -> Vec<u8> {
    certs
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

/// Streams `make(state)` every time it changes, as long as the caller keeps an
/// identity; ends with `PermissionDenied` when it loses the last one.
fn watch_stream<T, F>(agent: &Agent, facts: ProcessFacts, make: F) -> Stream2<T>
where
    T: Clone + PartialEq + Send + Sync + 'static,
    F: Fn(&Identities, &AgentState) -> Option<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let mut states = agent.state.subscribe();
    tokio::spawn(async move {
        let mut last: Option<T> = None;
        loop {
            // Clone the Arc so no watch guard is held across an await.
            let state = Arc::clone(&states.borrow_and_update());
            let ids = state.identities(&facts);
            if ids == Identities::None {
                let _ = tx.send(Err(Status::permission_denied(NO_IDENTITY))).await;
                return;
            }
            let next = make(&ids, &state);
            if let Some(msg) = next.filter(|m| last.as_ref() != Some(m)) {
                if tx.send(Ok(msg.clone())).await.is_err() {
                    return;
                }
                last = Some(msg);
            }
            tokio::select! {
                changed = states.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

impl WorkloadApi {
    fn entitled(&self, facts: &ProcessFacts) -> Result<(), Status> {
        match self.agent.state.borrow().identities(facts) {
            Identities::None => Err(Status::permission_denied(NO_IDENTITY)),
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream2<X509svidResponse>;
    type FetchX509BundlesStream = Stream2<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream2<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let facts = caller(&request)?;
        self.entitled(&facts)?;
        tracing::debug!(pid = facts.pid, uid = facts.uid, "FetchX509SVID");
        Ok(Response::new(watch_stream(
            &self.agent,
            facts,
            |ids, state| match ids {
                Identities::Ready(list) => Some(x509_response(list, state)),
                _ => None,
            },
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let facts = caller(&request)?;
        self.entitled(&facts)?;
        Ok(Response::new(watch_stream(
            &self.agent,
            facts,
            |_, state| {
                let key = state.bundle.trust_domain().spiffe_id().to_string();
                let bundles = [(key, der_concat(state.bundle.roots()))]
                    .into_iter()
                    .collect();
                Some(X509BundlesResponse {
                    crl: vec![],
                    bundles,
                })
            },
        )))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let facts = caller(&request)?;
        self.entitled(&facts)?;
        Ok(Response::new(watch_stream(
            &self.agent,
            facts,
            |_, state| {
                let key = state.bundle.trust_domain().spiffe_id().to_string();
                let jwks = if state.jwks.is_empty() {
                    r#"{"keys":[]}"#.to_owned()
                } else {
                    state.jwks.clone()
                };
                Some(JwtBundlesResponse {
                    bundles: [(key, jwks.into_bytes())].into_iter().collect(),
                })
            },
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let facts = caller(&request)?;
        let req = request.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let entries: Vec<_> = {
            let state = self.agent.state.borrow();
            state
                .matching(&facts)
                .into_iter()
                .filter(|e| req.spiffe_id.is_empty() || e.spec.spiffe_id.as_str() == req.spiffe_id)
                .cloned()
                .collect()
        };
        if entries.is_empty() {
            return Err(Status::permission_denied(NO_IDENTITY));
        }
        let mut svids = Vec::new();
        for entry in entries {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let minted = self
                .agent
                .jwt_cache
                .token(&self.agent.client, &entry.id, &req.audience, now)
                .await
                .map_err(|e| {
                    if e.is_transient() {
                        Status::unavailable(e.to_string())
                    } else {
                        Status::internal(e.to_string())
                    }
                })?;
            let hint = entry.spec.hint.clone().unwrap_or_default();
            svids.push(Jwtsvid {
                spiffe_id: minted.spiffe_id.to_string(),
                svid: minted.token,
                hint,
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let _facts = caller(&request)?;
        let req = request.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let bundle = self.agent.state.borrow().jwt_bundle.clone();
        let now = time::OffsetDateTime::now_utc();
        let (id, claims) = bundle
            .validate(&req.svid, &req.audience, now)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let claims = prost_types::Struct {
            fields: claims.into_iter().map(|(k, v)| (k, to_prost(v))).collect(),
        };
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: id.to_string(),
            claims: Some(claims),
        }))
    }
}

fn to_prost(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_prost).collect(),
        }),
        J::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
