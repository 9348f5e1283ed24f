//! Operator routes on the control socket (`<state>/control.sock`, mode 0600; served by
//! `control::admin`): JSON bodies and routes for `meshwork token`, `entry`, `ca`,
//! `check` and `up`.
//!
//! - `POST /v1/admin/tokens` [`TokenRequest`] → [`JoinToken`] ([`CreateToken`])
//! - `GET /v1/admin/entries` → `[Entry]` ([`ListEntries`])
//! - `PUT /v1/admin/entries/{id}` [`RegistrationEntrySpec`] → 204, durable before the answer
//!   ([`PutEntry`])
//! - `DELETE /v1/admin/entries/{id}` → 204 / 404 ([`DeleteEntry`])
//! - `POST /v1/admin/ca/rotate` → the prepared [`AuthorityStatus`], 409 while one is pending
//!   ([`RotateCa`])
//! - `GET /v1/admin/status` → [`ControlStatus`] ([`Status`])
//!
//! Also [`AgentStatus`], what an agent's own admin endpoint (`GET /status`) answers.

use std::borrow::Cow;

use http::Method;
use serde::{Deserialize, Serialize};

use super::client::{Call, NoBody};
use super::node::Entry;
use crate::entry::RegistrationEntrySpec;

/// Where an authority is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AuthorityState {
    /// In the bundle, not signing yet; starts signing at `activate_at` (unix s).
    Prepared {
        /// When it becomes the signing root.
        activate_at: i64,
    },
    /// The signing root.
    Active,
    /// No longer signing; leaves the bundle at `retire_at` (unix s).
    Retiring {
        /// When it leaves the bundle.
        retire_at: i64,
    },
}

/// One CA as shown by `meshwork ca status` / `meshwork check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityStatus {
    /// Its sequence number.
    pub seq: u64,
    /// Prepared / active / retiring.
    #[serde(flatten)]
    pub state: AuthorityState,
    /// The root's notAfter, unix s.
    pub not_after: i64,
}

/// A fresh join token, as handed to an operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinToken {
    /// The secret to pass to `meshwork agent --join-token`.
    pub token: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
}

/// The answer of `GET /v1/admin/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlStatus {
    /// The trust domain.
    pub trust_domain: String,
    /// Lifetime of issued X.509-SVIDs, seconds.
    pub svid_ttl_secs: i64,
    /// Every CA and its state.
    pub authorities: Vec<AuthorityStatus>,
    /// Registration entries.
    pub entries: usize,
    /// Agents that joined.
    pub agents: usize,
    /// The control plane's clock, unix seconds (for skew checks).
    pub now: i64,
}

/// Body of `POST /v1/admin/tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Lifetime in seconds; 10 minutes when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// An agent's `GET /status` (its admin endpoint): what `meshwork check` inspects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The agent's SPIFFE ID.
    pub node_id: String,
    /// The node SVID's notAfter, unix s.
    pub node_svid_expires_at: i64,
    /// Whether the last exchange with control succeeded.
    pub control_connected: bool,
    /// The control-plane replica the agent talks to now (its node API address). Absent
    /// from agents that predate replicas.
    #[serde(default)]
    pub control_replica: Option<String>,
    /// When control last answered a sync, unix s.
    pub last_sync: Option<i64>,
    /// Workload SVIDs held: `(entry id, SPIFFE ID, notAfter unix s)`.
    pub svids: Vec<(String, String, i64)>,
    /// notAfter of every root in the trust bundle, unix s.
    pub ca_expires_at: Vec<i64>,
    /// The agent's clock, unix s.
    pub now: i64,
}

/// `POST /v1/admin/tokens`: a new join token.
#[derive(Debug, Clone, Copy)]
pub struct CreateToken;

impl Call for CreateToken {
    const METHOD: Method = Method::POST;
    type Request = TokenRequest;
    type Response = JoinToken;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/admin/tokens")
    }
}

/// `GET /v1/admin/entries`: every entry.
#[derive(Debug, Clone, Copy)]
pub struct ListEntries;

impl Call for ListEntries {
    const METHOD: Method = Method::GET;
    type Request = NoBody;
    type Response = Vec<Entry>;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/admin/entries")
    }
}

/// `PUT /v1/admin/entries/{id}`: creates or replaces the entry with this id.
#[derive(Debug, Clone)]
pub struct PutEntry<'a>(pub &'a str);

impl Call for PutEntry<'_> {
    const METHOD: Method = Method::PUT;
    type Request = RegistrationEntrySpec;
    type Response = NoBody;
    fn path(&self) -> Cow<'static, str> {
        Cow::Owned(format!("/v1/admin/entries/{}", self.0))
    }
}

/// `DELETE /v1/admin/entries/{id}`.
#[derive(Debug, Clone)]
pub struct DeleteEntry<'a>(pub &'a str);

impl Call for DeleteEntry<'_> {
    const METHOD: Method = Method::DELETE;
    type Request = NoBody;
    type Response = NoBody;
    fn path(&self) -> Cow<'static, str> {
        Cow::Owned(format!("/v1/admin/entries/{}", self.0))
    }
}

/// `POST /v1/admin/ca/rotate`: starts a CA rotation, answers the prepared authority.
#[derive(Debug, Clone, Copy)]
pub struct RotateCa;

impl Call for RotateCa {
    const METHOD: Method = Method::POST;
    type Request = NoBody;
    type Response = AuthorityStatus;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/admin/ca/rotate")
    }
}

/// `GET /v1/admin/status`: the control plane's status.
#[derive(Debug, Clone, Copy)]
pub struct Status;

impl Call for Status {
    const METHOD: Method = Method::GET;
    type Request = NoBody;
    type Response = ControlStatus;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed("/v1/admin/status")
    }
}
