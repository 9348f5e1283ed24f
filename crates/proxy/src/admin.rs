//! The sidecar's admin listener (plain HTTP, keep it on loopback): `GET /metrics`
//! (OpenMetrics text, all written by [`exposition`]: SVID and CA expiry, snapshot version,
//! policy hash, then the request, connection and error metrics of the sidecar's
//! [`ProxyMetrics`] and the tap's counters, docs/telemetry.md), `GET /snapshot` (JSON, for
//! `meshwork policy explain --state-dir`), `GET /ready`, and the observation endpoints of
//! [`api::contract::observe`]: `GET /stats?window=SECS`, `GET /decisions?window=SECS`
//! ([`observe`], from the once-a-second samples of [`crate::sample_ring`], taken by a task
//! that runs with this listener) and `GET /tap` ([`tap_stream`]).
//!
//! **DNS rebinding:** a request whose `Host` (or absolute-form authority) is not
//! `localhost` or a loopback IP literal is refused with a `400` before anything is read, so
//! a web page cannot reach the listener through a domain that resolves to 127.0.0.1 (a
//! browser always sends the name it used). Requests without a `Host` (no browser) pass.
//!
//! Every answer is computed at request time from the live [`SvidStore`] and [`Routes`],
//! so a rotated SVID or a new snapshot shows on the next scrape; nothing is cached.
//! Metric names follow the node agent's admin endpoint (`meshwork_*`, unix-second
//! `*_expiry_timestamp_seconds`) so one alert rule covers both.

mod observe;
mod query;
mod tap_stream;

use std::convert::Infallible;
use std::net::IpAddr;
use std::ops::Not;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use identity::{SpiffeId, SvidStore};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{ProxyBody, full};
use crate::exposition::{self, Kind};
use crate::inbound::app_readiness::AppReadiness;
use crate::metrics::ProxyMetrics;
use crate::routes::Routes;
use crate::sample_ring::{self, SampleRing, Windowed};
use crate::server;
use crate::tap::TapHub;
pub use observe::Workload;
use query::{QueryError, TapFilter, WindowQuery};

/// The OpenMetrics text content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /snapshot`: what this sidecar currently routes and enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSnapshot {
    /// The version of the snapshot the sidecar serves.
    pub version: u64,
    /// The hash of the policies it enforces (empty: no policies received).
    pub policy_hash: String,
    /// The mesh services it routes (lower case, sorted).
    pub services: Vec<String>,
    /// The identity of its current SVID.
    pub spiffe_id: SpiffeId,
}

/// The admin listener, bound but not yet serving.
pub struct Admin {
    listener: TcpListener,
    state: Arc<AdminState>,
}

/// What the handlers read at request time.
struct AdminState {
    /// `/ready` is `503` until the app listens.
    app: Arc<AppReadiness>,
    store: Arc<SvidStore>,
    routes: Routes,
    requests: Arc<dyn ProxyMetrics>,
    workload: Workload,
    tap: Arc<TapHub>,
    /// Filled by the sampler task [`Admin::serve`] runs.
    ring: Arc<Mutex<SampleRing>>,
}

/// What the admin listener answers from, besides its socket.
pub struct AdminParts {
    /// The sidecar's SVID and bundle.
    pub store: Arc<SvidStore>,
    /// The current route table.
    pub routes: Routes,
    /// The request recorder.
    pub requests: Arc<dyn ProxyMetrics>,
    /// Whether the app listens yet.
    pub app: Arc<AppReadiness>,
    /// Who the sidecar is.
    pub workload: Workload,
    /// The telemetry layers' tap.
    pub tap: Arc<TapHub>,
}

impl Admin {
    /// The admin listener on `listener`, answering from `parts`.
    pub fn new(listener: TcpListener, parts: AdminParts) -> Admin {
        let ring = SampleRing::new(tokio::time::Instant::now());
        Admin {
            listener,
            state: Arc::new(AdminState {
                app: parts.app,
                store: parts.store,
                routes: parts.routes,
                requests: parts.requests,
                workload: parts.workload,
                tap: parts.tap,
                ring: Arc::new(Mutex::new(ring)),
            }),
        }
    }

    /// Serves, and samples the request counters once a second, until `shutdown` is
    /// cancelled (which also ends open `/tap` streams).
    pub async fn serve(self, shutdown: CancellationToken) {
        let state = self.state;
        let sampler = tokio::spawn(sample_ring::run_sampler(
            Arc::clone(&state.requests),
            Arc::clone(&state.ring),
            shutdown.child_token(),
        ));
        let streams = shutdown.child_token();
        server::accept_loop(self.listener, shutdown, move |stream, watcher| {
            let state = Arc::clone(&state);
            let streams = streams.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = answer(&state, &request, &streams);
                std::future::ready(Ok::<_, Infallible>(response))
            });
            server::serve_connection(TokioIo::new(stream), service, watcher)
        })
        .await;
        let _ = sampler.await;
    }
}

fn answer(
    state: &AdminState,
    request: &Request<Incoming>,
    streams: &CancellationToken,
) -> Response<ProxyBody> {
    if let Some(host) = foreign_host(request) {
        let refusal = format!(
            "host {host:?} refused: the admin listener answers only localhost or a loopback address\n"
        );
        return text(StatusCode::BAD_REQUEST, "text/plain", &refusal);
    }
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    endpoint(state, request.uri(), streams)
}

