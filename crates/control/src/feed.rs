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
use tokio_util::sync::CancellationToken;

use crate::Registry;

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

    /// Publishes what changed in `resources` (from `source`); nothing when they are invalid.
    pub(crate) fn apply(
        &self,
        registry: &Registry,
        source: &str,
        resources: &Result<ResourceSet, LoadError>,
    ) -> Reload {
        let set = match resources {
            Ok(set) => set,
            Err(error) => return Reload::Invalid(error.to_string()),
        };
        if needs_restart(&self.started_with, set) {
            tracing::warn!(%source,
                "Mesh, Workload or Service resources changed: they apply after a restart; applying policy changes only");
        }
        // Both run: each publishes what changed (two snapshots when both did; proxies take
        // the newest).
        let policies = registry.replace_policies(set.policy_set());
        let traffic = registry.replace_traffic(set.traffic());
        match (policies, traffic) {
            (true, _) => Reload::Published(registry.subscribe().borrow().policy_hash.clone()),
            (false, true) => Reload::TrafficPublished,
            (false, false) => Reload::SamePolicies,
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

/// Applies every update `feed` brings, logging what each did, until `stop` is cancelled or
/// the source is gone.
pub(crate) async fn apply_feed(
    registry: Arc<Registry>,
    started_with: ResourceSet,
    mut feed: ResourceFeed,
    stop: CancellationToken,
) {
    let applier = Applier::new(started_with);
    loop {
        tokio::select! {
            changed = feed.changed() => if changed.is_err() {
                tracing::debug!("the resource source ended; the last resources keep serving");
                return;
            },
            () = stop.cancelled() => return,
        }
        // Cloned out so that the source is not held up while this applies.
        let update = Arc::clone(&feed.borrow_and_update());
        let source = update.source.as_str();
        match applier.apply(&registry, source, &update.resources) {
            Reload::SamePolicies => {
                tracing::info!(%source, "resources reloaded; policies and routes unchanged")
            }
            Reload::Published(hash) => {
                let version = registry.subscribe().borrow().version;
                tracing::info!(%source, policy_hash = %hash, version, "policies reloaded and published");
            }
            Reload::TrafficPublished => {
                let version = registry.subscribe().borrow().version;
                tracing::info!(%source, version, "routes and traffic settings reloaded and published");
            }
            Reload::Invalid(error) => {
                tracing::error!(%source, "resources not reloaded, the previous policies keep serving:\n{error}");
            }
        }
    }
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

    fn update(resources: Result<ResourceSet, LoadError>) -> Arc<ResourceUpdate> {
        Arc::new(ResourceUpdate {
            source: "test".to_owned(),
            resources,
        })
    }

    #[tokio::test]
    async fn each_update_a_feed_brings_is_applied_and_invalid_ones_keep_the_old_policies() {
        let set = example();
        let state = tempfile::tempdir().expect("tempdir");
        let registry = Arc::new(Registry::open(state.path(), set.clone()).expect("registry"));
        let (sender, feed) = watch::channel(update(Ok(set.clone())));
        let stop = CancellationToken::new();
        let task = tokio::spawn(apply_feed(
            Arc::clone(&registry),
            set.clone(),
            feed,
            stop.clone(),
        ));
        let mut snapshots = registry.subscribe();
        let first = Arc::clone(&snapshots.borrow_and_update());
        assert_eq!(first.policies.authorization.len(), 3);

        let mut fewer = set.clone();
        fewer.authorization_policies.truncate(1);
        sender.send(update(Ok(fewer))).expect("send");
        snapshots.changed().await.expect("a new snapshot");
        let second = Arc::clone(&snapshots.borrow_and_update());
        assert_eq!(second.policies.authorization.len(), 1);
        assert!(second.version > first.version);

        // Invalid: nothing is published; then the original set goes out again.
        sender
            .send(update(Err(LoadError::NoMesh(None))))
            .expect("send");
        sender.send(update(Ok(set))).expect("send");
        snapshots.changed().await.expect("a new snapshot");
        let third = Arc::clone(&snapshots.borrow_and_update());
        assert_eq!(third.policy_hash, first.policy_hash);

        // A source that goes away leaves the control plane serving what it has.
        drop(sender);
        task.await.expect("the task ends with its source");
        assert_eq!(registry.subscribe().borrow().version, third.version);
    }

    #[test]
    fn invalid_updates_are_reported_with_the_loaders_error() {
        let set = example();
        let state = tempfile::tempdir().expect("tempdir");
        let registry = Registry::open(state.path(), set.clone()).expect("registry");
        let version = registry.subscribe().borrow().version;
        let applier = Applier::new(set);
        let Reload::Invalid(error) =
            applier.apply(&registry, "test", &Err(LoadError::NoMesh(None)))
        else {
            panic!("an invalid update was applied")
        };
        assert!(error.contains("no `kind: Mesh` resource"), "{error}");
        assert_eq!(registry.subscribe().borrow().version, version);
    }
}
