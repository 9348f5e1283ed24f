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
    let head = ["apiVersion", "kind", "metadata", "spec"];
    let problem = match object.as_object() {
        None => Some("is not a JSON object"),
        // A file's document without any of these is skipped; an object is always a resource.
        Some(fields) if !head.iter().any(|f| fields.contains_key(*f)) => {
            Some("is not a resource: it has no apiVersion, kind, metadata or spec")
        }
        Some(_) => None,
    };
    if let Some(message) = problem {
        return Err(LoadError::InvalidObject {
            object: described,
            field: None,
            message: message.to_owned(),
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

/// The kinds whose objects are quarantined one by one ([`load_objects`]): the taxonomy
/// (the broker's catalog and the claims). The control plane serves none of them — no snapshot,
/// policy, route or identity depends on them — so one that does not load, or names what does
/// not exist (yet), must not hold up the kinds that shape what sidecars enforce.
pub const QUARANTINED_KINDS: &[&str] = &[
    "ServiceClass",
    "Environment",
    "ServicePolicy",
    "ServiceClaim",
];

/// An object [`load_objects`] left out of the set, and why.
#[derive(Debug)]
pub struct Quarantined {
    /// `Kind namespace/name`.
    pub object: String,
    /// Why it was left out: the loader's error.
    pub reason: LoadError,
}

/// A cluster's objects as a validated set, and the objects left out of it.
#[derive(Debug)]
pub struct ObjectSet {
    /// Every object that loads, validated.
    pub set: ResourceSet,
    /// Objects of [`QUARANTINED_KINDS`] that do not load or whose references do not resolve.
    pub quarantined: Vec<Quarantined>,
}

/// Every object but those being deleted into a validated set. An object of
/// [`QUARANTINED_KINDS`] that does not load, or a claim whose `bindTo`, `class` or `size`
/// names nothing, is left out and listed in [`ObjectSet::quarantined`]; the rest must
/// load and validate together (fail-closed: any other invalid object is an error, every
/// one reported, one line each, before the cross-resource checks).
pub fn load_objects<'a>(
    objects: impl IntoIterator<Item = &'a Value>,
) -> Result<ObjectSet, LoadError> {
    let mut set = ResourceSet::default();
    let mut quarantined = Vec::new();
    let mut errors = Vec::new();
    for object in objects.into_iter().filter(|o| !is_being_deleted(o)) {
        let Err(reason) = load_object(object, &mut set) else {
            continue;
        };
        match QUARANTINED_KINDS.contains(&object["kind"].as_str().unwrap_or_default()) {
            true => quarantined.push(Quarantined {
                object: describe(object),
                reason,
            }),
            false => errors.push(reason),
        }
    }
    if !errors.is_empty() {
        return Err(LoadError::from_many(errors));
    }
    quarantine_claims(&mut set, &mut quarantined);
    set.validate()?;
    Ok(ObjectSet { set, quarantined })
}

/// Moves the claims whose references do not resolve out of `set`. (Classes, environments
/// and service policies have no references the set checks: the broker checks those.)
fn quarantine_claims(set: &mut ResourceSet, quarantined: &mut Vec<Quarantined>) {
    for claim in std::mem::take(&mut set.service_claims) {
        let problems = set.claim_problems(&claim);
        match problems.is_empty() {
            true => set.service_claims.push(claim),
            false => quarantined.push(Quarantined {
                object: claim.origin.to_string(),
                reason: LoadError::from_many(problems),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
