//! Object metadata as the fake API server keeps it: timestamps, the fields Go's `omitempty`
//! drops, and the comparisons that decide whether a write changed anything.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::resource::FakeResource;

/// Now, as the real server writes timestamps (`2025-12-10T01:58:31Z`).
pub(crate) fn now() -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// `object.metadata`, created if missing (a non-object `metadata` is replaced).
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let Value::Object(fields) = object else {
        unreachable!("invariant: made an object just above");
    };
    let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
    if !metadata.is_object() {
        *metadata = json!({});
    }
    match metadata {
        Value::Object(metadata) => metadata,
        _ => unreachable!("invariant: made an object just above"),
    }
}

/// A metadata string field.
pub(crate) fn field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object["metadata"][name].as_str()
}

/// `metadata.finalizers` (empty if absent).
pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The uids in `metadata.ownerReferences`.
pub(crate) fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Drops the metadata fields the real server's `omitempty` would not write when empty or
/// null (so `finalizers: []` after the last finalizer goes reads back as absent, as it does
/// on the real server).
pub(crate) fn normalize(object: &mut Value) {
    let metadata = metadata_mut(object);
    for name in [
        "finalizers",
        "labels",
        "annotations",
        "ownerReferences",
        "generateName",
    ] {
        let empty = match metadata.get(name) {
            Some(Value::Null) => true,
            Some(Value::Array(list)) => list.is_empty(),
            Some(Value::Object(map)) => map.is_empty(),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if empty {
            metadata.remove(name);
        }
    }
}

/// The metadata a create sets: name, namespace (for namespaced kinds), a new uid, the
/// `resourceVersion`, `creationTimestamp` and (for non-core kinds) `generation: 1`; what
/// only the server may set is dropped.
pub(crate) fn stamp_new(
    object: &mut Value,
    info: &FakeResource,
    (namespace, name): (&str, &str),
    revision: u64,
) {
    let metadata = metadata_mut(object);
    metadata.insert("name".into(), json!(name));
    if info.namespaced {
        metadata.insert("namespace".into(), json!(namespace));
    }
    metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    metadata.insert("resourceVersion".into(), json!(revision.to_string()));
    metadata.insert("creationTimestamp".into(), json!(now()));
    for server_owned in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        metadata.remove(server_owned);
    }
    if !info.group.is_empty() {
        metadata.insert("generation".into(), json!(1));
    }
}

/// Puts back on `next` (an object: callers check, see `admission::decodable`; anything else
/// is replaced by one) what a write may not change: `apiVersion`, `kind` and the metadata
/// the server owns (name, namespace, uid, creation and deletion, generation, version).
pub(crate) fn keep_server_fields(next: &mut Value, old: &Value) {
    let kept = &old["metadata"];
    let metadata = metadata_mut(next);
    for name in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match kept.get(name) {
            Some(value) => metadata.insert(name.into(), value.clone()),
            None => metadata.remove(name),
        };
    }
    if let Value::Object(fields) = next {
        for name in ["apiVersion", "kind"] {
            fields.insert(name.into(), old[name].clone());
        }
    }
    normalize(next);
}

/// Whether anything but `metadata` and `status` differs: what bumps `metadata.generation`.
pub(crate) fn spec_changed(before: &Value, after: &Value) -> bool {
    let strip = |object: &Value| {
        let mut object = object.clone();
        if let Value::Object(fields) = &mut object {
            fields.remove("metadata");
            fields.remove("status");
        }
        object
    };
    strip(before) != strip(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_empty_omitempty_fields_only() {
        let mut object =
            json!({"metadata":{"name":"a","finalizers":[],"labels":{},"annotations":{"k":"v"}}});
        normalize(&mut object);
        assert_eq!(
            object,
            json!({"metadata":{"name":"a","annotations":{"k":"v"}}})
        );
    }

    #[test]
    fn generation_counts_spec_changes_only() {
        let a = json!({"metadata":{"labels":{"x":"1"}},"spec":{"a":1},"status":{"s":1}});
        let b = json!({"metadata":{"labels":{"x":"2"}},"spec":{"a":1},"status":{"s":2}});
        let c = json!({"metadata":{},"spec":{"a":2}});
        assert!(!spec_changed(&a, &b));
        assert!(spec_changed(&a, &c));
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let now = now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
    }
}
