//! Pod mode: the sidecar of a workload that runs in its own network namespace.
//!
//! `meshwork up --isolation=pods` gives each workload replica a network namespace (a
//! "pod") with one address on a bridge `up` creates. The sidecar process stays in the
//! host's namespace and creates its pod-side sockets inside the pod's namespace; the pod's
//! nftables rules ([`rules`]) send every TCP connection the app opens to the sidecar's
//! capture listener and every TCP connection into the pod to its mTLS listener. These
//! ports and the ruleset are the one contract between the sidecar and whoever builds the
//! pod (`cli`'s `up`, or a test).

pub mod rules;

pub use rules::{CAPTURE_PORT, DNS_PORT, INBOUND_PORT, PodRules};
