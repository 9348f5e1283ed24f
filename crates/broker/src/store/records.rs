//! What the broker persists: instances, bindings and their (possibly in-flight) operations.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::originating::OriginatingIdentity;
use crate::provider::Credentials;
use crate::taxonomy::Resolution;

/// The kind of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Creating an instance.
    Provision,
    /// Changing an instance's plan, parameters or context.
    Update,
    /// Deleting an instance.
    Deprovision,
    /// Creating a binding.
    Bind,
    /// Deleting a binding.
    Unbind,
}

impl OpKind {
    /// Lowercase name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Provision => "provision",
            OpKind::Update => "update",
            OpKind::Deprovision => "deprovision",
            OpKind::Bind => "bind",
            OpKind::Unbind => "unbind",
        }
    }
}

/// OSB `last_operation.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpState {
    /// Running (or to be resumed after a restart).
    #[serde(rename = "in progress")]
    InProgress,
    /// Done.
    #[serde(rename = "succeeded")]
    Succeeded,
    /// Failed; `description` says why and what was cleaned up.
    #[serde(rename = "failed")]
    Failed,
}

/// The last operation on an instance or binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Opaque id, returned as OSB `operation`.
    pub id: String,
    /// What it does.
    pub kind: OpKind,
    /// Where it is.
    pub state: OpState,
    /// Progress, result or failure, with the taxonomy resolution.
    pub description: String,
}

impl Operation {
    /// A new in-progress operation with a fresh id.
    pub fn start(kind: OpKind, description: impl Into<String>) -> Self {
        Operation {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            state: OpState::InProgress,
            description: description.into(),
        }
    }

    /// Whether the operation is still running.
    pub fn in_progress(&self) -> bool {
        self.state == OpState::InProgress
    }
}

/// OSB `maintenance_info` as sent by a platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceInfo {
    /// Semantic version.
    pub version: String,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The attributes a provision (or update) request carries; re-PUTs are compared on these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceAttributes {
    /// OSB `service_id`.
    pub service_id: String,
    /// OSB `plan_id`.
    pub plan_id: String,
    /// OSB `context`.
    pub context: Option<Map<String, Value>>,
    /// OSB `parameters`.
    pub parameters: Option<Map<String, Value>>,
    /// Deprecated OSB `organization_guid`.
    pub organization_guid: Option<String>,
    /// Deprecated OSB `space_guid`.
    pub space_guid: Option<String>,
    /// OSB `maintenance_info` (`{}` is stored as absent).
    pub maintenance_info: Option<MaintenanceInfo>,
}

/// An update waiting for its operation to finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingUpdate {
    /// The attributes after the update.
    pub attributes: InstanceAttributes,
    /// The resolution after the update.
    pub resolution: Resolution,
}

/// A service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// OSB instance id.
    pub id: String,
    /// What was asked for.
    pub attributes: InstanceAttributes,
    /// What the taxonomy decided.
    pub resolution: Resolution,
    /// The provider-side name (database, role prefix, key prefix), see [`crate::names`].
    pub resource: String,
    /// The last operation.
    pub operation: Operation,
    /// Whether the provider resources exist and work (false until provisioning succeeds).
    pub usable: bool,
    /// The target of an in-progress update.
    pub pending: Option<PendingUpdate>,
    /// Who asked, from `X-Broker-API-Originating-Identity`.
    pub requested_by: Option<OriginatingIdentity>,
}

/// The attributes a bind request carries; re-PUTs are compared on these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingAttributes {
    /// OSB `service_id`.
    pub service_id: String,
    /// OSB `plan_id`.
    pub plan_id: String,
    /// OSB `context`.
    pub context: Option<Map<String, Value>>,
    /// OSB `parameters`.
    pub parameters: Option<Map<String, Value>>,
    /// OSB `bind_resource`.
    pub bind_resource: Option<Map<String, Value>>,
    /// Deprecated OSB `app_guid`.
    pub app_guid: Option<String>,
    /// OSB 2.17 `predecessor_binding_id` (rotation).
    pub predecessor_binding_id: Option<String>,
}

/// A service binding: one provider user with its own password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// OSB instance id.
    pub instance_id: String,
    /// OSB binding id.
    pub binding_id: String,
    /// What was asked for.
    pub attributes: BindingAttributes,
    /// The provider user name, see [`crate::names`].
    pub username: String,
    /// Set once binding succeeded.
    pub credentials: Option<Credentials>,
    /// The last operation.
    pub operation: Operation,
    /// RFC 3339 expiry of the credentials, if the policy sets a TTL.
    pub expires_at: Option<String>,
    /// RFC 3339 time after which the platform should rotate.
    pub renew_before: Option<String>,
    /// Who asked.
    pub requested_by: Option<OriginatingIdentity>,
}

impl BindingRecord {
    /// Whether the binding holds (or may be creating) a provider user.
    pub fn is_live(&self) -> bool {
        self.operation.in_progress() || self.credentials.is_some()
    }
}