/// The answer of the endpoint `uri` names.
fn endpoint(
    state: &AdminState,
    uri: &http::Uri,
    streams: &CancellationToken,
) -> Response<ProxyBody> {
    let query = uri.query();
    match uri.path() {
        "/stats" => match WindowQuery::try_from(query) {
            Ok(asked) => state.windowed(asked, |w| {
                let id = state.store.svid().id().to_string();
                json(&observe::stats(&state.workload, id, w))
            }),
            Err(error) => bad_query(&error),
        },
        "/decisions" => match WindowQuery::try_from(query) {
            Ok(asked) => state.windowed(asked, |w| json(&observe::decisions(&state.workload, w))),
            Err(error) => bad_query(&error),
        },
        "/tap" => match TapFilter::try_from(query) {
            Ok(filter) => tap_stream::response(&state.tap, filter, streams.clone()),
            Err(error) => bad_query(&error),
        },
        "/metrics" => text(StatusCode::OK, OPENMETRICS, &state.metrics()),
        "/snapshot" => json(&state.snapshot()),
        "/ready" if state.app.is_listening() => text(StatusCode::OK, "text/plain", "ready\n"),
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            &format!(
                "not ready: the app has not opened {} yet\n",
                state.app.addr()
            ),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /snapshot, /ready, /stats, /decisions or /tap\n",
        ),
    }
}

/// The request's host when it is neither `localhost` nor a loopback IP literal (port
/// ignored); `None` when it is one, or absent.
fn foreign_host<B>(request: &Request<B>) -> Option<String> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => match request.headers().get(header::HOST) {
            Some(value) => match value.to_str() {
                Ok(host) => host,
                Err(_) => return Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            },
            None => return None,
        },
    };
    is_loopback_authority(authority)
        .not()
        .then(|| authority.to_owned())
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn json(value: &impl Serialize) -> Response<ProxyBody> {
    // invariant: the contract types have only string keys and plain values.
    let json = serde_json::to_string(value).unwrap_or_default();
    text(StatusCode::OK, "application/json", &json)
}

fn bad_query(error: &QueryError) -> Response<ProxyBody> {
    text(
        StatusCode::BAD_REQUEST,
        "text/plain",
        &format!("bad query: {error}\n"),
    )
}

fn text(status: StatusCode, content_type: &'static str, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl AdminState {
    /// `answer` applied to the requests of the window asked for; `501` when the recorder
    /// keeps no samples.
    fn windowed(
        &self,
        asked: WindowQuery,
        answer: impl FnOnce(&Windowed) -> Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let Some(current) = self.requests.sample() else {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "text/plain",
                "this sidecar's recorder keeps no request samples\n",
            );
        };
        let now = tokio::time::Instant::now();
        let windowed = self
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .window(now, asked.window, &current);
        answer(&windowed)
    }

    fn snapshot(&self) -> AdminSnapshot {
        let table = self.routes.load();
        AdminSnapshot {
            version: table.version(),
            policy_hash: table.policies().hash.clone(),
            services: table.service_names(),
            spiffe_id: self.store.svid().id().clone(),
        }
    }

    /// The gauges, read from the live store and table at scrape time, then the recorded
    /// request metrics and the tap's counters: one OpenMetrics document, all written by
    /// [`exposition`] (see `crate::prometheus` for why there is one encoder).
    fn metrics(&self) -> String {
        let mut out = String::new();
        self.identity_gauges(&mut out);
        self.snapshot_gauges(&mut out);
        self.requests.encode_text(&mut out);
        self.tap.encode_text(&mut out);
        out.push_str("# EOF\n");
        out
    }

    /// SVID and CA expiry.
    fn identity_gauges(&self, out: &mut String) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let svid = self.store.svid();
        let id = svid.id().to_string();
        let labels = [("spiffe_id", id.as_str())];
        let not_after = svid.not_after().unix_timestamp();
        gauge(
            out,
            "meshwork_svid_expiry_timestamp_seconds",
            "notAfter of this sidecar's X.509-SVID",
            &labels,
            not_after,
        );
        gauge(
            out,
            "meshwork_svid_expiry_remaining_seconds",
            "Seconds until this sidecar's X.509-SVID expires (negative: expired)",
            &labels,
            not_after - now,
        );
        if let Some(earliest) = earliest_root_expiry(&self.store) {
            gauge(
                out,
                "meshwork_ca_expiry_timestamp_seconds",
                "notAfter of the earliest-expiring root in this sidecar's trust bundle",
                &[],
                earliest,
            );
        }
    }

    /// The served snapshot's version and policy hash.
    fn snapshot_gauges(&self, out: &mut String) {
        let table = self.routes.load();
        gauge(
            out,
            "meshwork_snapshot_version",
            "Version of the routing/policy snapshot this sidecar serves",
            &[],
            table.version(),
        );
        exposition::family(
            out,
            "meshwork_policy",
            Kind::Info,
            "The hash of the policies this sidecar enforces",
        );
        let hash = [("policy_hash", table.policies().hash.as_str())];
        exposition::sample(out, "meshwork_policy_info", &hash, 1);
    }
}

/// A gauge family with its one sample.
fn gauge(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    exposition::family(out, name, Kind::Gauge, help);
    exposition::sample(out, name, labels, value);
}

/// The earliest notAfter among the bundle's roots (unparseable roots are skipped: the
/// bundle already proved each is a usable trust anchor).
fn earliest_root_expiry(store: &SvidStore) -> Option<i64> {
    store
        .bundle()
        .roots()
        .iter()
        .filter_map(|root| {
            let (_, cert) = x509_parser::parse_x509_certificate(root.as_ref()).ok()?;
            Some(cert.validity().not_after.timestamp())
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_answered() {
        for host in [
            "localhost",
            "LOCALHOST:9901",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:9901",
            "127.8.9.10:1",
            "[::1]",
            "[::1]:9901",
        ] {
            assert!(is_loopback_authority(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:9901",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:9901",
            "[::2]:9901",
            "",
        ] {
            assert!(!is_loopback_authority(host), "{host}");
        }
    }
}
