//! The cluster as the control plane's source of resources (`meshwork control --kubernetes`):
//! one kube-runtime watcher with a reflector store per kind ([`super::objects`]), cluster-wide
//! or in one namespace. Once every kind is listed, the objects are loaded into a
//! `ResourceSet` (`api::object`: the checks of a resource file) that the control plane starts
//! with; afterwards every change — debounced by [`DEBOUNCE`] — rebuilds the set and feeds it
//! to the control plane, which applies it as it applies a directory's edits.
//!
//! Objects being deleted (`deletionTimestamp` set) count as gone. Changes the loader ignores
//! (a `status`, a resource version) rebuild nothing. Watch errors (410 Gone, connection
//! refused, a missing CRD) are logged and retried with kube-runtime's default backoff (0.8 s
//! doubling to 30 s); the stores keep what they had.
//!
//! Objects that do not load are logged naming kind, namespace, name and field. Those of the
//! taxonomy kinds (`api::object::QUARANTINED_KINDS`, which the control plane does not serve)
//! are quarantined: left out, each logged at warn, and the rest applies. Any other invalid
//! object makes the whole version invalid, and the previous policies keep serving
//! (fail-closed). Every set that loads is saved in the state directory ([`saved`]); a restart
//! whose cluster objects do not load starts from it, so one bad edit cannot keep the node API
//! down. Without a saved set the start waits for a fix, repeating why every
//! [`INVALID_REMINDER`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::objects::{WatchedKind, to_json, watched_kinds};
use api::object::ObjectSet;
use api::{LoadError, ResourceSet};
use control::ResourceUpdate;
use probe::Probe;
use saved::SavedSet;

pub mod probe;
pub mod saved;

/// How long a burst of changes (`kubectl apply -f dir/`) may settle before the set is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often the wait for the first complete list names the kinds still missing.
const WAITING_REPORT: Duration = Duration::from_secs(10);

/// How often a start held up by objects that do not load (and no saved set) says why.
pub const INVALID_REMINDER: Duration = Duration::from_secs(30);

/// How long the first list of an optional kind (the Gateway API's routes) may hold up the
/// start. Routes shape traffic, not who may call whom (policies are required kinds), and a mesh
/// without them serves as it does without their CRDs; agents' SVIDs must not wait on them. 30 s
/// lets kube-runtime's backoff (0.8 s doubling) retry about five times through an API hiccup;
/// a list that arrives later applies live, like any change.
pub const OPTIONAL_LIST_WAIT: Duration = Duration::from_secs(30);

/// The source's name in the control plane's logs.
pub const SOURCE: &str = "kubernetes";

/// One kind's reflector store.
struct Watched {
    kind: WatchedKind,
    store: Store<DynamicObject>,
}

/// The desired state of every object (`api::object::desired_state`), by (kind's position,
/// namespace, name): what decides whether a change is worth a rebuild, in a stable order.
type Desired = BTreeMap<(usize, String, String), Value>;

/// Watches every kind of the mesh in a cluster. Dropping it stops the watchers.
pub struct ClusterSource {
    watched: Vec<Watched>,
    /// Bumped by the watchers after each event they applied to their store.
    changes: watch::Receiver<u64>,
    watchers: Vec<JoinHandle<()>>,
    /// What was last loaded (valid or not).
    last: Option<Desired>,
    /// Where every set that loads is saved, for a restart whose objects do not load.
    saved: Option<SavedSet>,
    /// How long an optional kind's first list may hold up the start ([`OPTIONAL_LIST_WAIT`]).
    optional_wait: Duration,
}

impl Drop for ClusterSource {
    fn drop(&mut self) {
        for task in &self.watchers {
            task.abort();
        }
    }
}

