//! A **fake** Kubernetes API server for testing meshwork's controller mode with the real
//! kube-rs client and runtime, where no real API server can run.
//!
//! It is a fake: it implements what meshwork uses, as the real server behaves, and nothing
//! else. Its answers are checked against recordings of real API servers: `recorded/*.json`
//! (each names its source: k8s-openapi's replays of a Kubernetes v1.33 kind cluster, and
//! error bodies captured by kubernetes-client/python's end-to-end tests and
//! teseraio/ensemble; one, the Conflict, is a hand-written fixture of Helm's, not a
//! recording), replayed by `tests/recorded.rs`. The real kube-rs client, `watcher`,
//! `finalizer` helper and `Controller` run against it in `tests/`.
//!
//! Served over HTTPS, as a real cluster is (its own CA; a serving certificate with the IP SAN
//! `127.0.0.1`, which kube-rs 5 with rustls/ring accepts; a bearer token; see
//! [`FakeApiServer::write_kubeconfig`]):
//! - paths `/api/v1/namespaces/{ns}/{plural}[/{name}]`,
//!   `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/status]]` and the
//!   all-namespaces collections `/api/v1/{plural}`, `/apis/{group}/{version}/{plural}`
//!   (cluster-scoped resources without `/namespaces/{ns}`);
//! - list (one page: `limit` and `continue` are ignored), watch (`watch=true|1`,
//!   `resourceVersion`, `allowWatchBookmarks`, `timeoutSeconds`, `sendInitialEvents`), get,
//!   create, replace (`PUT`, 409 on a stale `resourceVersion`), patch (merge, JSON Patch, and
//!   server-side apply approximated as a merge: `fieldManager` required and `force` refused on
//!   other patches as the real server does, but no field ownership, see `patch.rs`), delete
//!   (preconditions honoured; `propagationPolicy` `Background` only, others refused with 400);
//! - what the real server decodes and checks before storing (`admission.rs`): bodies and
//!   patch results that are not objects, or whose `metadata` has the wrong types, are 400;
//!   names must be DNS-1123 subdomains and creates carry no `resourceVersion`; Secrets'
//!   rules (`secret.rs`);
//! - a custom resource's CRD schema, if its [`FakeResource`] has one (`schema.rs`; every
//!   meshwork kind in [`meshwork_resources`]): writes are pruned, defaulted and validated
//!   (422 `Invalid` with the real causes' shape). CEL `x-kubernetes-validations` rules are
//!   **not** evaluated, nor `format`s;
//! - the status subresource; finalizers and `deletionTimestamp`; the garbage collector for
//!   `ownerReferences` (`gc.rs`), run synchronously at writes and deletions (the real one runs
//!   later, in the background), absent owners included;
//! - equality-based `labelSelector` and `fieldSelector` on `metadata.name`/`namespace` (others
//!   are refused with 400, never ignored);
//! - one global `resourceVersion` counter; a history window of changes watches resume from
//!   (older: an `ERROR` event with a 410 `Expired` status, as the real server sends);
//!   `BOOKMARK` events every `bookmark_interval` and on demand.
//!
//! Not served: discovery (`/api`, `/apis`), other subresources, `deletecollection`, strategic
//! merge patch, protobuf, `dryRun`, admission webhooks and policies, validation of built-in
//! kinds beyond the above, CEL rules, paging, lists at an exact
//! past `resourceVersion` (served at the current one).

mod admission;
mod gc;
mod meta;
mod patch;
mod resource;
mod routing;
mod schema;
mod secret;
mod selector;
mod status;
mod store;
mod tls;
mod watch;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::{JoinHandle, JoinSet};

pub use resource::{FakeResource, meshwork_resources};

use self::routing::Shared;
use self::store::Store;
use self::tls::ServingCert;

/// Why the fake API server could not start or write its kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum FakeApiError {
    /// Binding `127.0.0.1:0` failed.
    #[error("the fake API server could not bind 127.0.0.1:0")]
    Bind(#[source] std::io::Error),
    /// Generating the fake's CA or serving certificate failed.
    #[error("the fake API server could not make its certificates")]
    Certificate(#[source] rcgen::Error),
    /// Building the TLS configuration failed.
    #[error("the fake API server could not configure TLS")]
    Tls(#[source] rustls::Error),
    /// A [`FakeResource::schema`] is not a schema the validator compiles.
    #[error("the schema of {kind} does not compile: {why}")]
    Schema {
        /// The resource's `kind`.
        kind: String,
        /// The validator's message.
        why: String,
    },
    /// Writing the kubeconfig failed.
    #[error("could not write the fake API server's kubeconfig to {path}")]
    Kubeconfig {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The RBAC verb of a request, as the real server's authorizer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakeVerb {
    /// `GET` of one object.
    Get,
    /// `GET` of a collection.
    List,
    /// `GET` of a collection with `watch=true`.
    Watch,
    /// `POST`.
    Create,
    /// `PUT`.
    Update,
    /// `PATCH`.
    Patch,
    /// `DELETE` of one object.
    Delete,
}

impl FakeVerb {
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            FakeVerb::Get => "get",
            FakeVerb::List => "list",
            FakeVerb::Watch => "watch",
            FakeVerb::Create => "create",
            FakeVerb::Update => "update",
            FakeVerb::Patch => "patch",
            FakeVerb::Delete => "delete",
        }
    }
}

/// One request the fake API server served (authenticated and routed to a resource), for
/// checking a controller's RBAC against what it actually used.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FakeRequest {
    /// The RBAC verb.
    pub verb: FakeVerb,
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    /// `status`, if the request was to the status subresource.
    pub subresource: Option<String>,
    /// The namespace in the path (`None`: all namespaces or cluster-scoped).
    pub namespace: Option<String>,
    /// The object's name, for requests on one object.
    pub name: Option<String>,
}

