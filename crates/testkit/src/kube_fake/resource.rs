//! The resource types a fake API server serves, and the list for meshwork.

use serde_json::Value;

/// One resource type the fake API server serves: what a CRD (or the built-in type) would
/// tell the real server.
///
/// Build it with the constructors ([`FakeResource::namespaced`], …): fields may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeResource {
    /// API group; `""` for the core group (`/api/v1`).
    pub group: String,
    /// Version, e.g. `v1alpha1`.
    pub version: String,
    /// Plural name used in paths, e.g. `serviceclaims`.
    pub plural: String,
    /// `kind`, e.g. `ServiceClaim`; lists are `<kind>List`.
    pub kind: String,
    /// Namespaced (`/namespaces/{ns}/…`) or cluster-scoped.
    pub namespaced: bool,
    /// Whether `.status` is a subresource: the main endpoint then ignores `.status` and
    /// `/status` changes only `.status`.
    pub has_status_subresource: bool,
    /// The CRD's `openAPIV3Schema`, if the fake should prune, default and validate writes
    /// with it as the real server does (see `schema.rs`); `None`: anything goes.
    pub schema: Option<Value>,
}

impl FakeResource {
    /// A namespaced resource type.
    pub fn namespaced(group: &str, version: &str, plural: &str, kind: &str) -> FakeResource {
        FakeResource {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            kind: kind.to_owned(),
            namespaced: true,
            has_status_subresource: false,
            schema: None,
        }
    }

    /// The same, with the CRD's `openAPIV3Schema` (writes are pruned, defaulted and
    /// validated against it).
    pub fn with_schema(mut self, schema: Value) -> FakeResource {
        self.schema = Some(schema);
        self
    }

    /// The same, with a status subresource.
    pub fn with_status(mut self) -> FakeResource {
        self.has_status_subresource = true;
        self
    }

    /// `apiVersion` of its objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether this is core v1 `secrets` (whose `stringData` the server folds into `data`).
    pub(crate) fn is_core_secrets(&self) -> bool {
        self.group.is_empty() && self.plural == "secrets"
    }

    /// Core v1 `secrets`.
    pub fn secrets() -> FakeResource {
        FakeResource::namespaced("", "v1", "secrets", "Secret")
    }

    /// Gateway API `httproutes` (gateway.networking.k8s.io/v1), with its status subresource.
    pub fn http_routes() -> FakeResource {
        FakeResource::namespaced("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
            .with_status()
    }

    /// Gateway API `grpcroutes` (gateway.networking.k8s.io/v1), with its status subresource.
    pub fn grpc_routes() -> FakeResource {
        FakeResource::namespaced("gateway.networking.k8s.io", "v1", "grpcroutes", "GRPCRoute")
            .with_status()
    }
}

/// Everything meshwork's controller mode uses: every kind of `api::crd::KINDS` (group
/// `meshwork.dev`, namespaced, a status subresource where the CRD has one, and the CRD's
/// `openAPIV3Schema` from `api::crd::definition`, the generator of `deploy/crds`), core v1
/// `secrets`, and the Gateway API's `httproutes` and `grpcroutes` (without schemas: theirs
/// are upstream's).
pub fn meshwork_resources() -> Vec<FakeResource> {
    let mut resources: Vec<FakeResource> = api::crd::KINDS
        .iter()
        .map(|info| {
            let definition = api::crd::definition(info);
            let version = &definition["spec"]["versions"][0];
            FakeResource {
                group: api::crd::GROUP.to_owned(),
                version: api::crd::VERSION.to_owned(),
                plural: info.plural.to_owned(),
                kind: info.kind.to_owned(),
                namespaced: true,
                has_status_subresource: version["subresources"].get("status").is_some(),
                schema: Some(version["schema"]["openAPIV3Schema"].clone()),
            }
        })
        .collect();
    resources.push(FakeResource::secrets());
    resources.push(FakeResource::http_routes());
    resources.push(FakeResource::grpc_routes());
    resources
}
