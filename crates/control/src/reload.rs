//! The resource directory as a source of live resources ([`crate::feed`]): polled once a
//! second; when a resource file changed, the directory is loaded again and offered to the
//! control plane, which applies it as it applies any source's resources.
//!
//! Polling names, sizes and mtimes is deliberately simple: it needs no platform watcher,
//! catches editors that replace files by renaming, and costs one `readdir` plus a `stat` per
//! file each second. An invalid edit is offered too, once, so that it is logged with the
//! loader's error (file, line, field) while the previous policies keep serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::{LoadError, ResourceSet};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::feed::ResourceUpdate;

/// How often the directory is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Names, sizes and mtimes of a directory's resource files (the loader's selection).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl Fingerprint {
    fn take(dir: &Path) -> std::io::Result<Fingerprint> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                continue;
            }
            // A file deleted between readdir and stat simply drops out of the fingerprint.
            if let Ok(meta) = std::fs::metadata(&path) {
                files.push((path, meta.len(), meta.modified().ok()));
            }
        }
        files.sort();
        Ok(Fingerprint(files))
    }
}

/// Notices when a directory's resource files change and loads it again.
pub(crate) struct DirPoller {
    dir: PathBuf,
    last: Option<Fingerprint>,
}

impl DirPoller {
    /// Watches `dir` from its current contents on.
    pub(crate) fn new(dir: PathBuf) -> DirPoller {
        let last = Fingerprint::take(&dir).ok();
        DirPoller { dir, last }
    }

    /// The directory's resources when a file changed since the last poll, else `None`.
    pub(crate) fn poll(&mut self) -> Option<Result<ResourceSet, LoadError>> {
        let now = Fingerprint::take(&self.dir).ok();
        if now == self.last {
            return None;
        }
        // Remember the failing state too: an invalid edit is offered once, not every second.
        self.last = now;
        Some(api::load_dir(&self.dir))
    }
}

