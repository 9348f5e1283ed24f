//! The cluster as the control plane's source of resources (`meshwork control --kubernetes`):
//! one kube-runtime watcher with a reflector store per kind ([`super::objects`]), cluster-wide
//! or in one namespace. Once every kind is listed, the objects are loaded into a
//! `ResourceSet` (`api::object`: the checks of a resource file) that the control plane starts
//! with; afterwards every change — debounced by [`DEBOUNCE`] — rebuilds the set and feeds it
//! to the control plane, which applies it as it applies a directory's edits.
//!
//! Objects being deleted (`deletionTimestamp` set) count as gone. Changes the loader ignores
//! (a `status`, a resource version) rebuild nothing. Objects that do not load are logged
//! naming kind, namespace, name and field, and the previous policies keep serving. Watch
//! errors (410 Gone, connection refused, a missing CRD) are logged and retried with
//! kube-runtime's default backoff (0.8 s doubling to 30 s); the stores keep what they had.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::objects::{WatchedKind, to_json, watched_kinds};
use api::{LoadError, ResourceSet};
use control::ResourceUpdate;

/// How long a burst of changes (`kubectl apply -f dir/`) may settle before the set is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often the wait for the first complete list names the kinds still missing.
const WAITING_REPORT: Duration = Duration::from_secs(10);

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
}

impl Drop for ClusterSource {
    fn drop(&mut self) {
        for task in &self.watchers {
            task.abort();
        }
    }
}

impl ClusterSource {
    /// Starts a watcher for every kind, in `namespace` or in all. A Gateway API kind whose
    /// CRD the cluster does not serve (404) is skipped with a warning.
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
            if kind.optional && !served(&api).await {
                tracing::warn!(kind = %kind.resource.kind, api_version = %kind.resource.api_version,
                    "the cluster does not serve this kind (are the Gateway API CRDs installed?); \
                     not watching it: install them and restart to use routes");
                continue;
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
        }
    }

    /// Waits until every kind has been listed once and the objects load; the first set the
    /// control plane starts with. While they do not load, each version is logged and the
    /// next change awaited.
    pub async fn first_resources(&mut self) -> ResourceSet {
        self.wait_until_listed().await;
        loop {
            self.changes.borrow_and_update();
            match self.rebuild() {
                Some(Ok(set)) => return set,
                Some(Err(error)) => tracing::error!(
                    source = SOURCE,
                    "the cluster's resources do not load; waiting for a change to start:\n{error}"
                ),
                None => {}
            }
            self.next_change().await;
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

    /// Every kind's first complete list, naming the kinds still missing now and then.
    async fn wait_until_listed(&self) {
        for watched in &self.watched {
            let kind = &watched.kind.resource;
            loop {
                let ready = watched.store.wait_until_ready();
                match tokio::time::timeout(WAITING_REPORT, ready).await {
                    Ok(_) => break,
                    Err(_) => tracing::warn!(kind = %kind.kind, api_version = %kind.api_version,
                        "still waiting for the first list of this kind (is its CRD installed, \
                         may meshwork list it?)"),
                }
            }
        }
        tracing::info!(kinds = self.watched.len(), "every kind listed");
    }

    /// The stores' objects as a set, when their desired state differs from the last rebuild;
    /// `None` when it does not. (The control plane logs an invalid version it is fed.)
    fn rebuild(&mut self) -> Option<Result<ResourceSet, LoadError>> {
        let desired = self.desired();
        if self.last.as_ref() == Some(&desired) {
            return None;
        }
        let loaded = api::object::load_objects(desired.values());
        self.last = Some(desired);
        Some(loaded)
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

/// Whether the cluster serves `api`'s kind: anything but a 404 counts as served (a
/// connection error is the watcher's to retry).
async fn served(api: &Api<DynamicObject>) -> bool {
    match api.list(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(status)) => status.code != 404,
        _ => true,
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
