//! The SPIFFE Workload API (`proto/workload.proto`): messages, the tonic server trait
//! (`spiffe_workload_api_server`) and client (`spiffe_workload_api_client`).
//!
//! Generated at build time from the official proto; the agent in `control` serves it,
//! workloads (and the sidecar) are clients. Per the spec, every request carries the
//! metadata [`SECURITY_HEADER`]` = true`, and the socket is found through
//! [`ENDPOINT_SOCKET_ENV`].

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The metadata key every Workload API request must carry with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The environment variable that names the Workload API socket (`unix:/path`).
pub const ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

// The proto declares no package, so prost names the file `_.rs`.
include!(concat!(env!("OUT_DIR"), "/_.rs"));
