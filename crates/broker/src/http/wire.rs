//! OSB request bodies and response bodies.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::parameters::Action;
use crate::BrokerError;
use crate::store::{BindingAttributes, BindingRecord, InstanceRecord, MaintenanceInfo, Operation};
use crate::taxonomy::Taxonomy;

type Object = Map<String, Value>;

/// Optional fields may be absent, but when present must have their type: `null` is not a
/// string (the OpenAPI document does not mark them nullable).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// OSB `maintenance_info`; `{}` counts as absent.
#[derive(Debug, Deserialize)]
struct MaintenanceInfoBody {
    #[serde(default, deserialize_with = "present")]
    version: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<String>,
}

fn maintenance(body: Option<Object>) -> Result<Option<MaintenanceInfo>, BrokerError> {
    let Some(obj) = body.filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    let parsed: MaintenanceInfoBody = serde_json::from_value(Value::Object(obj)).map_err(|e| {
        BrokerError::BadRequest(format!("request body field maintenance_info: {e}"))
    })?;
    let version = parsed.version.ok_or_else(|| {
        BrokerError::BadRequest(
            "request body field maintenance_info.version is required".to_owned(),
        )
    })?;
    Ok(Some(MaintenanceInfo {
        version,
        description: parsed.description,
    }))
}

fn non_empty(field: &str, value: String) -> Result<String, BrokerError> {
    match value.is_empty() {
        true => Err(BrokerError::BadRequest(format!(
            "request body field {field} must not be empty"
        ))),
        false => Ok(value),
    }
}

/// `PUT /v2/service_instances/:id` body.
#[derive(Debug, Deserialize)]
pub(crate) struct ProvisionBody {
    service_id: String,
    plan_id: String,
    organization_guid: String,
    space_guid: String,
    #[serde(default, deserialize_with = "present")]
    context: Option<Object>,
    #[serde(default, deserialize_with = "present")]
    parameters: Option<Object>,
    #[serde(default, deserialize_with = "present")]
    maintenance_info: Option<Object>,
}

impl super::extract::OsbBody for ProvisionBody {
    const ACTION: Action = Action::Provision;
}

impl super::extract::OsbBody for UpdateBody {
    const ACTION: Action = Action::Update;
}

impl super::extract::OsbBody for BindBody {
    const ACTION: Action = Action::Bind;
}

impl ProvisionBody {
    pub(crate) fn into_attributes(self) -> Result<crate::store::InstanceAttributes, BrokerError> {
        Ok(crate::store::InstanceAttributes {
            service_id: non_empty("service_id", self.service_id)?,
            plan_id: non_empty("plan_id", self.plan_id)?,
            context: self.context,
            parameters: self.parameters,
            organization_guid: Some(non_empty("organization_guid", self.organization_guid)?),
            space_guid: Some(non_empty("space_guid", self.space_guid)?),
            maintenance_info: maintenance(self.maintenance_info)?,
        })
    }
}

/// OSB `previous_values`: validated for shape, otherwise informational.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct PreviousValues {
    #[serde(default, deserialize_with = "present")]
    service_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    plan_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    organization_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    space_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    maintenance_info: Option<Object>,
}

/// `PATCH /v2/service_instances/:id` body.
#[derive(Debug, Deserialize)]
pub(crate) struct UpdateBody {
    pub service_id: String,
    #[serde(default, deserialize_with = "present")]
    pub plan_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub context: Option<Object>,
    #[serde(default, deserialize_with = "present")]
    pub parameters: Option<Object>,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    previous_values: Option<PreviousValues>,
    #[serde(default, deserialize_with = "present")]
    maintenance_info: Option<Object>,
}

impl UpdateBody {
    pub(crate) fn maintenance_info(&mut self) -> Result<Option<MaintenanceInfo>, BrokerError> {
        maintenance(self.maintenance_info.take())
    }
}

/// OSB `bind_resource`.
#[derive(Debug, Deserialize)]
struct BindResource {
    #[serde(default, deserialize_with = "present")]
    app_guid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    route: Option<String>,
}

/// `PUT .../service_bindings/:bid` body.
#[derive(Debug, Deserialize)]
pub(crate) struct BindBody {
    service_id: String,
    plan_id: String,
    #[serde(default, deserialize_with = "present")]
    context: Option<Object>,
    #[serde(default, deserialize_with = "present")]
    parameters: Option<Object>,
    #[serde(default, deserialize_with = "present")]
    bind_resource: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    app_guid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    predecessor_binding_id: Option<String>,
}

