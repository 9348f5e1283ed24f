//! The patch types the fake API server understands, applied to an object's JSON.
//!
//! - `application/merge-patch+json`: RFC 7396 (a `null` removes a field).
//! - `application/json-patch+json`: RFC 6902 with the `json-patch` crate, plus one quirk of the
//!   real server's (evanphx/json-patch) that kube-runtime's `finalizer` helper relies on: a
//!   `test` for `null` at a path that does not exist passes.
//! - `application/apply-patch+yaml` (server-side apply): approximated as a merge of the applied
//!   object (JSON, which is YAML) into the live one. The fake tracks no field ownership: no
//!   `managedFields`, no conflicts between field managers, and fields an applier stops sending
//!   are not removed. A fake, not the real thing. What the real server checks of the patch
//!   options is checked (`routing.rs`): `fieldManager` is required, `force` is refused on the
//!   other patch types; the manager's name is then ignored.
//! - `application/strategic-merge-patch+json` is refused (415): custom resources do not
//!   support it on the real server either.

use json_patch::{Patch, PatchOperation};
use serde_json::Value;

/// A patch body and its kind, parsed from the request.
#[derive(Debug)]
pub(crate) enum FakePatch {
    /// RFC 7396 JSON merge patch.
    Merge(Value),
    /// RFC 6902 JSON Patch.
    Json(Patch),
    /// Server-side apply, approximated as a merge.
    Apply(Value),
}

/// Why a patch could not be parsed or applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PatchError {
    /// The content type is not one of the three.
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )]
    MediaType,
    /// The body is not JSON of the right shape.
    #[error("the body of the request could not be decoded: {0}")]
    Decode(#[source] serde_json::Error),
    /// A JSON Patch operation failed (including a failed `test`).
    #[error("the server rejected our request due to an error in our request: {0}")]
    Apply(#[source] json_patch::PatchError),
}

impl FakePatch {
    /// Parses `body` as the patch type named by `content_type` (parameters ignored).
    pub(crate) fn parse(content_type: &str, body: &[u8]) -> Result<FakePatch, PatchError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Ok(FakePatch::Merge(
                serde_json::from_slice(body).map_err(PatchError::Decode)?,
            )),
            "application/json-patch+json" => Ok(FakePatch::Json(
                serde_json::from_slice(body).map_err(PatchError::Decode)?,
            )),
            "application/apply-patch+yaml" => Ok(FakePatch::Apply(
                serde_json::from_slice(body).map_err(PatchError::Decode)?,
            )),
            _ => Err(PatchError::MediaType),
        }
    }

    /// Whether this is server-side apply (which creates a missing object).
    pub(crate) fn is_apply(&self) -> bool {
        matches!(self, FakePatch::Apply(_))
    }

    /// The patched copy of `object`; `object` itself is left alone.
    pub(crate) fn apply_to(&self, object: &Value) -> Result<Value, PatchError> {
        let mut patched = object.clone();
        match self {
            FakePatch::Merge(patch) | FakePatch::Apply(patch) => {
                json_patch::merge(&mut patched, patch);
            }
            FakePatch::Json(patch) => {
                for operation in &patch.0 {
                    if null_test_of_missing_path(&patched, operation) {
                        continue;
                    }
                    json_patch::patch(&mut patched, std::slice::from_ref(operation))
                        .map_err(PatchError::Apply)?;
                }
            }
        }
        Ok(patched)
    }
}

/// `{"op":"test","path":p,"value":null}` where `p` does not exist: passes on the real server.
fn null_test_of_missing_path(document: &Value, operation: &PatchOperation) -> bool {
    match operation {
        PatchOperation::Test(test) => {
            test.value.is_null() && document.pointer(test.path.as_str()).is_none()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls_and_merges_objects() {
        let patch = FakePatch::parse(
            "application/merge-patch+json",
            br#"{"spec":{"a":null,"b":2},"metadata":{"labels":{"x":"y"}}}"#,
        )
        .unwrap();
        let out = patch
            .apply_to(&json!({"spec":{"a":1,"c":3},"metadata":{"name":"n"}}))
            .unwrap();
        assert_eq!(
            out,
            json!({"spec":{"b":2,"c":3},"metadata":{"name":"n","labels":{"x":"y"}}})
        );
    }

    #[test]
    fn json_patch_null_test_of_a_missing_path_passes_like_the_real_server() {
        let body = br#"[{"op":"test","path":"/metadata/finalizers","value":null},
                        {"op":"add","path":"/metadata/finalizers","value":["f"]}]"#;
        let patch = FakePatch::parse("application/json-patch+json", body).unwrap();
        let out = patch.apply_to(&json!({"metadata":{"name":"n"}})).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn json_patch_failed_test_is_an_error_and_leaves_the_object_alone() {
        let body = br#"[{"op":"test","path":"/metadata/finalizers/0","value":"other"},
                        {"op":"remove","path":"/metadata/finalizers/0"}]"#;
        let patch = FakePatch::parse("application/json-patch+json", body).unwrap();
        let object = json!({"metadata":{"finalizers":["f"]}});
        assert!(matches!(patch.apply_to(&object), Err(PatchError::Apply(_))));
        assert_eq!(object["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn strategic_merge_is_refused() {
        assert!(matches!(
            FakePatch::parse("application/strategic-merge-patch+json", b"{}"),
            Err(PatchError::MediaType)
        ));
    }
}
