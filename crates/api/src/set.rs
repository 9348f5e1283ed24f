//! A validated set of resources, as read from one directory.

use std::collections::BTreeSet;

use identity::SpiffeId;
use policy::{AuthorizationPolicySpec, EgressPolicySpec};

use crate::load::{LoadError, Loaded, invalid, parse_resource};
use crate::mesh::{DnsSpec, MeshSpec, ServiceSpec, Workload, WorkloadSpec};
use crate::policy::{validate_policies, validate_spec};
use crate::resource::Resource;
use crate::route::{self, GrpcRouteSpec, HttpRouteSpec};
use crate::taxonomy::{
    self, EnvironmentSpec, ServiceClaimSpec, ServiceClassSpec, ServicePolicySpec,
};

/// The kinds this release reads, for "unknown kind" errors.
pub const KINDS: &[&str] = &[
    "Mesh",
    "Workload",
    "Service",
    "AuthorizationPolicy",
    "EgressPolicy",
    "ServiceClass",
    "Environment",
    "ServicePolicy",
    "ServiceClaim",
    "RegistrationEntry",
    "HTTPRoute",
    "GRPCRoute",
];

/// The `apiVersion` a kind is read with: the Gateway API's for its routes, meshwork's for
/// everything else (and for unknown kinds, whose error then lists the known ones).
pub fn api_version(kind: &str) -> &'static str {
    match kind {
        "HTTPRoute" | "GRPCRoute" => crate::route::GATEWAY_API_VERSION,
        _ => crate::resource::API_VERSION,
    }
}

/// Every resource of a directory, by kind.
#[derive(Debug, Clone, Default)]
pub struct ResourceSet {
    /// `Mesh` resources (valid sets hold exactly one).
    pub meshes: Vec<Loaded<MeshSpec>>,
    /// `Workload` resources.
    pub workloads: Vec<Loaded<WorkloadSpec>>,
    /// `Service` resources.
    pub services: Vec<Loaded<ServiceSpec>>,
    /// `AuthorizationPolicy` resources.
    pub authorization_policies: Vec<Loaded<AuthorizationPolicySpec>>,
    /// `EgressPolicy` resources.
    pub egress_policies: Vec<Loaded<EgressPolicySpec>>,
    /// `ServiceClass` resources (the broker's catalog; see [`crate::taxonomy`]).
    pub service_classes: Vec<Loaded<ServiceClassSpec>>,
    /// `Environment` resources.
    pub environments: Vec<Loaded<EnvironmentSpec>>,
    /// `ServicePolicy` resources.
    pub service_policies: Vec<Loaded<ServicePolicySpec>>,
    /// `ServiceClaim` resources.
    pub service_claims: Vec<Loaded<ServiceClaimSpec>>,
    /// `RegistrationEntry` resources (see [`crate::entry`]).
    pub registration_entries: Vec<Loaded<crate::entry::RegistrationEntrySpec>>,
    /// `HTTPRoute` resources (`gateway.networking.k8s.io/v1`; see [`crate::route`]).
    pub http_routes: Vec<Loaded<HttpRouteSpec>>,
    /// `GRPCRoute` resources.
    pub grpc_routes: Vec<Loaded<GrpcRouteSpec>>,
}

impl ResourceSet {
    pub(crate) fn insert(
        &mut self,
        kind: &str,
        doc: &str,
        origin: crate::load::Origin,
        resource: &str,
    ) -> Result<(), LoadError> {
        match kind {
            "Mesh" => self.meshes.push(parse_resource(doc, origin, resource)?),
            "Workload" => self.workloads.push(parse_resource(doc, origin, resource)?),
            "Service" => self.services.push(parse_resource(doc, origin, resource)?),
            // Policies are checked field by field as they are read, so that every invalid
            // field is reported (each at its line), before any cross-reference.
            "AuthorizationPolicy" => {
                let policy = parse_resource(doc, origin, resource)?;
                validate_spec(&policy)?;
                self.authorization_policies.push(policy);
            }
            "EgressPolicy" => {
                let policy = parse_resource(doc, origin, resource)?;
                validate_spec(&policy)?;
                self.egress_policies.push(policy);
            }
            "ServiceClass" => self
                .service_classes
                .push(taxonomy::parse(doc, origin, resource)?),
            "Environment" => self
                .environments
                .push(taxonomy::parse(doc, origin, resource)?),
            "ServicePolicy" => self
                .service_policies
                .push(taxonomy::parse(doc, origin, resource)?),
            "ServiceClaim" => self
                .service_claims
                .push(taxonomy::parse(doc, origin, resource)?),
            "RegistrationEntry" => self
                .registration_entries
                .push(parse_resource(doc, origin, resource)?),
            "HTTPRoute" => {
                let route = parse_resource(doc, origin, resource)?;
                route::check::check_http(&route)?;
                self.http_routes.push(route);
            }
            "GRPCRoute" => {
                let route = parse_resource(doc, origin, resource)?;
                route::check::check_grpc(&route)?;
                self.grpc_routes.push(route);
            }
            other => {
                let msg = format!("unknown kind {other:?}; known kinds: {}", KINDS.join(", "));
                return Err(invalid(&origin, Some(resource), "kind", &msg));
            }
        }
        Ok(())
    }