/// Tuning for [`FakeApiServer::start_with`].
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// How many changes the history window keeps for watches to resume from.
    pub history: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            history: 1000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

/// A running fake Kubernetes API server on `127.0.0.1` (HTTPS); stops on drop or
/// [`FakeApiServer::shutdown`].
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    stop: signal::Sender<bool>,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a fake API server serving `resources`, with default options.
    pub async fn start(resources: &[FakeResource]) -> Result<FakeApiServer, FakeApiError> {
        FakeApiServer::start_with(resources, FakeOptions::default()).await
    }

    /// Starts a fake API server serving `resources`.
    pub async fn start_with(
        resources: &[FakeResource],
        options: FakeOptions,
    ) -> Result<FakeApiServer, FakeApiError> {
        let store = Store::new(resources.to_vec(), options.history)
            .map_err(|(kind, why)| FakeApiError::Schema { kind, why })?;
        let cert = ServingCert::generate()?;
        let config = cert.server_config()?;
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(FakeApiError::Bind)?;
        let addr = listener.local_addr().map_err(FakeApiError::Bind)?;
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            token: format!("fake-{}", uuid::Uuid::new_v4().simple()),
        });
        let (stop, stopped) = signal::channel(false);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(accept(
            listener,
            acceptor,
            shared.clone(),
            stopped,
            options.bookmark_interval,
        ));
        Ok(FakeApiServer {
            addr,
            ca_pem: cert.ca_pem,
            shared,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM of the CA that signed the serving certificate (IP SAN `127.0.0.1`, DNS SAN
    /// `localhost`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token every request must carry (others get 401).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kubeconfig (cluster, user with the token, current context `fake` in namespace
    /// `default`), as text.
    pub fn kubeconfig(&self) -> String {
        tls::kubeconfig(&self.url(), &self.ca_pem, &self.shared.token)
    }

    /// Writes [`FakeApiServer::kubeconfig`] to `path`, for `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), FakeApiError> {
        tls::write(path, &self.kubeconfig())
    }

    /// Every request served so far (authenticated, routed to a resource, with a known verb;
    /// including those then refused, e.g. with 409 or 422), in the order they were routed:
    /// for concurrent requests that is not necessarily the order their writes committed.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.shared.store().requests.clone()
    }

    /// The stored object, as a get would return it.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store();
        let resource = store
            .resources
            .iter()
            .position(|r| r.group == group && r.plural == plural)?;
        store
            .objects
            .get(&(resource, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of one resource type (all namespaces), in name order per namespace.
    pub fn objects(&self, group: &str, plural: &str) -> Vec<Value> {
        let store = self.shared.store();
        let Some(resource) = store
            .resources
            .iter()
            .position(|r| r.group == group && r.plural == plural)
        else {
            return Vec::new();
        };
        store
            .objects
            .iter()
            .filter(|((r, _, _), _)| *r == resource)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// The current global `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().revision
    }

    /// Sends a `BOOKMARK` to every open watch that allows them, now.
    pub fn bookmark_now(&self) {
        self.shared.store().bookmark_all();
    }

    /// Closes every open watch and drops the history, so a watch resuming from any
    /// `resourceVersion` seen so far gets a 410 `Expired` (and a client must list again).
    pub fn expire_watches(&self) {
        self.shared.store().expire_watches();
    }

    /// How many watches are open.
    pub fn open_watches(&self) -> usize {
        let mut store = self.shared.store();
        store.watchers.retain(|w| !w.sender.is_closed());
        store.watchers.len()
    }

    /// Stops serving: closes the listener, every connection and every watch.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.shared.store().watchers.clear();
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.shared.store().watchers.clear();
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: signal::Receiver<bool>,
    bookmark_interval: Duration,
) {
    let mut connections = JoinSet::new();
    let first = tokio::time::Instant::now() + bookmark_interval;
    let mut bookmarks = tokio::time::interval_at(first, bookmark_interval);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = bookmarks.tick() => shared.store().bookmark_all(),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |request| {
                        routing::serve(shared.clone(), request)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
