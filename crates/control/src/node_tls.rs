//! The node API listener: TLS on loopback TCP, serving [`crate::node_api`].
//!
//! The control plane presents its own SVID (`spiffe://<td>/meshwork/control`), issued
//! by its CA at start and renewed at half-life. Client certificates are *requested*
//! but not required at the TLS layer, because an agent that is joining has none yet;
//! when one is presented it is fully verified against the bundle, and every route
//! except `join` refuses a caller without a verified node SVID. The same task keeps
//! CA rotation moving (see [`crate::authority`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use identity::control_id;
use identity::{ClientAuth, PeerPolicy, Protocols, Svid, SvidCertificate, SvidKey, SvidStore};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ControlError;
use crate::connection::Stopping;
use crate::issuer::Issuer;
use crate::node_api::{self, Peer};

/// How often CA transitions and the control plane's own SVID are checked.
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(1);

/// Issues the control plane its own SVID from its own CA.
fn own_svid(issuer: &Issuer) -> Result<Svid, ControlError> {
    let id = control_id(issuer.trust_domain());
    let csr = |e: identity::SvidError| {
        ControlError::request(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "own_svid",
            format!("issuing the control plane's own SVID: {e}"),
        )
    };
    let key = SvidKey::generate().map_err(csr)?;
    let response = issuer
        .sign(&key.csr_pem(&id).map_err(csr)?, &id)
        .map_err(|source| ControlError::Csr {
            workload: id.to_string(),
            source,
        })?;
    let cert = SvidCertificate::from_pem(&response.cert_chain_pem).map_err(csr)?;
    Svid::new(key, cert).map_err(csr)
}

/// Serves the node API on `listener` until `stop` is cancelled; connections and the
/// maintenance task run on `tasks` and end with `stop` too.
pub(crate) async fn serve(
    listener: TcpListener,
    issuer: Arc<Issuer>,
    stop: CancellationToken,
    tasks: TaskTracker,
) -> Result<(), ControlError> {
    let store = Arc::new(SvidStore::new(own_svid(&issuer)?, issuer.bundle()));
    // Optional at the TLS layer: a joining agent has no SVID yet (module docs).
    let clients = ClientAuth::DangerOptional(PeerPolicy::AnyInTrustDomain);
    let acceptor = TlsAcceptor::from(identity::server_config(
        &store,
        clients,
        Protocols::default(),
    ));
    let router = node_api::router(Arc::clone(&issuer)).layer(Extension(Stopping(stop.clone())));
    let maintenance = maintain(Arc::clone(&issuer), Arc::clone(&store));
    let until_stopped = stop.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = maintenance => {}
            () = until_stopped.cancelled() => {}
        }
    });
    loop {
        let (tcp, remote) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "node API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tasks.spawn(connection(
            acceptor,
            router,
            tcp,
            remote,
            stop.clone(),
            tasks.clone(),
        ));
    }
}

async fn connection(
    acceptor: TlsAcceptor,
    router: axum::Router,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    // A peer that never finishes its handshake must not keep a stopped control plane open.
    let handshake = tokio::select! {
        handshake = acceptor.accept(tcp) => handshake,
        () = stop.cancelled() => return,
    };
    let tls = match handshake {
        Ok(tls) => tls,
        Err(error) => {
            tracing::debug!(%error, %remote, "node API handshake failed");
            return;
        }
    };
    // rustls verified any certificate it received, so the leaf's ID is proven.
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| identity::peer_spiffe_id(c).ok());
    let service = router.layer(Extension(Peer(peer)));
    crate::connection::http(tls, service, stop, tasks).await;
}

/// Keeps this replica's own SVID and bundle current (CA transitions are the leader's
/// duty, `crate::duties`).
async fn maintain(issuer: Arc<Issuer>, store: Arc<SvidStore>) {
    let half_life = |svid: &Svid| {
        let now = time::OffsetDateTime::now_utc();
        now + (svid.not_after() - now) / 2
    };
    let mut renew_at = half_life(&store.svid());
    loop {
        tokio::time::sleep(MAINTENANCE_PERIOD).await;
        let bundle = issuer.bundle();
        if *store.bundle() != bundle {
            store.set_bundle(bundle);
        }
        if time::OffsetDateTime::now_utc() >= renew_at {
            match own_svid(&issuer) {
                Ok(svid) => {
                    renew_at = half_life(&svid);
                    store.rotate(svid);
                }
                Err(error) => tracing::error!(%error, "renewing the control plane's SVID failed"),
            }
        }
    }
}