    /// The one `Mesh` (validated sets always have it).
    pub fn mesh(&self) -> Option<&Resource<MeshSpec>> {
        self.meshes.first().map(|m| &m.resource)
    }

    /// Looks a workload up by name.
    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .map(|w| &w.resource)
            .find(|w| w.metadata.name.as_str() == name)
    }

    /// The workload's SPIFFE ID in this mesh.
    pub fn workload_id(&self, name: &str) -> Option<SpiffeId> {
        let td = &self.mesh()?.spec.trust_domain;
        Some(self.workload(name)?.spiffe_id(td))
    }

    /// The workloads backing a service.
    pub fn backends<'a>(
        &'a self,
        service: &'a ServiceSpec,
    ) -> impl Iterator<Item = &'a Workload> + 'a {
        self.workloads
            .iter()
            .map(|w| &w.resource)
            .filter(|w| w.matches(&service.selector))
    }

    /// Cross-resource rules: one Mesh, unique names (a Service's and a Workload's across
    /// namespaces too), non-empty commands and selectors,
    /// valid policies whose `targetService` names a Service.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.validate_mesh()?;
        mesh_global_names(&self.workloads, "Workload")?;
        mesh_global_names(&self.services, "Service")?;
        self.validate_dns()?;
        self.validate_pods()?;
        unique_names(&self.authorization_policies, "AuthorizationPolicy")?;
        unique_names(&self.egress_policies, "EgressPolicy")?;
        validate_policies(self)?;
        self.validate_taxonomy()?;
        unique_names(&self.registration_entries, "RegistrationEntry")?;
        crate::entry::validate_entries(self)?;
        self.validate_workloads()?;
        for s in &self.services {
            let res = format!("Service/{}", s.resource.metadata.name);
            if s.resource.spec.selector.is_empty() {
                let msg =
                    "must list at least one label; an empty selector would match every workload";
                return Err(invalid(&s.origin, Some(&res), "spec.selector", msg));
            }
            let policy = s.resource.spec.traffic_policy().outlier_detection;
            if policy.max_ejection_ms < policy.base_ejection_ms {
                let field = "spec.traffic.outlierDetection.maxEjectionTime";
                let msg = "is shorter than baseEjectionTime (default 30s): the longest \
                           ejection cannot be shorter than the first";
                return Err(invalid(&s.origin, Some(&res), field, msg));
            }
        }
        unique_names(&self.http_routes, "HTTPRoute")?;
        unique_names(&self.grpc_routes, "GRPCRoute")?;
        route::check::check_references(self)
    }

    /// Non-empty commands; a fixed port only for a single replica.
    fn validate_workloads(&self) -> Result<(), LoadError> {
        for w in &self.workloads {
            let res = format!("Workload/{}", w.resource.metadata.name);
            let spec = &w.resource.spec;
            if spec.command.is_empty() {
                let msg = "must name a program";
                return Err(invalid(&w.origin, Some(&res), "spec.command", msg));
            }
            if let (Some(port), Some(replicas)) = (spec.port, spec.replicas)
                && replicas.get() > 1
            {
                let msg = format!(
                    "{port} cannot be given with replicas: {replicas}: each replica listens on \
                     its own port, which `meshwork up` allocates; omit spec.port"
                );
                return Err(invalid(&w.origin, Some(&res), "spec.port", &msg));
            }
        }
        Ok(())
    }

    /// Every Service's compiled traffic (routes and knobs), by service name: what the control
    /// plane publishes in [`crate::contract::ServiceRoute::traffic`].
    pub fn traffic(
        &self,
    ) -> std::collections::BTreeMap<String, crate::contract::traffic::ServiceTraffic> {
        route::compile::traffic(self)
    }

    /// `spec.dns.workload` must name a Workload.
    fn validate_dns(&self) -> Result<(), LoadError> {
        let Some(mesh) = self.meshes.first() else {
            return Ok(());
        };
        match &mesh.resource.spec.dns {
            Some(DnsSpec::Workload(name)) if self.workload(name.as_str()).is_none() => {
                let res = format!("Mesh/{}", mesh.resource.metadata.name);
                let msg = format!("{:?} names no Workload", name.as_str());
                Err(invalid(&mesh.origin, Some(&res), "spec.dns.workload", &msg))
            }
            _ => Ok(()),
        }
    }

    /// `spec.pods.virtualAddresses` must not overlap `spec.pods.network`: a resolver's
    /// answer would name a pod.
    fn validate_pods(&self) -> Result<(), LoadError> {
        let Some(mesh) = self.meshes.first() else {
            return Ok(());
        };
        match &mesh.resource.spec.pods {
            Some(pods) if pods.overlap() => {
                let res = format!("Mesh/{}", mesh.resource.metadata.name);
                let msg = format!(
                    "{} overlaps spec.pods.network {}: a resolver's answer would be a pod's \
                     address; pick ranges that share no address",
                    pods.virtual_addresses, pods.network
                );
                let field = "spec.pods.virtualAddresses";
                Err(invalid(&mesh.origin, Some(&res), field, &msg))
            }
            _ => Ok(()),
        }
    }

    fn validate_mesh(&self) -> Result<(), LoadError> {
        match self.meshes.as_slice() {
            [_] => Ok(()),
            [] => Err(LoadError::NoMesh(None)),
            [_, second, ..] => Err(invalid(
                &second.origin,
                Some(&format!("Mesh/{}", second.resource.metadata.name)),
                "kind",
                "only one Mesh resource is allowed",
            )),
        }
    }
}

