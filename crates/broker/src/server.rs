//! Starting and stopping the broker: configuration, listener, accept loop, crash recovery.
//!
//! Everything the broker spawns (connections, operations, store transactions) runs on one
//! [`TaskTracker`], so stopping it waits for all of them and the state file is closed when
//! [`RunningBroker::shutdown`] or [`RunningBroker::abort`] return — a restart on the same
//! file can follow immediately.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::BrokerError;
use crate::http::{self, Auth};
use crate::ops::{Broker, StepGate};
use crate::provider::{Provider, ProviderConfig};
use crate::secret::Secret;
use crate::store::Store;
use crate::taxonomy::Taxonomy;

/// The platform's basic-auth credentials. `Debug` redacts the password.
#[derive(Debug, Clone)]
pub struct BasicCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// Everything the broker needs; built by the CLI (or tests) from flags, files and env.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen; port 0 picks a free port (see [`RunningBroker::local_addr`]).
    pub listen: SocketAddr,
    /// The redb state file (created mode 0600: it holds binding credentials).
    pub state_path: PathBuf,
    /// Basic-auth credentials platforms must present.
    pub credentials: BasicCredentials,
    /// Classes (the catalog), environments and policy.
    pub taxonomy: Taxonomy,
    /// Named providers the policy refers to (admin URLs: configuration only).
    pub providers: ProviderConfig,
    /// Crash-test seam: hold operations at a named progress step (see [`StepGate`]).
    pub step_gate: Option<StepGate>,
}

impl BrokerConfig {
    /// A configuration without a step gate.
    pub fn new(
        listen: SocketAddr,
        state_path: PathBuf,
        credentials: BasicCredentials,
        taxonomy: Taxonomy,
        providers: ProviderConfig,
    ) -> Self {
        BrokerConfig {
            listen,
            state_path,
            credentials,
            taxonomy,
            providers,
            step_gate: None,
        }
    }
}

/// A broker that is serving. Stop it with [`RunningBroker::shutdown`] or
/// [`RunningBroker::abort`]; dropping it leaves tasks running until the runtime ends.
pub struct RunningBroker {
    addr: SocketAddr,
    providers: BTreeMap<String, Arc<Provider>>,
    resumed: usize,
    tracker: TaskTracker,
    drain: CancellationToken,
    kill: CancellationToken,
    operations: CancellationToken,
}

/// Runs the broker until `shutdown` resolves, then stops it gracefully.
pub async fn serve(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    let running = RunningBroker::start(config).await?;
    tracing::info!(addr = %running.local_addr(), "OSB broker listening");
    shutdown.await;
    running.shutdown().await;
    Ok(())
}

/// Deprovisions every instance in the state file (bindings included) and forgets it: for
/// tearing down a test or demo broker. The broker must not be running on the same file.
/// Returns how many instances were removed; stops at the first provider failure. Then each
/// provider discards what it keeps outside the state directory (a private PostgreSQL cluster
/// placed elsewhere because `postgres` could not reach the state directory).
pub async fn purge(config: BrokerConfig) -> Result<usize, BrokerError> {
    let providers = build_providers(&config.providers, &config.taxonomy)?;
    let tracker = TaskTracker::new();
    let store = Store::open(&config.state_path, tracker.clone())?;
    let mut result = crate::ops::purge(&store, &providers).await;
    if result.is_ok()
        && let Err(e) = discard(&providers).await
    {
        result = Err(e);
    }
    tracker.close();
    tracker.wait().await;
    result
}

async fn discard(providers: &BTreeMap<String, Arc<Provider>>) -> Result<(), BrokerError> {
    for provider in providers.values() {
        provider.discard().await?;
    }
    Ok(())
}

