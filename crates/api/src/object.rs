//! Resources read from a Kubernetes API server's objects (controller mode, `meshwork control
//! --kubernetes`, docs/kubernetes.md): the same kinds, checks and cross-references as YAML
//! files, but errors name the object (`Kind namespace/name`) and the field instead of
//! `file:line`.
//!
//! An object as the API server returns it carries fields no resource file has. meshwork reads
//! `apiVersion`, `kind`, `spec` and, of `metadata`, `name`, `namespace`, `labels` and
//! `annotations`; it drops [`IGNORED_FIELDS`] and [`IGNORED_METADATA`] (each named here, so
//! that an unknown field is still refused as in a file), and an object being deleted
//! ([`is_being_deleted`]) counts as gone.

use serde_json::Value;

use crate::load::{LoadError, Origin, load_document};
use crate::set::ResourceSet;

/// Top-level fields meshwork ignores: `status` is written by controllers (the `ServiceClaim`
/// reconciler), never part of what a resource asks for.
pub const IGNORED_FIELDS: &[&str] = &["status"];

/// `metadata` fields the API server sets or other controllers manage, which meshwork ignores.
/// Every other field of Kubernetes' `ObjectMeta` (`name`, `namespace`, `labels`,
/// `annotations`) is read as from a file.
pub const IGNORED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "selfLink",
];

/// `Kind namespace/name` of an object, with `?` for what it lacks: how errors name it.
pub fn describe(object: &Value) -> String {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let meta = &object["metadata"];
    let kind = text(&object["kind"]).unwrap_or_else(|| "?".to_owned());
    let name = text(&meta["name"]).unwrap_or_else(|| "?".to_owned());
    match text(&meta["namespace"]) {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Whether the API server is deleting the object (`metadata.deletionTimestamp` is set; it
/// stays until its finalizers are removed). meshwork treats it as gone.
pub fn is_being_deleted(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

/// The object as meshwork reads it: without [`IGNORED_FIELDS`] and [`IGNORED_METADATA`].
/// Two objects with the same desired state describe the same resource, whatever their
/// resource versions or statuses.
pub fn desired_state(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(fields) = object.as_object_mut() {
        for field in IGNORED_FIELDS {
            fields.remove(*field);
        }
        if let Some(meta) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in IGNORED_METADATA {
                meta.remove(*field);
            }
        }
    }
    object
}

/// Adds one object (JSON as the API server returns it) to `set`, with the checks a resource
/// file's document gets (without the cross-resource ones: [`ResourceSet::validate`]).
pub fn load_object(object: &Value, set: &mut ResourceSet) -> Result<(), LoadError> {
    let described = describe(object);
    if !object.is_object() {
        return Err(LoadError::InvalidObject {
            object: described,
            field: None,
            message: "is not a JSON object".to_owned(),
        });
    }
    // The loader reads YAML, and JSON is YAML: the same parser, schema and checks as a file,
    // and field paths resolved the same way.
    let doc = serde_json::to_string_pretty(&desired_state(object)).map_err(|e| {
        LoadError::InvalidObject {
            object: described.clone(),
            field: None,
            message: e.to_string(),
        }
    })?;
    load_document(&doc, Origin::object(&described, &doc), set)
}

/// Every object but those being deleted into a validated set. Every invalid object is
/// reported (one line each), before the cross-resource checks.
pub fn load_objects<'a>(
    objects: impl IntoIterator<Item = &'a Value>,
) -> Result<ResourceSet, LoadError> {
    let mut set = ResourceSet::default();
    let errors: Vec<LoadError> = objects
        .into_iter()
        .filter(|object| !is_being_deleted(object))
        .filter_map(|object| load_object(object, &mut set).err())
        .collect();
    if !errors.is_empty() {
        return Err(LoadError::from_many(errors));
    }
    set.validate().map(|()| set)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
