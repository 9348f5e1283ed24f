//! The proxy⇄control contract: JSON bodies exchanged over the control socket.
//!
//! Transport (today): HTTP/1.1 over the unix socket `<state>/control.sock`.
//! Routes:
//! - `POST /v1/svid` — [`SvidRequest`] → [`SvidResponse`]: a CSR in, a signed X.509-SVID out;
//!   the control plane never sees a private key.
//! - `POST /v1/endpoints` — [`EndpointRegistration`] → `204`: a sidecar announces its inbound address.
//! - `GET /v1/snapshot?since=V` — [`Snapshot`]: long poll, answers as soon as the version
//!   exceeds `V` (or after [`LONG_POLL_SECS`] with the current one).
//!
//! Errors are non-2xx answers with an [`ErrorBody`]. Each route is a [`client::Call`]
//! ([`SignSvid`], [`RegisterEndpoint`], [`SnapshotSince`]); the operator routes on the same
//! socket are in [`admin`], the agent's node API in [`node`]. [`client::Client`] is the one
//! client of all of them, on [`exchange`] (one request on a connected stream).

pub mod admin;
pub mod client;
pub mod exchange;
pub mod node;
pub mod observe;
pub mod traffic;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::Method;
use identity::SpiffeId;
use serde::{Deserialize, Serialize};

use client::{Call, NoBody};

/// How long the control plane holds a snapshot long poll before answering unchanged.
pub const LONG_POLL_SECS: u64 = 25;

/// Asks the control plane to sign a CSR for a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvidRequest {
    /// The workload's name (`metadata.name`).
    pub workload: String,
    /// A PKCS#10 CSR, PEM-encoded; its subject and SANs are ignored.
    pub csr_pem: String,
}

/// A signed X.509-SVID and the trust bundle to verify peers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvidResponse {
    /// The identity the SVID carries.
    pub spiffe_id: SpiffeId,
    /// Leaf first, PEM.
    pub cert_chain_pem: String,
    /// The trust domain's root certificates, PEM.
    pub bundle_pem: String,
    /// `notAfter` of the leaf, unix seconds.
    pub expires_at: i64,
}

/// A sidecar announcing where its inbound (mTLS) listener is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRegistration {
    /// The workload's name.
    pub workload: String,
    /// The inbound listener's address.
    pub inbound: SocketAddr,
    /// Which replica of the workload (`Workload` `spec.replicas`), from 0. Absent (older
    /// sidecars): replica 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replica: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// Everything a proxy needs to route: a versioned, complete view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Increases on every change; proxies long-poll with `since=version`.
    pub version: u64,
    /// Mesh services by name.
    pub services: BTreeMap<String, ServiceRoute>,
    /// Every `AuthorizationPolicy` and `EgressPolicy` of the mesh, named `<namespace>/<name>`
    /// (see [`crate::policy`]); proxies compile it with `policy::Engine::compile`.
    #[serde(default)]
    pub policies: policy::PolicySet,
    /// `policies.hash()` (hex), so a proxy's snapshot can be named and compared with files
    /// (`meshwork policy explain --state-dir`). Empty from control planes without policies.
    #[serde(default)]
    pub policy_hash: String,
}

/// A mesh service and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRoute {
    /// The service name callers use as a host (`http://billing/...`).
    pub name: String,
    /// Sidecar inbound addresses and the identity each must present.
    pub endpoints: Vec<Endpoint>,
    /// The service's route templates in match order (`spec.routes`), which sidecars label
    /// request metrics with. Absent (older control planes): none, every request `[unmatched]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<policy::RouteTemplate>,
    /// The Gateway API routes attached to the service and its resiliency knobs. Absent
    /// (older control planes): no routes, default knobs.
    #[serde(default, skip_serializing_if = "traffic::ServiceTraffic::is_default")]
    pub traffic: traffic::ServiceTraffic,
}

/// One backend: a sidecar's inbound address and the SPIFFE ID it must prove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Inbound mTLS listener.
    pub addr: SocketAddr,
    /// The identity the client side verifies on the handshake.
    pub identity: SpiffeId,
}

/// The body of every non-2xx control answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `unknown_workload`.
    pub error: String,
    /// A sentence for humans.
    pub description: String,
}

/// `POST /v1/svid`: has the CA sign the CSR.
#[derive(Debug, Clone, Copy)]
pub struct SignSvid;

impl Call for SignSvid {
    const METHOD: Method = Method::POST;
    type Request = SvidRequest;
    type Response = SvidResponse;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/svid")
    }
}

/// `POST /v1/endpoints`: announces a sidecar's inbound address (answered `204`).
#[derive(Debug, Clone, Copy)]
pub struct RegisterEndpoint;

impl Call for RegisterEndpoint {
    const METHOD: Method = Method::POST;
    type Request = EndpointRegistration;
    type Response = NoBody;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/endpoints")
    }
}

/// `GET /v1/snapshot?since=V`: long-polls until the version exceeds `V` (or control's
/// poll period passes).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSince(pub u64);

impl Call for SnapshotSince {
    const METHOD: Method = Method::GET;
    const LONG_POLL: bool = true;
    type Request = NoBody;
    type Response = Snapshot;
    fn path(&self) -> Cow<'static, str> {
        Cow::Owned(format!("/v1/snapshot?since={}", self.0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn service_routes_are_optional_in_snapshot_json() {
        // A snapshot from a control plane that predates `routes`.
        let old = r#"{"version":3,"services":{"billing":{"name":"billing","endpoints":[
            {"addr":"127.0.0.1:4000","identity":"spiffe://meshwork.local/ns/default/sa/billing"}]}}}"#;
        let snapshot: Snapshot = serde_json::from_str(old).unwrap();
        assert!(snapshot.services["billing"].routes.is_empty());

        let mut with_routes = snapshot.clone();
        let billing = with_routes.services.get_mut("billing").unwrap();
        billing.routes = vec![
            "/charges".parse().unwrap(),
            "/charges/{id}".parse().unwrap(),
        ];
        let json = serde_json::to_value(&with_routes).unwrap();
        assert_eq!(
            json["services"]["billing"]["routes"],
            serde_json::json!(["/charges", "/charges/{id}"])
        );
        let back: Snapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, with_routes);
        // No routes: the JSON is exactly what older proxies already read.
        let plain = serde_json::to_value(&snapshot).unwrap();
        assert!(plain["services"]["billing"].get("routes").is_none());
    }
}