/// Polls `dir` every [`POLL_INTERVAL`] and sends each changed version to `feed`, until
/// `stop` is cancelled or nobody listens.
pub(crate) async fn watch_dir(
    dir: PathBuf,
    feed: watch::Sender<Arc<ResourceUpdate>>,
    stop: CancellationToken,
) {
    let source = dir.display().to_string();
    let mut poller = DirPoller::new(dir);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        // Loading is blocking file I/O on a small directory; fine on this task's worker.
        if let Some(resources) = poller.poll() {
            let update = ResourceUpdate {
                source: source.clone(),
                resources,
            };
            if feed.send(Arc::new(update)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Registry;
    use crate::feed::{Applier, Reload, needs_restart};
    use crate::registry::Local;

    /// What `meshwork control --resources DIR` does each second: poll, then apply.
    struct Reloader {
        poller: DirPoller,
        applier: Applier,
        started_with: ResourceSet,
    }

    impl Reloader {
        /// What one poll did: `None` when no file changed.
        async fn poll(&mut self, registry: &Registry) -> Option<Reload> {
            let resources = self.poller.poll()?;
            Some(self.applier.apply(registry, "test", &resources, None).await)
        }
    }

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing")
    }

    /// A copy of the example (resources only) to edit, and a registry serving it.
    async fn setup() -> (tempfile::TempDir, Local, Reloader) {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in [
            "mesh.yaml",
            "services.yaml",
            "workloads.yaml",
            "policies.yaml",
        ] {
            std::fs::copy(example().join(f), dir.path().join(f)).expect("copy");
        }
        let set = api::load_dir(dir.path()).expect("example loads");
        let local = Local::open(set.clone()).await;
        let reloader = Reloader {
            poller: DirPoller::new(dir.path().to_owned()),
            applier: Applier::new(set.clone()),
            started_with: set,
        };
        (dir, local, reloader)
    }

    #[tokio::test]
    async fn policy_edits_are_published_and_invalid_edits_keep_the_old_policies() {
        let (dir, local, mut reloader) = setup().await;
        let registry = &local.registry;
        let first = Arc::clone(&registry.subscribe().borrow());
        assert_eq!(first.policies.authorization.len(), 3);
        assert_eq!(first.policy_hash, first.policies.hash().to_string());
        assert!(reloader.poll(registry).await.is_none());

        let policies = dir.path().join("policies.yaml");
        let text = std::fs::read_to_string(&policies).expect("read");
        std::fs::write(
            &policies,
            text.replace("ports: [443]", "ports: [443, 8443]"),
        )
        .expect("write");
        let Some(Reload::Published(hash)) = reloader.poll(registry).await else {
            panic!("not published")
        };
        let second = Arc::clone(&registry.subscribe().borrow());
        assert!(second.version > first.version);
        assert_ne!(hash, first.policy_hash);
        assert_eq!(hash, second.policy_hash);

        std::fs::write(&policies, "apiVersion: meshwork.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: x}\nspec: {to: []}\n")
            .expect("write");
        let Some(Reload::Invalid(error)) = reloader.poll(registry).await else {
            panic!("invalid edit accepted")
        };
        assert!(
            error.to_string().contains("EgressPolicy/x field `spec.to`"),
            "{error}"
        );
        assert_eq!(registry.subscribe().borrow().version, second.version);
        assert!(
            reloader.poll(registry).await.is_none(),
            "an invalid edit is reported once"
        );
    }

    #[tokio::test]
    async fn unchanged_policies_publish_nothing() {
        let (dir, local, mut reloader) = setup().await;
        let registry = &local.registry;
        let version = registry.subscribe().borrow().version;
        let services = dir.path().join("services.yaml");
        let text = std::fs::read_to_string(&services).expect("read");
        std::fs::write(&services, format!("# a comment\n{text}")).expect("write");
        assert!(matches!(
            reloader.poll(registry).await,
            Some(Reload::SamePolicies)
        ));
        assert_eq!(registry.subscribe().borrow().version, version);
    }

    #[tokio::test]
    async fn route_and_traffic_edits_are_published_live() {
        let (dir, local, mut reloader) = setup().await;
        let registry = &local.registry;
        let first = Arc::clone(&registry.subscribe().borrow());
        // The example's billing Service has knobs (services.yaml) but, here, no route.
        let traffic = &first.services["billing"].traffic;
        assert!(!traffic.has_routes());
        assert_eq!(traffic.policy.outlier_detection.consecutive_failures, 3);

        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: billing}\nspec:\n  parentRefs: [{group: '', kind: Service, name: billing}]\n  rules:\n    - matches: [{path: {value: /charges}}]\n      timeouts: {request: 2s}\n";
        std::fs::write(dir.path().join("routes.yaml"), route).expect("write");
        assert!(matches!(
            reloader.poll(registry).await,
            Some(Reload::TrafficPublished)
        ));
        let second = Arc::clone(&registry.subscribe().borrow());
        assert!(second.version > first.version);
        let traffic = &second.services["billing"].traffic;
        assert_eq!(traffic.rules[0].name, "HTTPRoute/default/billing rule 0");
        assert_eq!(traffic.rules[0].request_timeout_ms, Some(2000));
        assert!(second.services["store"].traffic.is_default());

        // A Service's knobs apply live too; the rest of the Service still needs a restart.
        let services = dir.path().join("services.yaml");
        let text = std::fs::read_to_string(&services).expect("read");
        let knobs = text.replacen("consecutiveFailures: 3", "consecutiveFailures: 2", 1);
        assert_ne!(knobs, text);
        std::fs::write(&services, &knobs).expect("write");
        let after = api::load_dir(dir.path()).expect("loads");
        assert!(!needs_restart(&reloader.started_with, &after));
        assert!(matches!(
            reloader.poll(registry).await,
            Some(Reload::TrafficPublished)
        ));
        let third = Arc::clone(&registry.subscribe().borrow());
        let policy = &third.services["billing"].traffic.policy;
        assert_eq!(policy.outlier_detection.consecutive_failures, 2);

        std::fs::write(dir.path().join("routes.yaml"), route.replace("2s", "2d")).expect("write");
        let Some(Reload::Invalid(error)) = reloader.poll(registry).await else {
            panic!("invalid route accepted")
        };
        let error = error.to_string();
        assert!(error.contains("routes.yaml:8:"), "{error}");
        assert!(
            error.contains("HTTPRoute/billing field `spec.rules[0].timeouts.request`"),
            "{error}"
        );
        assert_eq!(registry.subscribe().borrow().version, third.version);
    }
}
