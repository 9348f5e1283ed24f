//! Live policy updates: the control plane polls its resource directory once a second and,
//! when a resource file changed, loads the directory again. Changed policies go out in a new
//! snapshot, which proxies pick up through their long poll — nothing restarts.
//!
//! Polling names, sizes and mtimes is deliberately simple: it needs no platform watcher,
//! catches editors that replace files by renaming, and costs one `readdir` plus a `stat` per
//! file each second. An invalid edit is logged with the loader's error (file, line, field)
//! and the previous policies keep serving. Policies and traffic (`HTTPRoute`, `GRPCRoute`,
//! `Service` `spec.traffic`) apply live; other `Mesh`, `Workload` and `Service` changes are
//! reported as needing a restart (they mean new processes, identities or CA material, which
//! `meshwork up` owns).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::{LoadError, ResourceSet};
use tokio_util::sync::CancellationToken;

use crate::Registry;

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

/// What one poll did.
#[derive(Debug)]
pub enum Reload {
    /// No resource file changed.
    Unchanged,
    /// Files changed and loaded, but the policies and routes are the same (e.g. a comment
    /// was edited).
    SamePolicies,
    /// New policies were published (and maybe new routes); the new snapshot's policy hash.
    Published(String),
    /// Only routes or a `Service`'s traffic knobs changed; they were published.
    TrafficPublished,
    /// The directory no longer loads; the previous policies keep serving.
    Invalid(LoadError),
}

/// Reloads one directory into one registry.
pub struct Reloader {
    dir: PathBuf,
    /// The resources the control plane started with, to spot changes that need a restart.
    started_with: ResourceSet,
    last: Option<Fingerprint>,
}

impl Reloader {
    /// Watches `dir`, whose resources the registry was opened with (`started_with`).
    pub fn new(dir: PathBuf, started_with: ResourceSet) -> Reloader {
        let last = Fingerprint::take(&dir).ok();
        Reloader {
            dir,
            started_with,
            last,
        }
    }

    /// Checks the directory once; reloads and publishes when a file changed.
    pub fn poll(&mut self, registry: &Registry) -> Reload {
        let now = Fingerprint::take(&self.dir).ok();
        if now == self.last {
            return Reload::Unchanged;
        }
        // Remember the failing state too: an invalid edit is reported once, not every second.
        self.last = now;
        let set = match api::load_dir(&self.dir) {
            Ok(set) => set,
            Err(error) => return Reload::Invalid(error),
        };
        if needs_restart(&self.started_with, &set) {
            tracing::warn!(dir = %self.dir.display(),
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

fn needs_restart(before: &ResourceSet, after: &ResourceSet) -> bool {
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

/// Polls `dir` every [`POLL_INTERVAL`], logging what each reload did, until `stop` is
/// cancelled.
pub(crate) async fn watch(
    registry: Arc<Registry>,
    dir: PathBuf,
    started_with: ResourceSet,
    stop: CancellationToken,
) {
    let mut reloader = Reloader::new(dir, started_with);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        // Loading is blocking file I/O on a small directory; fine on this task's worker.
        let dir = reloader.dir.display().to_string();
        match reloader.poll(&registry) {
            Reload::Unchanged => {}
            Reload::SamePolicies => {
                tracing::info!(%dir, "resources reloaded; policies and routes unchanged")
            }
            Reload::Published(hash) => {
                let version = registry.subscribe().borrow().version;
                tracing::info!(%dir, policy_hash = %hash, version, "policies reloaded and published");
            }
            Reload::TrafficPublished => {
                let version = registry.subscribe().borrow().version;
                tracing::info!(%dir, version, "routes and traffic settings reloaded and published");
            }
            Reload::Invalid(error) => {
                tracing::error!(%dir, "resources not reloaded, the previous policies keep serving:\n{error}");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing")
    }

    /// A copy of the example (resources only) to edit, and a registry serving it.
    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Registry, Reloader) {
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
        let state = tempfile::tempdir().expect("tempdir");
        let registry = Registry::open(state.path(), set.clone()).expect("registry");
        let reloader = Reloader::new(dir.path().to_owned(), set);
        (dir, state, registry, reloader)
    }

    #[test]
    fn policy_edits_are_published_and_invalid_edits_keep_the_old_policies() {
        let (dir, _state, registry, mut reloader) = setup();
        let first = Arc::clone(&registry.subscribe().borrow());
        assert_eq!(first.policies.authorization.len(), 3);
        assert_eq!(first.policy_hash, first.policies.hash().to_string());
        assert!(matches!(reloader.poll(&registry), Reload::Unchanged));

        let policies = dir.path().join("policies.yaml");
        let text = std::fs::read_to_string(&policies).expect("read");
        std::fs::write(
            &policies,
            text.replace("ports: [443]", "ports: [443, 8443]"),
        )
        .expect("write");
        let Reload::Published(hash) = reloader.poll(&registry) else {
            panic!("not published")
        };
        let second = Arc::clone(&registry.subscribe().borrow());
        assert!(second.version > first.version);
        assert_ne!(hash, first.policy_hash);
        assert_eq!(hash, second.policy_hash);

        std::fs::write(&policies, "apiVersion: meshwork.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: x}\nspec: {to: []}\n")
            .expect("write");
        let Reload::Invalid(error) = reloader.poll(&registry) else {
            panic!("invalid edit accepted")
        };
        assert!(
            error.to_string().contains("EgressPolicy/x field `spec.to`"),
            "{error}"
        );
        assert_eq!(registry.subscribe().borrow().version, second.version);
        assert!(
            matches!(reloader.poll(&registry), Reload::Unchanged),
            "an invalid edit is reported once"
        );
    }

    #[test]
    fn unchanged_policies_publish_nothing() {
        let (dir, _state, registry, mut reloader) = setup();
        let version = registry.subscribe().borrow().version;
        let services = dir.path().join("services.yaml");
        let text = std::fs::read_to_string(&services).expect("read");
        std::fs::write(&services, format!("# a comment\n{text}")).expect("write");
        assert!(matches!(reloader.poll(&registry), Reload::SamePolicies));
        assert_eq!(registry.subscribe().borrow().version, version);
    }

    #[test]
    fn route_and_traffic_edits_are_published_live() {
        let (dir, _state, registry, mut reloader) = setup();
        let first = Arc::clone(&registry.subscribe().borrow());
        // The example's billing Service has knobs (services.yaml) but, here, no route.
        let traffic = &first.services["billing"].traffic;
        assert!(!traffic.has_routes());
        assert_eq!(traffic.policy.outlier_detection.consecutive_failures, 3);

        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: billing}\nspec:\n  parentRefs: [{group: '', kind: Service, name: billing}]\n  rules:\n    - matches: [{path: {value: /charges}}]\n      timeouts: {request: 2s}\n";
        std::fs::write(dir.path().join("routes.yaml"), route).expect("write");
        assert!(matches!(reloader.poll(&registry), Reload::TrafficPublished));
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
        assert!(matches!(reloader.poll(&registry), Reload::TrafficPublished));
        let third = Arc::clone(&registry.subscribe().borrow());
        let policy = &third.services["billing"].traffic.policy;
        assert_eq!(policy.outlier_detection.consecutive_failures, 2);

        std::fs::write(dir.path().join("routes.yaml"), route.replace("2s", "2d")).expect("write");
        let Reload::Invalid(error) = reloader.poll(&registry) else {
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
