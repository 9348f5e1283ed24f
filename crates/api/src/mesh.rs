//! Mesh-level kinds: `Mesh`, `Workload` and `Service`.

pub mod pods;
pub mod tracing;
pub mod traffic;

use std::collections::BTreeMap;

use identity::{SpiffeId, TrustDomain};
use policy::RouteTemplate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounded::BoundedU16;
use crate::duration::BoundedDuration;
use crate::labels::Labels;
use crate::resource::{Name, Resource};

/// `Mesh` `spec.svidTtl`: 1 s to 30 d. Whole seconds are all X.509 can express, and
/// sub-minute lifetimes are for rotation drills and tests (renewal runs at half the life); past
/// 30 d a stolen SVID stays useful for a month and CA rotation, which waits out the longest
/// SVID, takes as long.
pub type SvidTtl = BoundedDuration<1_000, { 30 * 86_400_000 }>;

/// `Workload` `spec.port`: 1–65535 (port 0 would have the app listen on a port nobody knows).
pub type AppPort = BoundedU16<1, 65_535>;

/// `Workload` `spec.replicas`: 1–16 copies of the application, each with its own sidecar.
pub type Replicas = BoundedU16<1, 16>;

/// `kind: Mesh`: settings for the whole mesh. Exactly one per directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    /// The SPIFFE trust domain every workload identity lives in.
    #[schemars(schema_with = "crate::schema::trust_domain")]
    pub trust_domain: TrustDomain,
    /// Lifetime of issued X.509-SVIDs, 1 s to 30 d ([`SvidTtl`]); 1 h when omitted.
    #[serde(default)]
    pub svid_ttl: Option<SvidTtl>,
    /// The DNS server sidecars resolve egress destinations with; the system resolver when
    /// omitted. Sidecars connect to what *they* resolved, never to what the app looked up.
    #[serde(default)]
    pub dns: Option<DnsSpec>,
    /// Distributed tracing (docs/telemetry.md): present, even empty, means every sidecar
    /// records spans and exports them over OTLP; omitted, sidecars trace only when the
    /// OpenTelemetry environment names an exporter endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<tracing::TracingSpec>,
    /// The addresses of pod mode (`meshwork up --isolation`): the pod network and the
    /// resolvers' virtual addresses; the defaults when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<pods::PodsSpec>,
}

impl MeshSpec {
    /// `spec.pods`, or its defaults.
    pub fn pods(&self) -> pods::PodsSpec {
        self.pods.clone().unwrap_or_default()
    }
}

/// `spec.dns` of a `Mesh`: `{server: 127.0.0.1:5353}`, or `{workload: NAME}` for a DNS
/// server that is itself a workload of the mesh (serving on its application port, which
/// `meshwork up` allocates — how the store-billing example runs offline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum DnsSpec {
    /// A DNS server address (UDP, with TCP fallback).
    Server(std::net::SocketAddr),
    /// The workload whose application is the DNS server.
    Workload(Name),
}

/// `kind: Workload`: a process the mesh starts, names and fronts with a sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// The identity's service-account segment; the workload name when omitted.
    #[serde(default)]
    pub service_account: Option<Name>,
    /// argv of the application; `meshwork` as argv\[0\] means this very binary.
    pub command: Vec<String>,
    /// Extra environment for the application.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Loopback port the application listens on (handed to it as `PORT`), 1–65535;
    /// allocated when omitted.
    #[serde(default)]
    pub port: Option<AppPort>,
    /// How the sidecar speaks to the application.
    #[serde(default)]
    pub protocol: AppProtocol,
    /// How many copies of the application `meshwork up` runs (1–16, default 1), each with
    /// its own sidecar, ports and Workload API socket, all with the workload's one identity;
    /// callers balance across them. `port` must be omitted when this is above 1.
    #[serde(default)]
    pub replicas: Option<Replicas>,
    /// Run in the host's network namespace even in pod mode (as in proxy mode: the app
    /// reaches its sidecar through `HTTP_PROXY`); for stand-ins of the outside world, such
    /// as the example's `stripe`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
}

/// The HTTP version the local application speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// `kind: Service`: a mesh name (`http://billing/...`) for the workloads its selector matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Labels a workload must carry (all of them) to back this service.
    pub selector: Labels,
    /// The service's route templates (`/charges/{id}`), in match order: sidecars label
    /// request metrics with the first template the normalised path matches, else
    /// `[unmatched]` (docs/telemetry.md). Empty: every request is `[unmatched]`.
    #[serde(default)]
    pub routes: Vec<RouteTemplate>,
    /// Resiliency knobs the Gateway API has no field for (docs/resiliency.md): connect and
    /// idle timeouts, the retry budget, outlier ejection, circuit breaking. Defaults when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<traffic::TrafficSpec>,
}

impl ServiceSpec {
    /// `spec.traffic` with defaults applied.
    pub fn traffic_policy(&self) -> crate::contract::traffic::TrafficPolicy {
        self.traffic.clone().unwrap_or_default().policy()
    }
}

/// A loaded `Workload` resource.
pub type Workload = Resource<WorkloadSpec>;

impl Workload {
    /// The SPIFFE ID this workload is issued, Istio-style:
    /// `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`.
    pub fn spiffe_id(&self, td: &TrustDomain) -> SpiffeId {
        let sa = self
            .spec
            .service_account
            .as_ref()
            .unwrap_or(&self.metadata.name);
        let path = format!("/ns/{}/sa/{}", self.metadata.namespace, sa);
        // invariant: namespace and service account are DNS-1123 labels, which are
        // valid SPIFFE path segments, so the ID is always well-formed.
        #[allow(clippy::expect_used)]
        SpiffeId::new(td.clone(), &path).expect("DNS-1123 labels form a valid SPIFFE path")
    }

    /// Whether every label in `selector` is carried by this workload.
    pub fn matches(&self, selector: &Labels) -> bool {
        self.metadata.labels.contains_all(selector)
    }
}