/// Names of a kind that the snapshot keys by bare name — a `Service`'s traffic, policy
/// targets and route parents; a `Workload`'s `bindTo`, `dns.workload` and processes — must be
/// unique across namespaces: two `billing` Services in two namespaces would silently become
/// one. The error names both resources (`file:line` or `Kind namespace/name`).
fn mesh_global_names<S>(items: &[Loaded<S>], kind: &str) -> Result<(), LoadError> {
    let mut seen: std::collections::BTreeMap<&str, &Loaded<S>> = Default::default();
    for item in items {
        let meta = &item.resource.metadata;
        let Some(first) = seen.insert(meta.name.as_str(), item) else {
            continue;
        };
        let res = format!("{kind}/{}", meta.name);
        // A cluster object is named by `Kind namespace/name` already; a file's by its line.
        let at = match first.origin.cluster_object() {
            Some(_) => String::new(),
            None => {
                let (line, _) = first.origin.field("metadata.name");
                format!(" ({}:{line})", first.origin.file.display())
            }
        };
        let message = match first.resource.metadata.namespace == meta.namespace {
            true => format!("is already used by another resource of this kind{at}"),
            false => format!(
                "is already used by {kind} {}/{}{at}: {kind} names are mesh-wide (the \
                 snapshot keys them by name alone), so one would silently replace the other; \
                 rename one",
                first.resource.metadata.namespace, meta.name
            ),
        };
        return Err(invalid(&item.origin, Some(&res), "metadata.name", &message));
    }
    Ok(())
}

fn unique_names<S>(items: &[Loaded<S>], kind: &str) -> Result<(), LoadError> {
    let mut seen = BTreeSet::new();
    for item in items {
        let meta = &item.resource.metadata;
        if !seen.insert((meta.namespace.clone(), meta.name.clone())) {
            let res = format!("{kind}/{}", meta.name);
            return Err(invalid(
                &item.origin,
                Some(&res),
                "metadata.name",
                "is already used by another resource of this kind",
            ));
        }
    }
    Ok(())
}