/// When the state file records no instance any more (`meshwork claims delete` of the last
/// claim), providers discard what they keep outside the state directory, as [`purge`] does.
/// Returns whether the store was empty. The broker must not be running on the same file.
pub async fn discard_if_unused(config: BrokerConfig) -> Result<bool, BrokerError> {
    let providers = build_providers(&config.providers, &config.taxonomy)?;
    let tracker = TaskTracker::new();
    let store = Store::open(&config.state_path, tracker.clone())?;
    let result = match store
        .read(|tx| Ok::<_, BrokerError>(tx.instances()?.is_empty()))
        .await
    {
        Ok(true) => discard(&providers).await.map(|()| true),
        other => other,
    };
    tracker.close();
    tracker.wait().await;
    result
}

async fn listen(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BrokerError> {
    let listen_err = |source| BrokerError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
    let bound = listener.local_addr().map_err(listen_err)?;
    Ok((listener, bound))
}

fn build_providers(
    config: &ProviderConfig,
    taxonomy: &Taxonomy,
) -> Result<BTreeMap<String, Arc<Provider>>, BrokerError> {
    taxonomy.check_providers(|name| config.kind_of(name))?;
    let mut out = BTreeMap::new();
    for (name, spec) in &config.providers {
        let provider = Provider::new(name, spec).map_err(|e| BrokerError::Config(e.to_string()))?;
        out.insert(name.clone(), Arc::new(provider));
    }
    Ok(out)
}

impl RunningBroker {
    /// Validates the configuration, opens the state file, binds the listener, resumes
    /// operations a previous run left in progress, and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<RunningBroker, BrokerError> {
        let providers = build_providers(&config.providers, &config.taxonomy)?;
        let tracker = TaskTracker::new();
        let operations = CancellationToken::new();
        let store = Store::open(&config.state_path, tracker.clone())?;
        let broker = Arc::new(Broker {
            catalog: http::render_catalog(&config.taxonomy),
            taxonomy: Arc::new(config.taxonomy),
            store,
            providers,
            tracker: tracker.clone(),
            cancel: operations.clone(),
            gate: config.step_gate,
        });
        let (listener, addr) = listen(config.listen).await?;
        let resumed = broker.recover().await?;
        let auth = Arc::new(Auth {
            username: config.credentials.username,
            password: config.credentials.password,
        });
        let running = RunningBroker {
            addr,
            providers: broker.providers.clone(),
            resumed,
            tracker: tracker.clone(),
            drain: CancellationToken::new(),
            kill: CancellationToken::new(),
            operations,
        };
        let router = http::router(broker, auth);
        tracker.spawn(accept(
            listener,
            router,
            running.tracker.clone(),
            running.drain.clone(),
            running.kill.clone(),
        ));
        Ok(running)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many interrupted operations this start resumed.
    pub fn resumed_operations(&self) -> usize {
        self.resumed
    }

    /// Stops accepting, lets in-flight requests finish, interrupts running operations (they
    /// resume on the next start), waits until everything, including the state file, is
    /// closed, and stops providers' own servers (the dev PostgreSQL cluster).
    pub async fn shutdown(self) {
        self.drain.cancel();
        self.operations.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        for (name, provider) in &self.providers {
            if let Err(e) = provider.stop().await {
                tracing::warn!(provider = %name, error = %e, "cannot stop provider");
            }
        }
    }

    /// Stops everything at its next await point, like a crash would (nothing is cleaned up,
    /// in-progress operations stay in progress in the store), and waits until the state file
    /// is closed. For crash-recovery tests.
    pub async fn abort(self) {
        self.kill.cancel();
        self.drain.cancel();
        self.operations.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn accept(
    listener: TcpListener,
    router: axum::Router,
    tracker: TaskTracker,
    drain: CancellationToken,
    kill: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = drain.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tracker.spawn(connection(
                    stream,
                    router.clone(),
                    drain.clone(),
                    kill.clone(),
                ));
            }
            Err(e) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    router: axum::Router,
    drain: CancellationToken,
    kill: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req| router.clone().oneshot(req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = kill.cancelled() => return,
        _ = drain.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = kill.cancelled() => {}
    }
}
