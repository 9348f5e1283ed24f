//! meshwork's Open Service Broker: an OSB API v2.17 server with a portable service taxonomy
//! and real providers.
//!
//! A platform asks for "a postgresql, default size"; the broker picks the environment from
//! the request context, the provider and size from the administrator's `ServicePolicy`, and
//! explains the choice in `last_operation.description` and instance metadata. Instances and
//! bindings are real databases, users and Redis ACL users; state, including in-flight
//! operations, lives in one redb file so a crash resumes or cleans up on restart.
//!
//! Owns: the OSB HTTP surface (private `http` module), the taxonomy ([`taxonomy`]: resolution
//! and cross-references; the spec types are `api::taxonomy`'s, re-exported), the providers
//! ([`provider`]), the redb [`store`] and the operation engine (private `ops` module).
//! Must not import: `proxy` or `control` (its peers under `cli`). Errors are [`BrokerError`];
//! `anyhow` is for `cli` only.
//!
//! Start with [`serve`], or [`RunningBroker::start`] to learn the bound address (port 0).
//! [`purge`] tears down everything a state file records.

mod error;
mod http;
#[cfg(test)]
mod layering;
pub mod names;
mod ops;
pub mod originating;
pub mod provider;
mod secret;
mod server;
pub mod store;
pub mod taxonomy;

pub use error::BrokerError;
pub use ops::StepGate;
pub use provider::{Credentials, Progress, ProviderConfig, ProviderSpec};
pub use secret::Secret;
pub use server::{BasicCredentials, BrokerConfig, RunningBroker, discard_if_unused, purge, serve};
pub use taxonomy::{Named, Taxonomy, TaxonomyError};
