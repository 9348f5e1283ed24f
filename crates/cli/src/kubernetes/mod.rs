//! Kubernetes mode (issue 14): `meshwork control --kubernetes` reads meshwork's resources from
//! a cluster's custom resources (and the Gateway API's `HTTPRoute`/`GRPCRoute`) instead of a
//! directory, serves the same snapshots to agents and sidecars, and turns each `ServiceClaim`
//! into a provisioned instance and a servicebinding.io `Secret`. docs/kubernetes.md.

pub mod claims;
pub mod client;
pub mod objects;
pub mod source;
