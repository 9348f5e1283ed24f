//! Identity and routes from the control plane: the startup exchange (SVID by CSR,
//! endpoint registration, first snapshot) and the background loops that keep them
//! fresh (snapshot long poll, SVID renewal).
//!
//! Static stability: once started, losing the control plane changes nothing for the
//! data path. The last snapshot keeps routing and the current SVID keeps serving
//! until it expires; the loops retry with capped, jittered exponential backoff.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::contract::client::{Backoff, NoBody};
use api::contract::{
    EndpointRegistration, RegisterEndpoint, SignSvid, Snapshot, SnapshotSince, SvidRequest,
    SvidResponse,
};
use identity::{SpiffeId, Svid, SvidCertificate, SvidKey, SvidStore, TrustBundle};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::ControlSource;
use crate::control_client::{ControlClient, ControlError, replicas_client};
use crate::routes::Routes;
use crate::start_error::ProxyError;

/// The CSR's URI SAN is informational (the CA decides the identity), but the identity
/// API wants one; this trust domain is reserved-looking so it can never be mistaken
/// for a real identity.
const CSR_PLACEHOLDER_TRUST_DOMAIN: &str = "csr.meshwork.invalid";

/// Renewal never waits less than this, so a clock gone wrong cannot spin the loop.
const MIN_RENEWAL_DELAY: Duration = Duration::from_secs(1);

/// Identity and routes from `control`; for a socket also the loops that keep them
/// fresh (the caller runs them once serving). `inbound` is registered as replica `replica`
/// of `workload`.
pub async fn bootstrap(
    control: ControlSource,
    workload: &str,
    replica: u16,
    inbound: SocketAddr,
) -> Result<(Arc<SvidStore>, Routes, Option<ControlLoops>), ProxyError> {
    let (path, workload_api) = match control {
        ControlSource::Static {
            svid,
            bundle,
            snapshot,
        } => {
            let store = Arc::new(SvidStore::new(svid, bundle));
            return Ok((store, Routes::new(&snapshot), None));
        }
        ControlSource::Socket(path) => (vec![path], None),
        ControlSource::WorkloadApi {
            control,
            workload_api,
        } => (control, Some(workload_api)),
    };
    let client = replicas_client(&path).ok_or(ProxyError::NoControlSocket)?;
    let (svid, bundle, svid_stream) = match workload_api {
        Some(socket) => {
            let (svid, bundle, stream) = crate::workload_api::first_svid(&socket).await?;
            (svid, bundle, Some(stream))
        }
        None => {
            let (svid, bundle) = fetch_svid(&client, workload).await?;
            (svid, bundle, None)
        }
    };
    let registration = EndpointRegistration {
        workload: workload.to_owned(),
        inbound,
        replica,
    };
    register(&client, &registration).await?;
    let routes = Routes::new(&first_snapshot(&client).await?);
    let store = Arc::new(SvidStore::new(svid, bundle));
    let loops = ControlLoops {
        client,
        workload: workload.to_owned(),
        registration,
        routes: routes.clone(),
        store: Arc::clone(&store),
        svid_stream,
    };
    Ok((store, routes, Some(loops)))
}

/// Retries `op` with backoff while its error is transient; a permanent error (e.g. an
/// unknown workload) is returned at once.
pub async fn retry_transient<T, F, Fut>(what: &str, mut op: F) -> Result<T, ControlError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ControlError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Generates a key, has control sign its CSR, and returns the SVID and bundle.
pub async fn fetch_svid(
    client: &ControlClient,
    workload: &str,
) -> Result<(Svid, TrustBundle), ProxyError> {
    let key = SvidKey::generate().map_err(ProxyError::Svid)?;
    let csr_pem = key
        .csr_pem(&csr_placeholder_id(workload))
        .map_err(ProxyError::Svid)?;
    let request = SvidRequest {
        workload: workload.to_owned(),
        csr_pem,
    };
    let response = retry_transient("SVID request", || client.call(&SignSvid, &request))
        .await
        .map_err(|source| ProxyError::Control {
            step: "requesting an SVID",
            source,
        })?;
    assemble_svid(key, &response)
}