impl ClusterSource {
    /// Starts a watcher for every kind, in `namespace` or in all. A Gateway API kind the
    /// cluster does not serve (404) or meshwork may not list (403) is skipped with a warning
    /// ([`probe`]).
    pub async fn watch(client: Client, namespace: Option<&str>) -> ClusterSource {
        let (bump, changes) = watch::channel(0u64);
        let bump = Arc::new(bump);
        let mut watched = Vec::new();
        let mut watchers = Vec::new();
        for kind in watched_kinds() {
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &kind.resource),
                None => Api::all_with(client.clone(), &kind.resource),
            };
            if kind.optional {
                match probe::probe(&api).await {
                    Probe::Served => {}
                    Probe::Skip(why) => {
                        tracing::warn!(kind = %kind.resource.kind, api_version = %kind.resource.api_version,
                            "{why}; not watching it: fix that and restart to use routes");
                        continue;
                    }
                    Probe::Unknown(error) => {
                        tracing::warn!(kind = %kind.resource.kind, %error,
                            "cannot tell whether the cluster serves this optional kind; watching it \
                             anyway, and starting without it if it is not listed within {}s",
                            OPTIONAL_LIST_WAIT.as_secs())
                    }
                }
            }
            let writer = reflector::store::Writer::new(kind.resource.clone());
            let store = writer.as_reader();
            let events = watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer);
            let name = kind.resource.kind.clone();
            watchers.push(tokio::spawn(drive(name, events, Arc::clone(&bump))));
            watched.push(Watched { kind, store });
        }
        ClusterSource {
            watched,
            changes,
            watchers,
            last: None,
            saved: None,
            optional_wait: OPTIONAL_LIST_WAIT,
        }
    }

    /// Saves every set that loads as `<state>/cluster-resources.json` ([`saved`]), and starts
    /// from it when the cluster's objects do not load ([`Self::first_resources`]).
    /// `namespace`: the scope the source reads (a set saved from another is not started from).
    pub fn save_in(&mut self, state: &std::path::Path, namespace: Option<&str>) {
        self.saved = Some(SavedSet::in_state_dir(state, namespace));
    }

    /// Waits until every kind has been listed once; the first set the control plane starts
    /// with. When the objects do not load, the last set that did ([`saved`]) — else the next
    /// change that loads, repeating why every [`INVALID_REMINDER`] meanwhile.
    pub async fn first_resources(&mut self) -> ResourceSet {
        self.wait_until_listed().await;
        let mut fell_back = false;
        let mut why = String::new();
        loop {
            self.changes.borrow_and_update();
            match self.rebuild() {
                Some(Ok(set)) => return set,
                Some(Err(error)) => {
                    if !std::mem::replace(&mut fell_back, true)
                        && let Some(set) = self.saved_set(&error)
                    {
                        return set;
                    }
                    why = error.to_string();
                    tracing::warn!(
                        source = SOURCE,
                        "the cluster's resources do not load and no saved set applies; \
                         waiting for a change to start:\n{why}"
                    );
                }
                None => {}
            }
            let change = self.next_change();
            let mut change = std::pin::pin!(change);
            loop {
                tokio::select! {
                    () = &mut change => break,
                    () = tokio::time::sleep(INVALID_REMINDER) => tracing::warn!(source = SOURCE,
                        "still waiting to start: the cluster's resources do not load:\n{why}"),
                }
            }
        }
    }

    /// The last set that applied, when one is saved and loads, announced loudly with why the
    /// cluster's objects (`error`) do not load.
    fn saved_set(&self, error: &LoadError) -> Option<ResourceSet> {
        let saved = self.saved.as_ref()?;
        match saved.load() {
            Ok(Some(loaded)) => {
                tracing::warn!(source = SOURCE, saved = %saved.path().display(),
                    "THE CLUSTER'S RESOURCES DO NOT LOAD; starting from the last set that applied, \
                     saved by an earlier run. Fix the object named below: the saved policies \
                     serve until the cluster's load.\n{error}");
                log_quarantined(&loaded);
                Some(loaded.set)
            }
            Ok(None) => None,
            Err(problem) => {
                tracing::warn!(
                    source = SOURCE,
                    "the saved set does not load either: {problem:#}"
                );
                None
            }
        }
    }

    /// Sends every later change to `feed` (after [`Self::first_resources`]), until the
    /// control plane stops listening.
    pub async fn feed(mut self, feed: watch::Sender<Arc<ResourceUpdate>>) {
        loop {
            tokio::select! {
                () = self.next_change() => {}
                () = feed.closed() => return,
            }
            let Some(resources) = self.rebuild() else {
                continue;
            };
            let update = ResourceUpdate {
                source: SOURCE.to_owned(),
                resources,
            };
            if feed.send(Arc::new(update)).is_err() {
                return;
            }
        }
    }

    /// Waits for a change, then for [`DEBOUNCE`] so that a burst becomes one rebuild.
    async fn next_change(&mut self) {
        if self.changes.changed().await.is_err() {
            // Every watcher ended (they do not, but if so): nothing will change any more.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DEBOUNCE).await;
        self.changes.borrow_and_update();
    }

    /// Every kind's first complete list, naming the kinds still missing now and then; an
    /// optional kind's for [`OPTIONAL_LIST_WAIT`] at most.
    async fn wait_until_listed(&self) {
        let started = tokio::time::Instant::now();
        for watched in &self.watched {
            let kind = &watched.kind.resource;
            loop {
                let optional = watched.kind.optional;
                let budget = match optional {
                    true => {
                        (self.optional_wait.saturating_sub(started.elapsed())).min(WAITING_REPORT)
                    }
                    false => WAITING_REPORT,
                };
                let ready = watched.store.wait_until_ready();
                if tokio::time::timeout(budget, ready).await.is_ok() {
                    break;
                }
                if optional && started.elapsed() >= self.optional_wait {
                    tracing::warn!(kind = %kind.kind, api_version = %kind.api_version,
                        "this optional kind is not listed yet; starting without it (its objects \
                         apply when it is)");
                    break;
                }
                tracing::warn!(kind = %kind.kind, api_version = %kind.api_version,
                    "still waiting for the first list of this kind (is its CRD installed, \
                     may meshwork list it?)");
            }
        }
        tracing::info!(kinds = self.watched.len(), "every kind listed");
    }

    /// The stores' objects as a set, when their desired state differs from the last rebuild;
    /// `None` when it does not. (The control plane logs an invalid version it is fed.)
    /// Quarantined objects are logged; a set that loads is saved.
    fn rebuild(&mut self) -> Option<Result<ResourceSet, LoadError>> {
        let desired = self.desired();
        if self.last.as_ref() == Some(&desired) {
            return None;
        }
        let loaded = api::object::load_objects(desired.values());
        if let Ok(loaded) = &loaded {
            log_quarantined(loaded);
            if let Some(saved) = &self.saved
                && let Err(error) = saved.save(desired.values())
            {
                tracing::warn!(source = SOURCE, "{error:#}");
            }
        }
        self.last = Some(desired);
        Some(loaded.map(|loaded| loaded.set))
    }

    /// The desired state of every object not being deleted.
    fn desired(&self) -> Desired {
        let mut desired = Desired::new();
        for (position, watched) in self.watched.iter().enumerate() {
            for object in watched.store.state() {
                let json = to_json(&object, &watched.kind.resource);
                if api::object::is_being_deleted(&json) {
                    continue;
                }
                let meta = &object.metadata;
                let key = (
                    position,
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                );
                desired.insert(key, api::object::desired_state(&json));
            }
        }
        desired
    }
}

