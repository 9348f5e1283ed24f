//! The node agent (`meshwork agent`): joins the control plane with a one-time join
//! token, then serves the SPIFFE Workload API on a unix socket to the workloads of
//! its host.
//!
//! - Node attestation: join token → node SVID ([`crate::node_api`]); afterwards every
//!   call to control is mTLS with that SVID, renewed at half-life.
//! - Workload attestation: unix peer credentials (`attest`) matched against
//!   registration entries synced from control.
//! - Keys for workload SVIDs are generated here (where they are used); only CSRs go
//!   to control. SVIDs are renewed at half-life with jitter and pushed to streams.
//! - Static stability: when control is unreachable the agent keeps serving what it
//!   has (entries, bundles, SVIDs until they expire) and retries with capped,
//!   jittered exponential backoff; it resynchronises when control returns.

mod attest;
mod client;
mod h2_authority;
mod jwt_cache;
mod metrics;
mod node;
mod replicas;
mod state;
mod sync;
mod workload_api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use api::contract::client::CallError;
use identity::{SpiffeId, Svid, SvidCertificate, SvidKey, SvidStore, TrustBundle, TrustDomain};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use attest::{facts as process_facts, start_time as process_start_time};
pub use client::{NodeClient, TlsConnect};
pub use h2_authority::{AuthorityRewriter, RewriteError};
pub use metrics::fetch_status;
pub use replicas::Replicas;
pub use state::{AgentState, Identities, renewal_delay};

use identity::control_id;

/// What an agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node API of every control-plane replica (`<state>/node-api.addr`, one per line);
    /// the agent talks to one and fails over to the others ([`Replicas`]).
    pub control: Vec<SocketAddr>,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Roots to verify the control plane with before joining (`<state>/bundle.pem`).
    pub bootstrap_bundle: TrustBundle,
    /// The one-time join token; not needed to resume with a saved node SVID.
    pub join_token: Option<String>,
    /// Where the node SVID and key are kept (mode 0600) so a restart needs no new token.
    pub data_dir: Option<PathBuf>,
    /// The Workload API socket to create (mode 0666: any local process may ask; attestation decides).
    pub socket: PathBuf,
    /// Where to serve `/metrics` and `/status` (loopback), if anywhere.
    pub admin: Option<SocketAddr>,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Joining failed for good (e.g. the token was refused).
    #[error("joining the control plane failed")]
    Join(#[source] CallError),
    /// A key, CSR or returned SVID was unusable.
    #[error("the node SVID or its key is unusable")]
    Svid(#[source] identity::SvidError),
    /// Control returned a bundle that does not parse.
    #[error("the trust bundle from control does not parse")]
    Bundle(#[source] identity::BundleError),
    /// No saved node SVID could be used and no join token was given.
    #[error("no join token given and no usable saved node SVID")]
    NoToken,
    /// The saved node SVID could not be read or written.
    #[error("saved node SVID {}", path.display())]
    Saved {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The saved node SVID does not parse.
    #[error("saved node SVID {} is unreadable; move it away to join again with a token", path.display())]
    SavedSvid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: identity::SvidError,
    },
    /// The Workload API socket or admin listener could not be set up.
    #[error("{what} {where_}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Path or address.
        where_: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The agent's shared pieces.
pub(crate) struct Agent {
    pub client: NodeClient,
    pub replicas: Arc<Replicas>,
    pub node: Arc<SvidStore>,
    pub state: watch::Sender<Arc<AgentState>>,
    pub trust_domain: TrustDomain,
    pub jwt_cache: jwt_cache::JwtCache,
    pub data_dir: Option<PathBuf>,
}

/// Runs the agent until `shutdown` resolves. Returns `Ok` on shutdown (also when it
/// comes while still joining), an error when joining is refused.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    // Join, then take the first sync before serving, so a caller is never refused
    // for want of entries the agent simply has not fetched yet.
    let started = async {
        let agent = join(&config).await?;
        let version = sync::first(&agent).await;
        Ok::<_, AgentError>((Arc::new(agent), version))
    };
    let (agent, version) = tokio::select! {
        started = started => started?,
        () = &mut shutdown => return Ok(()),
    };
    let stop = CancellationToken::new();
    let listener = workload_api::bind(&config.socket)?;
    let admin = match config.admin {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sync::run(Arc::clone(&agent), version, stop.clone()));
    if let Some(listener) = admin {
        tasks.spawn(metrics::serve(listener, Arc::clone(&agent), stop.clone()));
    }
    tasks.spawn(workload_api::serve(
        listener,
        Arc::clone(&agent),
        stop.clone(),
    ));
    tracing::info!(socket = %config.socket.display(), node = %agent.node.svid().id(), "agent ready");
    shutdown.await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

/// Node attestation: trades the join token for a node SVID, then takes the first sync.
async fn join(config: &AgentConfig) -> Result<Agent, AgentError> {
    let control = control_id(&config.trust_domain);
    let replicas = Arc::new(Replicas::new(config.control.clone()));
    let (svid, bundle) = node::attest(config, &replicas).await?;
    let node = Arc::new(SvidStore::new(svid, bundle.clone()));
    let client = TlsConnect::attested(Arc::clone(&replicas), &node, control);
    let initial = AgentState {
        entries: Vec::new(),
        svids: Default::default(),
        jwt_bundle: identity::JwtBundle::empty(config.trust_domain.clone()),
        jwks: String::new(),
        bundle,
        control_connected: true,
        last_sync: None,
    };
    let (state, _) = watch::channel(Arc::new(initial));
    Ok(Agent {
        client,
        replicas,
        node,
        state,
        trust_domain: config.trust_domain.clone(),
        jwt_cache: jwt_cache::JwtCache::default(),
        data_dir: config.data_dir.clone(),
    })
}

/// Pairs a key with the SVID control signed for it and reads the bundle.
pub(crate) fn assemble(
    key: SvidKey,
    response: &api::contract::SvidResponse,
    td: &TrustDomain,
) -> Result<(Svid, TrustBundle), AgentError> {
    let cert = SvidCertificate::from_pem(&response.cert_chain_pem).map_err(AgentError::Svid)?;
    let svid = Svid::new(key, cert).map_err(AgentError::Svid)?;
    let bundle =
        TrustBundle::from_pem(td.clone(), &response.bundle_pem).map_err(AgentError::Bundle)?;
    Ok((svid, bundle))
}

/// A throwaway CSR subject: control decides identities, the CSR only carries the key.
pub(crate) fn csr_subject(td: &TrustDomain) -> SpiffeId {
    td.spiffe_id()
}

/// The trust domain a bundle's first root certifies (its `spiffe://<td>` URI SAN).
pub fn trust_domain_of(bundle_pem: &str) -> Option<TrustDomain> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(bundle_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => {
            uri.strip_prefix("spiffe://")?.parse().ok()
        }
        _ => None,
    })
}