fn csr_placeholder_id(workload: &str) -> SpiffeId {
    let with_name = format!("spiffe://{CSR_PLACEHOLDER_TRUST_DOMAIN}/workload/{workload}");
    with_name.parse().unwrap_or_else(|_| {
        // invariant: a constant, valid SPIFFE ID.
        #[allow(clippy::expect_used)]
        format!("spiffe://{CSR_PLACEHOLDER_TRUST_DOMAIN}/workload")
            .parse()
            .expect("valid constant SPIFFE ID")
    })
}

fn assemble_svid(key: SvidKey, response: &SvidResponse) -> Result<(Svid, TrustBundle), ProxyError> {
    let certificate =
        SvidCertificate::from_pem(&response.cert_chain_pem).map_err(ProxyError::Svid)?;
    if certificate.id() != &response.spiffe_id {
        return Err(ProxyError::SvidMismatch {
            announced: response.spiffe_id.clone(),
            certified: certificate.id().clone(),
        });
    }
    let trust_domain = response.spiffe_id.trust_domain().clone();
    let bundle =
        TrustBundle::from_pem(trust_domain, &response.bundle_pem).map_err(ProxyError::Bundle)?;
    let svid = Svid::new(key, certificate).map_err(ProxyError::Svid)?;
    Ok((svid, bundle))
}

/// Announces a replica's inbound address, retrying transient failures.
pub async fn register(
    client: &ControlClient,
    registration: &EndpointRegistration,
) -> Result<(), ProxyError> {
    retry_transient("endpoint registration", || {
        register_once(client, registration)
    })
    .await
    .map_err(|source| ProxyError::Control {
        step: "registering the inbound endpoint",
        source,
    })
}

/// The first snapshot, whatever its version (`since=0`).
pub async fn first_snapshot(client: &ControlClient) -> Result<Snapshot, ProxyError> {
    retry_transient("first snapshot", || client.call(&SnapshotSince(0), &NoBody))
        .await
        .map_err(|source| ProxyError::Control {
            step: "fetching the first snapshot",
            source,
        })
}

/// The background half of the control source: keeps routes and the SVID fresh.
pub struct ControlLoops {
    /// The control client.
    pub client: ControlClient,
    /// This workload's name.
    pub workload: String,
    /// This replica's inbound address, registered again after control comes back.
    pub registration: EndpointRegistration,
    /// The routes to update.
    pub routes: Routes,
    /// The store whose SVID is renewed.
    pub store: Arc<SvidStore>,
    /// With the Workload API: the stream that pushes renewed SVIDs (no CSR renewal then).
    pub svid_stream: Option<crate::workload_api::SvidStream>,
}

impl ControlLoops {
    /// Runs both loops until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let stream = self.svid_stream.take();
        let loops = Arc::new(self);
        let renewal = {
            let loops = Arc::clone(&loops);
            async move {
                match stream {
                    Some(stream) => {
                        crate::workload_api::follow(stream, Arc::clone(&loops.store)).await
                    }
                    None => renew_svids(loops).await,
                }
            }
        };
        let snapshots = watch_snapshots(Arc::clone(&loops));
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = renewal => {}
            () = snapshots => {}
        }
    }
}

/// Long-polls snapshots forever. After a failure the endpoint is registered again
/// (a restarted control plane may have forgotten it) and the next poll is a full
/// resync (`since=0`, adopted whatever its version: a restarted control plane starts
/// counting again, so "newer" cannot be trusted across the gap).
async fn watch_snapshots(loops: Arc<ControlLoops>) {
    let mut version = loops.routes.load().version();
    let mut backoff = Backoff::default();
    let mut resync = false;
    loop {
        if resync && let Err(error) = reregister(&loops).await {
            pause(&mut backoff, "re-registering the inbound endpoint", &error).await;
            continue;
        }
        let since = if resync { 0 } else { version };
        match loops.client.call(&SnapshotSince(since), &NoBody).await {
            Ok(snapshot) => {
                backoff.reset();
                adopt(&loops.routes, &snapshot, version, resync);
                version = snapshot.version;
                resync = false;
            }
            Err(error) => {
                if error.is_transient() {
                    // With several control replicas, the next poll goes to another one.
                    loops.client.connector().failed_current();
                }
                pause(&mut backoff, "snapshot poll", &error).await;
                resync = true;
            }
        }
    }
}