impl BindBody {
    pub(crate) fn into_attributes(self) -> Result<BindingAttributes, BrokerError> {
        if let Some(r) = &self.bind_resource {
            let checked: BindResource = serde_json::from_value(r.clone()).map_err(|e| {
                BrokerError::BadRequest(format!("request body field bind_resource: {e}"))
            })?;
            let _ = (checked.app_guid, checked.route);
        }
        Ok(BindingAttributes {
            service_id: non_empty("service_id", self.service_id)?,
            plan_id: non_empty("plan_id", self.plan_id)?,
            context: self.context,
            parameters: self.parameters,
            bind_resource: self.bind_resource.and_then(|v| v.as_object().cloned()),
            app_guid: self.app_guid,
            predecessor_binding_id: self.predecessor_binding_id,
        })
    }
}

/// OSB instance `metadata`: labels say what was picked; attributes explain why.
pub(crate) fn instance_metadata(rec: &InstanceRecord) -> Value {
    let r = &rec.resolution;
    let mut attributes = json!({
        "resolution": r.explain(),
        "rule": r.rule,
        "resource": rec.resource,
        "limits": r.limits,
    });
    if let Some(team) = &r.team {
        attributes["team"] = team.clone().into();
    }
    if let Some(who) = &rec.requested_by {
        attributes["requestedBy"] = json!({"platform": who.platform, "identity": who.value});
    }
    json!({
        "labels": {
            "meshwork.dev/class": r.class,
            "meshwork.dev/environment": r.environment,
            "meshwork.dev/provider": r.provider,
            "meshwork.dev/size": r.size,
            "meshwork.dev/plan": r.plan,
        },
        "attributes": attributes,
    })
}

/// `GET /v2/service_instances/:id` body.
pub(crate) fn instance_resource(rec: &InstanceRecord, taxonomy: &Taxonomy) -> Value {
    let a = &rec.attributes;
    let mut v = json!({
        "service_id": a.service_id,
        "plan_id": a.plan_id,
        "metadata": instance_metadata(rec),
    });
    if let Some(p) = &a.parameters {
        v["parameters"] = Value::Object(p.clone());
    }
    let class = taxonomy.classes().get(&rec.resolution.class);
    if let Some(mi) = class.and_then(|c| c.maintenance_info.as_ref()) {
        v["maintenance_info"] = json!(mi);
    }
    v
}

/// OSB `last_operation` body.
pub(crate) fn last_operation(op: &Operation, instance_usable: Option<bool>) -> Value {
    let mut v = json!({"state": op.state, "description": op.description});
    if let Some(usable) = instance_usable {
        v["instance_usable"] = usable.into();
    }
    if op.kind == crate::store::OpKind::Update && op.state == crate::store::OpState::Failed {
        v["update_repeatable"] = true.into();
    }
    v
}

/// A binding response (`PUT` 200/201 and `GET`).
pub(crate) fn binding_body(rec: &BindingRecord, with_parameters: bool) -> Value {
    let mut v = json!({});
    if let Some(c) = &rec.credentials {
        v["credentials"] = c.to_osb();
        v["endpoints"] =
            json!([{"host": c.host, "ports": [c.port.to_string()], "protocol": "tcp"}]);
    }
    let mut metadata = json!({});
    if let Some(t) = &rec.expires_at {
        metadata["expires_at"] = t.clone().into();
    }
    if let Some(t) = &rec.renew_before {
        metadata["renew_before"] = t.clone().into();
    }
    v["metadata"] = metadata;
    if let (true, Some(p)) = (with_parameters, &rec.attributes.parameters) {
        v["parameters"] = Value::Object(p.clone());
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn provision(v: Value) -> Result<ProvisionBody, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn unknown_fields_are_ignored_and_nulls_refused() {
        let base = json!({"service_id": "s", "plan_id": "p", "organization_guid": "o", "space_guid": "g", "extra": 1});
        assert!(provision(base.clone()).is_ok());
        let mut with_null = base.clone();
        with_null["context"] = Value::Null;
        assert!(provision(with_null).is_err());
    }

    #[test]
    fn empty_maintenance_info_is_absent() {
        assert_eq!(maintenance(Some(Map::new())).unwrap(), None);
        let mi = json!({"version": "1.0.0"}).as_object().cloned();
        assert_eq!(maintenance(mi).unwrap().unwrap().version, "1.0.0");
        let bad = json!({"description": "x"}).as_object().cloned();
        assert!(maintenance(bad).is_err());
    }
}
