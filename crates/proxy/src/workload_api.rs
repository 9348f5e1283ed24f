//! The sidecar as a SPIFFE Workload API client, like any other workload: it streams
//! `FetchX509SVID` from the node agent and swaps each pushed SVID and bundle into its
//! [`SvidStore`] (hitless: the next handshake uses them, open connections go on).
//!
//! Every failure is retried with capped, jittered backoff — including
//! `PermissionDenied`, which is what a sidecar sees in the moment between being
//! started and `meshwork up` registering its entry. Once it holds an SVID, a lost
//! agent changes nothing until that SVID expires (static stability).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::contract::client::Backoff;
use api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use api::workload::{SECURITY_HEADER, X509svidRequest, X509svidResponse};
use identity::{Svid, SvidStore, TrustBundle};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tonic::Streaming;

use crate::start_error::ProxyError;

/// An open `FetchX509SVID` stream.
pub struct SvidStream {
    socket: PathBuf,
    stream: Streaming<X509svidResponse>,
}

impl std::fmt::Debug for SvidStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidStream")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed (always retried).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("cannot connect to the Workload API at {0}: {1}")]
    Connect(String, tonic::transport::Error),
    #[error("Workload API refused FetchX509SVID: {0}")]
    Status(#[from] tonic::Status),
    #[error("Workload API closed the stream")]
    Closed,
    #[error("Workload API answered with no SVID")]
    Empty,
}

/// How long a sidecar may wait for its first SVID before that is worth a warning. Until then
/// the retries are the normal start (the agent not yet serving, the entry not yet
/// registered) and are logged at DEBUG.
const QUIET_START: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits (retrying) for the first SVID; returns it with the stream that will push renewals.
pub async fn first_svid(socket: &Path) -> Result<(Svid, TrustBundle, SvidStream), ProxyError> {
    let mut backoff = Backoff::default();
    let started = tokio::time::Instant::now();
    loop {
        match attempt(socket).await {
            Ok((mut stream, first)) => {
                let (svid, bundle) = material(&first)?;
                tracing::info!(id = %svid.id(), not_after = %svid.not_after(), "SVID from the Workload API");
                stream.socket = socket.to_owned();
                return Ok((svid, bundle, stream));
            }
            Err(error) => {
                let delay = backoff.next_delay();
                let waited = started.elapsed();
                if waited < QUIET_START {
                    tracing::debug!(%error, ?delay, "no SVID from the Workload API yet; retrying");
                } else {
                    tracing::warn!(%error, ?delay, ?waited, "still no SVID from the Workload API; retrying");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Applies every pushed SVID to `store`, reconnecting after failures; never returns.
pub async fn follow(mut current: SvidStream, store: Arc<SvidStore>) {
    let mut backoff = Backoff::default();
    loop {
        match current.stream.message().await {
            Ok(Some(msg)) => match material(&msg) {
                Ok((svid, bundle)) => {
                    backoff.reset();
                    tracing::info!(id = %svid.id(), not_after = %svid.not_after(), "SVID rotated (Workload API)");
                    store.set_bundle(bundle);
                    store.rotate(svid);
                }
                Err(error) => {
                    tracing::error!(%error, "unusable SVID from the Workload API; keeping the current one")
                }
            },
            other => {
                let error = match other {
                    Err(status) => AttemptError::Status(status),
                    _ => AttemptError::Closed,
                };
                tracing::warn!(%error, "Workload API stream lost; serving the current SVID and reconnecting");
                current = reconnect(&current.socket, &mut backoff, &store).await;
            }
        }
    }
}

async fn reconnect(socket: &Path, backoff: &mut Backoff, store: &SvidStore) -> SvidStream {
    loop {
        tokio::time::sleep(backoff.next_delay()).await;
        match attempt(socket).await {
            Ok((stream, first)) => {
                if let Ok((svid, bundle)) = material(&first) {
                    store.set_bundle(bundle);
                    store.rotate(svid);
                }
                return stream;
            }
            Err(error) => tracing::debug!(%error, "Workload API still unavailable"),
        }
    }
}

async fn attempt(socket: &Path) -> Result<(SvidStream, X509svidResponse), AttemptError> {
    let path = socket.to_owned();
    // The authority is `localhost`, as the Rust and Go SPIFFE clients send it.
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| AttemptError::Connect(socket.display().to_string(), e))?;
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let mut request = tonic::Request::new(X509svidRequest {});
    request.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = client.fetch_x509svid(request).await?.into_inner();
    let first = stream.message().await?.ok_or(AttemptError::Closed)?;
    if first.svids.is_empty() {
        return Err(AttemptError::Empty);
    }
    Ok((
        SvidStream {
            socket: socket.to_owned(),
            stream,
        },
        first,
    ))
}

/// The default (first) SVID of a response and its trust domain's bundle.
fn material(msg: &X509svidResponse) -> Result<(Svid, TrustBundle), ProxyError> {
    let first = msg
        .svids
        .first()
        .ok_or(ProxyError::Svid(identity::SvidError::EmptyChain))?;
    let chain = split_der(&first.x509_svid);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(first.x509_svid_key.clone()));
    let svid = Svid::from_der(chain, key).map_err(ProxyError::Svid)?;
    let roots = split_der(&first.bundle);
    let bundle =
        TrustBundle::new(svid.id().trust_domain().clone(), roots).map_err(ProxyError::Bundle)?;
    Ok((svid, bundle))
}

/// Splits concatenated DER certificates (each a SEQUENCE with a definite length), as
/// the Workload API sends chains and bundles. Trailing garbage ends the list.
fn split_der(mut bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut certs = Vec::new();
    while let Some(len) = der_len(bytes) {
        let (cert, rest) = bytes.split_at(len);
        certs.push(CertificateDer::from(cert.to_vec()));
        bytes = rest;
    }
    certs
}

/// Total length (header included) of the DER SEQUENCE at the start of `bytes`.
fn der_len(bytes: &[u8]) -> Option<usize> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let total = header.checked_add(len)?;
    (total <= bytes.len()).then_some(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_der_splits_into_certificates() {
        let a = [0x30, 0x03, 1, 2, 3];
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let mut all = a.to_vec();
        all.extend(&long);
        let certs = split_der(&all);
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), a);
        assert_eq!(certs[1].as_ref(), long.as_slice());
        assert!(split_der(&[0x30, 0x05, 1]).is_empty(), "truncated");
        assert!(split_der(&[0x04, 0x01, 1]).is_empty(), "not a SEQUENCE");
    }
}
