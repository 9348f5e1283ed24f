//! meshwork's resource model and the proxy⇄control contract.
//!
//! Owns: the Kubernetes-style envelope (`apiVersion/kind/metadata/spec`), every
//! resource kind's spec type, loading and validating them from YAML with errors
//! that name file, line, resource and field, and the JSON types proxies and the
//! control plane exchange. Pure data, except [`contract::exchange`] (one HTTP/1.1
//! request on a connected stream) and [`contract::client`] (the one client of the
//! contract: it dials unix sockets or what a caller's `Connect` dials; no listening,
//! no processes).
//!
//! Must not import `proxy`, `control`, `broker` or `cli` (they depend on this crate).

pub mod bounded;
pub mod contract;
pub mod crd;
pub mod duration;
pub mod entry;
pub mod labels;
pub mod load;
mod locate;
pub mod mesh;
pub mod object;
pub mod policy;
pub mod resource;
pub mod route;
pub mod schema;
pub mod set;
pub mod taxonomy;
pub mod workload;

pub use load::{LoadError, Loaded, Origin, load_bytes, load_dir, load_str};
pub use resource::{API_VERSION, Name, ObjectMeta, Resource};
pub use set::ResourceSet;
