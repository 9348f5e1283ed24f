//! `CustomResourceDefinition`s for every kind, generated from the spec types the loader reads.
//!
//! One source of truth: each kind's `openAPIV3Schema` is the `schemars` schema of the very
//! type `meshwork validate` deserialises (`MeshSpec`, `AuthorizationPolicySpec`, …), with the
//! ranges and patterns of the parse-don't-validate types (`crate::schema`), rewritten into a
//! *structural* schema as Kubernetes requires ([`structural`]). `meshwork crds` prints these;
//! `deploy/crds/` holds the committed copies and a cli test fails when they drift.
//!
//! The CRDs are plain JSON values: building them with `k8s-openapi` types would add ~95 s of
//! build for no check a JSON value lacks (the CRDs are validated against Kubernetes' own schema
//! by `kubernetes-validate` in `.ci/crds.sh`).

mod structural;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

use crate::resource::API_VERSION;
use crate::schema::NAME_PATTERN;
use crate::taxonomy::claim::ServiceClaimStatus;

/// The API group of every meshwork kind.
pub const GROUP: &str = "meshwork.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// What a CRD says about one kind besides its schema.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    /// `kind`, e.g. `AuthorizationPolicy`.
    pub kind: &'static str,
    /// The resource's plural name (`authorizationpolicies`).
    pub plural: &'static str,
    /// `kubectl get` short names; all start with `mw` so none shadows another project's.
    pub short_names: &'static [&'static str],
    /// Printer columns: (name, type, JSONPath, priority, description).
    pub columns: &'static [Column],
    /// Whether the kind has a `status` (and so a status subresource).
    pub has_status: bool,
    spec: fn(&mut SchemaGenerator) -> schemars::Schema,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column header.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `boolean`, `date`.
    pub kind: &'static str,
    /// Where the value is.
    pub json_path: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
}

const fn col(name: &'static str, kind: &'static str, json_path: &'static str) -> Column {
    Column {
        name,
        kind,
        json_path,
        priority: 0,
    }
}

const fn wide(name: &'static str, kind: &'static str, json_path: &'static str) -> Column {
    Column {
        name,
        kind,
        json_path,
        priority: 1,
    }
}

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
    generator.root_schema_for::<T>()
}

