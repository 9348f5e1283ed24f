//! Live resources: the control plane takes new versions of the mesh's resources from a
//! source — the resource directory it polls ([`crate::reload`]), a cluster's objects
//! (`meshwork control --kubernetes`) — through a [`ResourceFeed`], and applies each here, in
//! one place, whatever the source.
//!
//! Policies and traffic (`HTTPRoute`, `GRPCRoute`, `Service` `spec.traffic`) apply live: they
//! go out in a new snapshot, which proxies pick up through their long poll, and nothing
//! restarts. Other `Mesh`, `Workload` and `Service` changes are reported as needing a restart
//! (they mean new processes, identities or CA material). Resources that do not load are
//! logged with the loader's error and the previous policies keep serving.

use std::sync::Arc;

use api::{LoadError, ResourceSet};
use tokio::sync::watch;

use crate::registry::{LiveChange, LiveResources, Registry};
use crate::store::Op;

/// One version of the mesh's resources, as a source read them.
#[derive(Debug)]
pub struct ResourceUpdate {
    /// Where they were read, for the logs: a directory, `kubernetes`.
    pub source: String,
    /// The resources, or why they do not load (then the previous ones keep serving).
    pub resources: Result<ResourceSet, LoadError>,
}

/// What the control plane reads new resources from: each value sent after the receiver last
/// saw one is applied; a source that sends faster than they are applied loses only the
/// versions in between. When every sender is gone the control plane keeps serving the last.
pub type ResourceFeed = watch::Receiver<Arc<ResourceUpdate>>;

/// What applying one update did.
#[derive(Debug)]
pub(crate) enum Reload {
    /// Loaded, but the policies and routes are the same (e.g. a comment was edited).
    SamePolicies,
    /// New policies were published (and maybe new routes); the new snapshot's policy hash.
    Published(String),
    /// Only routes or a `Service`'s traffic knobs changed; they were published.
    TrafficPublished,
    /// The resources do not load (the loader's error); the previous policies keep serving.
    Invalid(String),
    /// Not written: the store failed or this replica no longer leads; the previous
    /// policies keep serving (the next leader applies the source again).
    NotWritten(String),
}

/// Applies updates to one registry.
pub(crate) struct Applier {
    /// The resources the control plane started with, to spot changes that need a restart.
    started_with: ResourceSet,
}

impl Applier {
    /// For a registry opened with `started_with`.
    pub(crate) fn new(started_with: ResourceSet) -> Applier {
        Applier { started_with }
    }

    /// Stores and publishes what changed in `resources` (from `source`), under `fence` (the
    /// leader's); nothing when they are invalid.
    pub(crate) async fn apply(
        &self,
        registry: &Registry,
        source: &str,
        resources: &Result<ResourceSet, LoadError>,
        fence: Option<Op>,
    ) -> Reload {
        let set = match resources {
            Ok(set) => set,
            Err(error) => return Reload::Invalid(error.to_string()),
        };
        if needs_restart(&self.started_with, set) {
            tracing::warn!(%source,
                "Mesh, Workload or Service resources changed: they apply after a restart; applying policy changes only");
        }
        // The source's `RegistrationEntry` resources too: a replica that started with an
        // older directory must not take back what the source now declares.
        let entries = registry.issuer().apply_resource_entries(set, fence.clone());
        if let Err(error) = entries.await {
            return Reload::NotWritten(error.to_string());
        }
        match registry.write_live(&LiveResources::of(set), fence).await {
            Ok(LiveChange::Policies) => {
                Reload::Published(registry.subscribe().borrow().policy_hash.clone())
            }
            Ok(LiveChange::Traffic) => Reload::TrafficPublished,
            Ok(LiveChange::Same) => Reload::SamePolicies,
            Ok(LiveChange::Fenced) => Reload::NotWritten("this replica no longer leads".to_owned()),
            Err(error) => Reload::NotWritten(error.to_string()),
        }
    }