/// Logs each object left out of a set, at warn, with why.
fn log_quarantined(loaded: &ObjectSet) {
    for left_out in &loaded.quarantined {
        tracing::warn!(source = SOURCE, object = %left_out.object,
            "left out of the mesh's resources (quarantined; the rest applies): {}", left_out.reason);
    }
}

/// Runs one kind's watcher: bumps `changes` after each event (the reflector has applied it
/// to the store by then) and logs errors, which the backoff spaces out.
async fn drive(
    kind: String,
    events: impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>>,
    changes: Arc<watch::Sender<u64>>,
) {
    let mut events = std::pin::pin!(events);
    let mut failing = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(%kind, "watching again");
                }
                tracing::debug!(%kind, event = %event_name(&event), "watch event");
                changes.send_modify(|n| *n = n.wrapping_add(1));
            }
            Err(error) => {
                failing = true;
                tracing::warn!(%kind, %error, "watching the cluster failed; retrying with backoff");
            }
        }
    }
}

fn event_name(event: &watcher::Event<DynamicObject>) -> &'static str {
    match event {
        watcher::Event::Apply(_) => "apply",
        watcher::Event::Delete(_) => "delete",
        watcher::Event::Init => "init",
        watcher::Event::InitApply(_) => "init-apply",
        watcher::Event::InitDone => "init-done",
    }
}

/// Runs the control plane with the cluster as its source until `shutdown`: waits for the first
/// complete list of every kind, starts with it, then feeds every change.
pub async fn serve_control(
    client: Client,
    namespace: Option<&str>,
    mut config: control::ControlConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut source = ClusterSource::watch(client, namespace).await;
    source.save_in(&config.state_dir, namespace);
    let mut shutdown = Box::pin(shutdown);
    let first = tokio::select! {
        set = source.first_resources() => set,
        () = &mut shutdown => return Ok(()),
    };
    tracing::info!(
        source = SOURCE,
        "resources loaded from the cluster; starting the control plane"
    );
    let (sender, feed) = watch::channel(Arc::new(ResourceUpdate {
        source: SOURCE.to_owned(),
        resources: Ok(first.clone()),
    }));
    config.resources = first;
    let feeding = tokio::spawn(source.feed(sender));
    let served = control::serve_fed(config, feed, shutdown).await;
    feeding.abort();
    Ok(served?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