/// Every meshwork kind the loader knows ([`crate::set::KINDS`] but the Gateway API's routes,
/// whose CRDs are upstream's), in that order.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "Mesh",
        plural: "meshes",
        short_names: &["mwmesh"],
        columns: &[
            col("Trust Domain", "string", ".spec.trustDomain"),
            col("SVID TTL", "string", ".spec.svidTtl"),
        ],
        has_status: false,
        spec: schema_of::<crate::mesh::MeshSpec>,
    },
    KindInfo {
        kind: "Workload",
        plural: "workloads",
        short_names: &["mwwl"],
        columns: &[
            col("Service Account", "string", ".spec.serviceAccount"),
            col("Port", "integer", ".spec.port"),
            col("Protocol", "string", ".spec.protocol"),
            wide("Command", "string", ".spec.command"),
        ],
        has_status: false,
        spec: schema_of::<crate::mesh::WorkloadSpec>,
    },
    KindInfo {
        kind: "Service",
        plural: "services",
        short_names: &["mwsvc"],
        columns: &[
            col("Selector", "string", ".spec.selector"),
            wide("Routes", "string", ".spec.routes"),
        ],
        has_status: false,
        spec: schema_of::<crate::mesh::ServiceSpec>,
    },
    KindInfo {
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        short_names: &["mwauthz"],
        columns: &[
            col("Target", "string", ".spec.targetService"),
            col("Action", "string", ".spec.action"),
            col("Mode", "string", ".spec.mode"),
        ],
        has_status: false,
        spec: schema_of::<policy::AuthorizationPolicySpec>,
    },
    KindInfo {
        kind: "EgressPolicy",
        plural: "egresspolicies",
        short_names: &["mwegress"],
        columns: &[
            col("Hosts", "string", ".spec.to[*].host"),
            col("CIDRs", "string", ".spec.to[*].cidr"),
            wide("Allow CIDR", "boolean", ".spec.allowCidr"),
        ],
        has_status: false,
        spec: schema_of::<policy::EgressPolicySpec>,
    },
    KindInfo {
        kind: "ServiceClass",
        plural: "serviceclasses",
        short_names: &["mwclass"],
        columns: &[
            col("Kind", "string", ".spec.kind"),
            wide("Description", "string", ".spec.description"),
        ],
        has_status: false,
        spec: schema_of::<crate::taxonomy::ServiceClassSpec>,
    },
    KindInfo {
        kind: "Environment",
        plural: "environments",
        short_names: &["mwenv"],
        columns: &[col("Description", "string", ".spec.description")],
        has_status: false,
        spec: schema_of::<crate::taxonomy::EnvironmentSpec>,
    },
    KindInfo {
        kind: "ServicePolicy",
        plural: "servicepolicies",
        short_names: &["mwsp"],
        columns: &[
            col("Rules", "string", ".spec.rules[*].name"),
            wide("Providers", "string", ".spec.rules[*].provider"),
        ],
        has_status: false,
        spec: schema_of::<crate::taxonomy::ServicePolicySpec>,
    },
    KindInfo {
        kind: "ServiceClaim",
        plural: "serviceclaims",
        short_names: &["mwclaim"],
        columns: &[
            col("Class", "string", ".spec.class"),
            col("Size", "string", ".spec.size"),
            col("Bind To", "string", ".spec.bindTo"),
            col(
                "Ready",
                "string",
                ".status.conditions[?(@.type==\"Ready\")].status",
            ),
            wide("Binding", "string", ".status.binding.name"),
        ],
        has_status: true,
        spec: schema_of::<crate::taxonomy::ServiceClaimSpec>,
    },
    KindInfo {
        kind: "RegistrationEntry",
        plural: "registrationentries",
        short_names: &["mwentry"],
        columns: &[
            col("SPIFFE ID", "string", ".spec.spiffeId"),
            wide("Selectors", "string", ".spec.selectors"),
        ],
        has_status: false,
        spec: schema_of::<crate::entry::RegistrationEntrySpec>,
    },
];

fn generator() -> SchemaGenerator {
    SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator()
}

/// The structural schema of one kind's `spec`.
pub fn spec_schema(info: &KindInfo) -> Value {
    structural::rewrite((info.spec)(&mut generator()).to_value())
}

fn status_schema() -> Value {
    structural::rewrite(schema_of::<ServiceClaimStatus>(&mut generator()).to_value())
}

/// The whole `openAPIV3Schema` of a kind: envelope, `spec` and, if it has one, `status`.
pub fn object_schema(info: &KindInfo) -> Value {
    let mut properties = json!({
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec_schema(info),
    });
    if info.has_status {
        properties["status"] = status_schema();
    }
    json!({
        "type": "object",
        "description": format!("meshwork {} (docs/resources.md).", info.kind),
        "required": ["spec"],
        "properties": properties,
        // meshwork names are DNS-1123 labels, stricter than Kubernetes' subdomains (a name is
        // a SPIFFE path segment and a host name).
        "x-kubernetes-validations": [{
            "rule": format!("self.metadata.name.size() <= 63 && self.metadata.name.matches('{NAME_PATTERN}')"),
            "message": "metadata.name must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', alphanumeric at both ends",
        }],
    })
}

/// The `CustomResourceDefinition` of one kind.
pub fn definition(info: &KindInfo) -> Value {
    let plural = info.plural;
    let mut columns: Vec<Value> = info
        .columns
        .iter()
        .map(|c| {
            let mut v = json!({"name": c.name, "type": c.kind, "jsonPath": c.json_path});
            if c.priority > 0 {
                v["priority"] = json!(c.priority);
            }
            v
        })
        .collect();
    columns.push(json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}));
    let mut version = json!({
        "name": VERSION,
        "served": true,
        "storage": true,
        "schema": {"openAPIV3Schema": object_schema(info)},
        "additionalPrinterColumns": columns,
    });
    if info.has_status {
        version["subresources"] = json!({"status": {}});
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.{GROUP}"),
            "labels": {"app.kubernetes.io/name": "meshwork"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": format!("{}List", info.kind),
                "plural": plural,
                "singular": info.kind.to_ascii_lowercase(),
                "shortNames": info.short_names,
                "categories": ["meshwork"],
            },
            "versions": [version],
        },
    })
}