async fn reregister(loops: &ControlLoops) -> Result<(), ControlError> {
    register_once(&loops.client, &loops.registration).await
}

/// `POST /v1/endpoints` once (answered `204`).
async fn register_once(
    client: &ControlClient,
    registration: &EndpointRegistration,
) -> Result<(), ControlError> {
    client
        .call(&RegisterEndpoint, registration)
        .await
        .map(|NoBody| ())
}

/// Applies `snapshot` if it is newer than `version`, or unconditionally on a resync.
fn adopt(routes: &Routes, snapshot: &Snapshot, version: u64, resync: bool) {
    if resync {
        routes.replace(snapshot);
    } else if !routes.update(snapshot) {
        return;
    }
    tracing::info!(
        previous = version,
        version = snapshot.version,
        services = snapshot.services.len(),
        resync,
        "snapshot adopted"
    );
}

async fn pause(backoff: &mut Backoff, what: &str, error: &ControlError) {
    let delay = backoff.next_delay();
    tracing::warn!(%error, ?delay, "{what} failed; keeping the last known state and retrying");
    tokio::time::sleep(delay).await;
}

/// Renews the SVID when half of its remaining lifetime has passed, with a fresh key
/// each time. Failures retry with backoff; the current SVID serves meanwhile.
async fn renew_svids(loops: Arc<ControlLoops>) {
    loop {
        // Half-life minus up to 20 % jitter, so sidecars started together spread out.
        let jitter = rand::Rng::random_range(&mut rand::rng(), 0.8..=1.0);
        let delay = renewal_delay(loops.store.svid().not_after(), OffsetDateTime::now_utc())
            .mul_f64(jitter)
            .max(MIN_RENEWAL_DELAY);
        tokio::time::sleep(delay).await;
        match fetch_svid(&loops.client, &loops.workload).await {
            Ok((svid, bundle)) => {
                tracing::info!(id = %svid.id(), not_after = %svid.not_after(), "SVID renewed");
                loops.store.set_bundle(bundle);
                loops.store.rotate(svid);
            }
            Err(error) => {
                tracing::error!(%error, "SVID renewal failed permanently; keeping the current SVID");
                tokio::time::sleep(Backoff::default().ceiling()).await;
            }
        }
    }
}

/// Half the remaining lifetime, at least [`MIN_RENEWAL_DELAY`].
pub fn renewal_delay(not_after: OffsetDateTime, now: OffsetDateTime) -> Duration {
    let remaining = (not_after - now).max(time::Duration::ZERO);
    let half = Duration::try_from(remaining / 2).unwrap_or(Duration::ZERO);
    half.max(MIN_RENEWAL_DELAY)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn renewal_at_half_the_remaining_lifetime() {
        let now = datetime!(2026-01-01 00:00 UTC);
        let delay = renewal_delay(now + time::Duration::hours(1), now);
        assert_eq!(delay, Duration::from_secs(1800));
    }

    #[test]
    fn expired_svid_renews_after_the_minimum_delay() {
        let now = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(
            renewal_delay(now - time::Duration::hours(1), now),
            MIN_RENEWAL_DELAY
        );
    }

    #[test]
    fn placeholder_ids_are_valid_even_for_odd_workload_names() {
        assert_eq!(
            csr_placeholder_id("billing").as_str(),
            "spiffe://csr.meshwork.invalid/workload/billing"
        );
        assert_eq!(
            csr_placeholder_id("a/../b").as_str(),
            "spiffe://csr.meshwork.invalid/workload"
        );
    }
}
