//! FAKE control plane (the real one lives in the `control` crate, which `proxy` must
//! not depend on): just enough of the `api::contract` routes over a unix socket to
//! exercise the proxy's control client, its startup exchange and its long-poll loop,
//! including what happens when control disappears. The real control plane is covered
//! against the real proxy by the lead's end-to-end tests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::contract::{EndpointRegistration, Snapshot, SvidRequest, SvidResponse};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use identity::SpiffeId;
use rustls_pki_types::CertificateDer;
use testkit::TestCa;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// The fake answers an unchanged long poll after this (the real one: 25 s).
const POLL_HOLD: Duration = Duration::from_millis(200);

struct State {
    ca: Arc<TestCa>,
    identities: HashMap<String, SpiffeId>,
    snapshots: watch::Sender<Snapshot>,
    registrations: Mutex<Vec<EndpointRegistration>>,
    svid_ttl: Mutex<time::Duration>,
    /// Every leaf certificate signed, per workload, oldest first.
    issued: Mutex<HashMap<String, Vec<CertificateDer<'static>>>>,
}

pub struct FakeControl {
    pub socket: PathBuf,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl FakeControl {
    pub fn start(ca: Arc<TestCa>, identities: HashMap<String, SpiffeId>, first: Snapshot) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut control = Self::start_at(dir.path().join("control.sock"), ca, identities, first);
        control._dir = Some(dir);
        control
    }

    /// A (re)started control plane on `socket`, with fresh state.
    pub fn start_at(
        socket: PathBuf,
        ca: Arc<TestCa>,
        identities: HashMap<String, SpiffeId>,
        first: Snapshot,
    ) -> Self {
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(State {
            ca,
            identities,
            snapshots: watch::channel(first).0,
            registrations: Mutex::default(),
            svid_ttl: Mutex::new(identity::DEFAULT_SVID_TTL),
            issued: Mutex::default(),
        });
        let task = tokio::spawn(accept(listener, Arc::clone(&state)));
        FakeControl {
            socket,
            state,
            task,
            _dir: None,
        }
    }

    pub fn publish(&self, snapshot: Snapshot) {
        self.state.snapshots.send_replace(snapshot);
    }

    pub fn registrations(&self) -> Vec<EndpointRegistration> {
        self.state.registrations.lock().unwrap().clone()
    }

    /// SVIDs signed from now on live `ttl` (short TTLs make sidecars rotate quickly).
    pub fn set_svid_ttl(&self, ttl: time::Duration) {
        *self.state.svid_ttl.lock().unwrap() = ttl;
    }

    /// The leaf certificates signed for `workload` so far, oldest first.
    pub fn issued(&self, workload: &str) -> Vec<CertificateDer<'static>> {
        let issued = self.state.issued.lock().unwrap();
        issued.get(workload).cloned().unwrap_or_default()
    }

    /// Control goes away: the socket stops answering and disappears.
    pub fn stop(&self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Connections live in a `JoinSet` owned by this task, so aborting it (control
/// "dies") also kills every open connection, long polls included.
async fn accept(listener: UnixListener, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let state = Arc::clone(&state);
        let service =
            hyper::service::service_fn(move |request| answer(Arc::clone(&state), request));
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        connections.spawn(connection);
    }
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = (request.method().clone(), request.uri().path().to_owned());
    let query = request.uri().query().unwrap_or("").to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let (status, json) = match (route.0.as_str(), route.1.as_str()) {
        ("POST", "/v1/svid") => sign(&state, &body),
        ("POST", "/v1/endpoints") => {
            state
                .registrations
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            (StatusCode::NO_CONTENT, String::new())
        }
        ("GET", "/v1/snapshot") => (StatusCode::OK, poll(&state, &query).await),
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","description":"no route"}"#.to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    Ok(response)
}

fn sign(state: &State, body: &[u8]) -> (StatusCode, String) {
    let request: SvidRequest = serde_json::from_slice(body).unwrap();
    let Some(id) = state.identities.get(&request.workload) else {
        let error = r#"{"error":"unknown_workload","description":"no such workload"}"#;
        return (StatusCode::NOT_FOUND, error.to_owned());
    };
    let now = time::OffsetDateTime::now_utc();
    let ttl = *state.svid_ttl.lock().unwrap();
    let certificate = state
        .ca
        .ca()
        .sign_csr(&request.csr_pem, id, ttl, now)
        .unwrap();
    state
        .issued
        .lock()
        .unwrap()
        .entry(request.workload.clone())
        .or_default()
        .push(certificate.cert_chain()[0].clone());
    let response = SvidResponse {
        spiffe_id: id.clone(),
        cert_chain_pem: certificate.to_pem(),
        bundle_pem: state.ca.bundle().to_pem(),
        expires_at: certificate.not_after().unix_timestamp(),
    };
    (StatusCode::OK, serde_json::to_string(&response).unwrap())
}

async fn poll(state: &State, query: &str) -> String {
    let since: u64 = query
        .strip_prefix("since=")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut rx = state.snapshots.subscribe();
    let _ = tokio::time::timeout(POLL_HOLD, rx.wait_for(|s| s.version > since)).await;
    let snapshot = rx.borrow().clone();
    serde_json::to_string(&snapshot).unwrap()
}