/// A plain JSON Schema for one kind's documents as meshwork reads them, for validators that
/// know nothing of Kubernetes (`check-jsonschema`): the CRD's schema with unknown fields
/// refused (`additionalProperties: false`, what the API server's strict field validation
/// does), `apiVersion`/`kind` fixed, and `metadata` as meshwork's loader checks it.
pub fn json_schema(info: &KindInfo) -> Value {
    let mut schema = object_schema(info);
    structural::refuse_unknown_fields(&mut schema);
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    schema["title"] = json!(format!("{GROUP}/{VERSION} {}", info.kind));
    schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    schema["properties"]["apiVersion"] = json!({"const": API_VERSION});
    schema["properties"]["kind"] = json!({"const": info.kind});
    // The API server owns `metadata`; these are the rules meshwork adds to it.
    let name = crate::schema::name(&mut generator()).to_value();
    let labels = structural::rewrite(
        <crate::labels::Labels as JsonSchema>::json_schema(&mut generator()).to_value(),
    );
    schema["properties"]["metadata"] = json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": name,
            "namespace": name,
            "labels": labels,
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    });
    if let Some(props) = schema["properties"].as_object_mut() {
        // meshwork's files never carry a status; the controller writes it.
        props.remove("status");
    }
    schema
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_loaded_meshwork_kind_has_a_crd_in_the_same_order() {
        let kinds: Vec<&str> = KINDS.iter().map(|k| k.kind).collect();
        // The Gateway API's routes have upstream's CRDs, not ours.
        let ours: Vec<&str> = crate::set::KINDS
            .iter()
            .copied()
            .filter(|k| crate::set::api_version(k) == API_VERSION)
            .collect();
        assert_eq!(kinds, ours);
    }

    /// Kubernetes' structural-schema rules (apiextensions.k8s.io/v1), checked on every node:
    /// kubernetes-validate only checks the CRD object's shape, not these.
    fn assert_structural(path: &str, node: &Value, in_junctor: bool) {
        let map = node
            .as_object()
            .unwrap_or_else(|| panic!("{path}: not an object"));
        assert!(!map.contains_key("$ref"), "{path}: $ref");
        if in_junctor {
            for key in [
                "type",
                "properties",
                "items",
                "description",
                "default",
                "nullable",
            ] {
                assert!(!map.contains_key(key), "{path}: {key} inside a junctor");
            }
        } else {
            assert!(map.contains_key("type"), "{path}: no type");
        }
        assert!(
            !(map.contains_key("properties") && map.contains_key("additionalProperties")),
            "{path}: properties and additionalProperties together"
        );
        if let Some(f) = map.get("format").and_then(Value::as_str) {
            assert!(
                ["int32", "int64", "date-time"].contains(&f),
                "{path}: format {f}"
            );
        }
        for (key, value) in map {
            match key.as_str() {
                "properties" => {
                    for (name, prop) in value.as_object().unwrap() {
                        assert_structural(&format!("{path}.{name}"), prop, false);
                    }
                }
                "items" => assert_structural(&format!("{path}[]"), value, false),
                "additionalProperties" => assert_structural(&format!("{path}{{}}"), value, false),
                "oneOf" | "anyOf" | "allOf" => {
                    for branch in value.as_array().unwrap() {
                        assert_structural(&format!("{path}/{key}"), branch, true);
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_schema_is_structural() {
        for info in KINDS {
            let crd = definition(info);
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            assert_structural(info.kind, schema, false);
        }
    }

    #[test]
    fn only_the_claim_has_a_status_subresource() {
        for info in KINDS {
            let crd = definition(info);
            let has = crd["spec"]["versions"][0].get("subresources").is_some();
            assert_eq!(has, info.kind == "ServiceClaim", "{}", info.kind);
        }
    }

    #[test]
    fn short_names_and_plurals_are_unique() {
        let mut names: Vec<&str> = KINDS
            .iter()
            .flat_map(|k| k.short_names.iter().copied().chain([k.plural]))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all);
    }
}