    /// Applies `update` and logs what that did (`unchanged_quietly`: an unchanged
    /// result only at debug level, for the application when a replica takes the lead).
    pub(crate) async fn apply_logged(
        &self,
        registry: &Registry,
        update: &ResourceUpdate,
        fence: Option<Op>,
        unchanged_quietly: bool,
    ) {
        let source = update.source.as_str();
        let version = || registry.subscribe().borrow().version;
        match self.apply(registry, source, &update.resources, fence).await {
            Reload::SamePolicies if unchanged_quietly => {
                tracing::debug!(%source, "the stored policies and routes are the source's")
            }
            Reload::SamePolicies => {
                tracing::info!(%source, "resources reloaded; policies and routes unchanged")
            }
            Reload::Published(hash) => {
                tracing::info!(%source, policy_hash = %hash, version = version(), "policies reloaded and published");
            }
            Reload::TrafficPublished => {
                tracing::info!(%source, version = version(), "routes and traffic settings reloaded and published");
            }
            Reload::Invalid(error) => {
                tracing::error!(%source, "resources not reloaded, the previous policies keep serving:\n{error}");
            }
            Reload::NotWritten(error) => {
                tracing::warn!(%source, %error, "resources not stored; the previous policies keep serving");
            }
        }
    }
}

/// Whether `after` differs from `before` in what only a restart applies.
pub(crate) fn needs_restart(before: &ResourceSet, after: &ResourceSet) -> bool {
    fn specs<S: Clone + PartialEq>(items: &[api::Loaded<S>]) -> Vec<api::Resource<S>> {
        items.iter().map(|l| l.resource.clone()).collect()
    }
    // A Service's traffic knobs apply live, the rest of it after a restart.
    fn without_traffic(
        items: &[api::Loaded<api::mesh::ServiceSpec>],
    ) -> Vec<api::Resource<api::mesh::ServiceSpec>> {
        let mut services = specs(items);
        for s in &mut services {
            s.spec.traffic = None;
        }
        services
    }
    specs(&before.meshes) != specs(&after.meshes)
        || specs(&before.workloads) != specs(&after.workloads)
        || without_traffic(&before.services) != without_traffic(&after.services)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn example() -> ResourceSet {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing");
        api::load_dir(&dir).expect("example loads")
    }

    #[tokio::test]
    async fn updates_are_stored_and_published_and_invalid_ones_keep_the_old_policies() {
        let set = example();
        let local = crate::registry::Local::open(set.clone()).await;
        let registry = &local.registry;
        let applier = Applier::new(set.clone());
        let first = Arc::clone(&registry.subscribe().borrow());
        assert_eq!(first.policies.authorization.len(), 3);

        let mut fewer = set.clone();
        fewer.authorization_policies.truncate(1);
        let reload = applier
            .apply(registry, "test", &Ok(fewer.clone()), None)
            .await;
        assert!(matches!(reload, Reload::Published(_)), "{reload:?}");
        let second = Arc::clone(&registry.subscribe().borrow());
        assert_eq!(second.policies.authorization.len(), 1);
        assert!(second.version > first.version);
        let same = applier.apply(registry, "test", &Ok(fewer), None).await;
        assert!(matches!(same, Reload::SamePolicies), "{same:?}");
        assert_eq!(registry.subscribe().borrow().version, second.version);

        // Invalid: nothing is published; then the original set goes out again.
        let error = applier
            .apply(registry, "test", &Err(LoadError::NoMesh(None)), None)
            .await;
        let Reload::Invalid(error) = error else {
            panic!("an invalid update was applied: {error:?}")
        };
        assert!(error.contains("no `kind: Mesh` resource"), "{error}");
        assert_eq!(registry.subscribe().borrow().version, second.version);
        applier.apply(registry, "test", &Ok(set), None).await;
        let third = Arc::clone(&registry.subscribe().borrow());
        assert_eq!(third.policy_hash, first.policy_hash);

        // The store keeps them: a restart with other files serves its own files' policies
        // (redb: the only writer), a replica joining a shared store serves the stored ones.
        local.close().await;
    }
}
