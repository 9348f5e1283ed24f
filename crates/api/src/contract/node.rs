//! The agent ⇄ control node API: JSON bodies and routes, HTTP/1.1 over mTLS on the
//! control plane's node-API port (served by `control::node_api`).
//!
//! - `POST /v1/node/join` [`JoinRequest`] → [`SvidResponse`] ([`Join`]): node attestation
//!   with a one-time join token; the only route that takes a caller without a client
//!   certificate, and the answer is the agent's node SVID.
//! - `POST /v1/node/renew` [`RenewRequest`] → [`SvidResponse`] ([`Renew`]): a fresh node SVID.
//! - `POST /v1/node/svid` [`WorkloadSvidRequest`] → [`SvidResponse`] ([`WorkloadSvid`]): an
//!   X.509-SVID for a registration entry; the agent attested the workload and made the key.
//! - `POST /v1/node/jwt` [`JwtSvidRequest`] → [`JwtSvidResponse`] ([`JwtSvid`]).
//! - `GET /v1/node/sync?since=V` → [`NodeView`] ([`NodeSync`]): long poll, like the proxy
//!   snapshot.

use std::borrow::Cow;

use http::Method;
use identity::SpiffeId;
use serde::{Deserialize, Serialize};

use super::SvidResponse;
use super::client::{Call, NoBody};
use crate::entry::RegistrationEntrySpec;

/// Path prefix of every agent's SPIFFE ID.
pub const AGENT_PATH_PREFIX: &str = "/meshwork/agent/";

/// The control plane's own SPIFFE ID path (what agents verify on every connection).
pub use identity::CONTROL_PATH;

/// Node attestation with a join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The one-time token from `meshwork token create`.
    pub token: String,
    /// CSR for the node SVID (the key stays with the agent).
    pub csr_pem: String,
}

/// Node SVID renewal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    /// CSR for the new node SVID.
    pub csr_pem: String,
}

/// An X.509-SVID for an entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadSvidRequest {
    /// The registration entry the workload matched.
    pub entry_id: String,
    /// CSR made by the agent for the workload.
    pub csr_pem: String,
}

/// A JWT-SVID for an entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwtSvidRequest {
    /// The registration entry the workload matched.
    pub entry_id: String,
    /// Audiences (at least one).
    pub audience: Vec<String>,
}

/// A minted JWT-SVID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JwtSvidResponse {
    /// Its subject.
    pub spiffe_id: SpiffeId,
    /// JWS compact serialisation.
    pub token: String,
    /// `exp`, unix seconds.
    pub expires_at: i64,
}

/// A registration entry with its id, as stored and as sent to agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique id (e.g. `up-billing`); re-registering an id replaces the entry.
    pub id: String,
    /// What it grants to whom.
    pub spec: RegistrationEntrySpec,
}

/// What agents need from control, under one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Grows on every change.
    pub version: u64,
    /// Every registration entry.
    pub entries: Vec<Entry>,
    /// The X.509 trust bundle, PEM (every published root).
    pub bundle_pem: String,
    /// The JWT bundle, a JWKS document.
    pub jwks: String,
}

/// `POST /v1/node/join`.
#[derive(Debug, Clone, Copy)]
pub struct Join;

impl Call for Join {
    const METHOD: Method = Method::POST;
    type Request = JoinRequest;
    type Response = SvidResponse;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/node/join")
    }
}

/// `POST /v1/node/renew`.
#[derive(Debug, Clone, Copy)]
pub struct Renew;

impl Call for Renew {
    const METHOD: Method = Method::POST;
    type Request = RenewRequest;
    type Response = SvidResponse;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/node/renew")
    }
}

/// `POST /v1/node/svid`.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSvid;

impl Call for WorkloadSvid {
    const METHOD: Method = Method::POST;
    type Request = WorkloadSvidRequest;
    type Response = SvidResponse;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/node/svid")
    }
}

/// `POST /v1/node/jwt`.
#[derive(Debug, Clone, Copy)]
pub struct JwtSvid;

impl Call for JwtSvid {
    const METHOD: Method = Method::POST;
    type Request = JwtSvidRequest;
    type Response = JwtSvidResponse;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/node/jwt")
    }
}

/// `GET /v1/node/sync?since=V`: long-polls until the view's version exceeds `V`.
#[derive(Debug, Clone, Copy)]
pub struct NodeSync(pub u64);

impl Call for NodeSync {
    const METHOD: Method = Method::GET;
    const LONG_POLL: bool = true;
    type Request = NoBody;
    type Response = NodeView;
    fn path(&self) -> Cow<'static, str> {
        Cow::Owned(format!("/v1/node/sync?since={}", self.0))
    }
}
