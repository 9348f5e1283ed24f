//! billing's call to Stripe, made the way an unmodified app makes an HTTPS call: a `CONNECT`
//! tunnel through the proxy in `HTTPS_PROXY` (its sidecar, which applies egress policy to the
//! tunnel), then TLS to the real host inside it. Both the `CONNECT` and the request inside the
//! tunnel carry the trace context of the request billing serves, so the sidecar's tunnel span
//! joins the trace. Without `HTTPS_PROXY` (in a pod, `meshwork up --isolation=pods`) it
//! resolves and connects by itself, as an app that knows nothing of proxies does; the pod's
//! sidecar captures the connection and applies the same egress policy to it.
//!
//! - `STRIPE_URL` (examples/store-billing/workloads.yaml sets
//!   `https://api.stripe.com/v1/charges`): where charges go; unset, billing charges nothing.
//! - `STRIPE_CA`: the PEM file of CAs to trust for it, by default the demo stand-in's
//!   `$MESHWORK_STATE_DIR/demo/stripe-ca.pem` (`demo/stripe.rs`; `up` sets the variable).
//!
//! The whole call is bounded by [`TIMEOUT`]; a failure is billing's to report, never to
//! fail the charge with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::trace_headers::TraceHeaders;

/// How long billing waits for Stripe. Under the 1 s per-try timeout of billing's route
/// (examples/store-billing/routes.yaml), so a slow Stripe costs the caller no 504.
pub const TIMEOUT: Duration = Duration::from_millis(800);

/// Where charges go: `STRIPE_URL`, when set.
pub fn url() -> Option<String> {
    std::env::var("STRIPE_URL").ok().filter(|u| !u.is_empty())
}

/// Charges `amount` at `url`; the Stripe charge id. `key` is sent as Stripe's own
/// `Idempotency-Key`.
pub async fn charge(
    url: &str,
    amount: i64,
    key: Option<&str>,
    trace: &TraceHeaders,
) -> anyhow::Result<String> {
    let egress = Egress::from_env()?;
    let call = attempt(&egress, url, amount, key, trace);
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => bail!("no answer from {url} within {TIMEOUT:?}"),
    }
}

/// How the app leaves: its proxy (`HTTPS_PROXY`, if any) and the CA file it trusts.
struct Egress {
    proxy: Option<String>,
    ca_file: PathBuf,
}

impl Egress {
    /// `HTTPS_PROXY`, and `STRIPE_CA` or else the stand-in's CA under `MESHWORK_STATE_DIR`.
    fn from_env() -> anyhow::Result<Egress> {
        let proxy = std::env::var("HTTPS_PROXY").ok().filter(|p| !p.is_empty());
        let ca_file = match std::env::var_os("STRIPE_CA") {
            Some(ca) => PathBuf::from(ca),
            None => {
                let state = std::env::var_os("MESHWORK_STATE_DIR").context(
                    "neither STRIPE_CA nor MESHWORK_STATE_DIR is set: no CA to trust for Stripe",
                )?;
                PathBuf::from(state).join(super::stripe::CA_FILE)
            }
        };
        Ok(Egress { proxy, ca_file })
    }
}

/// An `https://` URL split into what the tunnel and the request need.
struct Target {
    host: String,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("STRIPE_URL {url:?}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("STRIPE_URL {url:?} is not an https:// URL");
        }
        let host = uri.host().context("STRIPE_URL has no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Target {
            authority: format!("{host}:{port}"),
            host,
            path,
        })
    }
}

async fn attempt(
    egress: &Egress,
    url: &str,
    amount: i64,
    key: Option<&str>,
    trace: &TraceHeaders,
) -> anyhow::Result<String> {
    let target = Target::parse(url)?;
    let name = ServerName::try_from(target.host.clone())
        .with_context(|| format!("{} is no TLS server name", target.host))?;
    let config = client_config(&egress.ca_file)?;
    let connector = TlsConnector::from(config);
    let tls = match &egress.proxy {
        Some(proxy) => {
            let tunnel = open_tunnel(proxy, &target, trace).await?;
            let tls = connector.connect(name, tunnel).await;
            tls.map(|s| TokioIo::new(Box::new(s) as Box<dyn Stream>))
        }
        None => {
            let tcp = TcpStream::connect(target.authority.as_str())
                .await
                .with_context(|| format!("connecting to {}", target.authority))?;
            let tls = connector.connect(name, tcp).await;
            tls.map(|s| TokioIo::new(Box::new(s) as Box<dyn Stream>))
        }
    }
    .with_context(|| format!("TLS with {}", target.authority))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(tls).await?;
    tokio::spawn(conn);
    let form = format!("amount={amount}&currency=usd&source=tok_visa");
    let mut request = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.host.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))?;
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("idempotency-key", key.parse()?);
    }
    trace.copy_onto(request.headers_mut());
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match json["id"].as_str() {
        Some(id) if status.is_success() => Ok(id.to_owned()),
        _ => bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ),
    }
}

/// The TLS stream to Stripe, whichever way it was reached.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for S {}

/// A `CONNECT` tunnel to `target` through `proxy`, the `CONNECT` carrying `trace`.
async fn open_tunnel(
    proxy: &str,
    target: &Target,
    trace: &TraceHeaders,
) -> anyhow::Result<TokioIo<hyper::upgrade::Upgraded>> {
    let addr = proxy.trim_start_matches("http://").trim_end_matches('/');
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the sidecar at {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn.with_upgrades());
    let mut connect = hyper::Request::connect(target.authority.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .body(Empty::<Bytes>::new())?;
    trace.copy_onto(connect.headers_mut());
    let response = sender.send_request(connect).await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.into_body().collect().await;
        let body = body.map(|b| b.to_bytes()).unwrap_or_default();
        bail!(
            "CONNECT {} refused with {status}: {}",
            target.authority,
            String::from_utf8_lossy(&body).trim()
        );
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .context("the CONNECT tunnel did not open")?;
    Ok(TokioIo::new(upgraded))
}

/// A WebPKI client config trusting the CAs in `file`, read on every call (the stand-in
/// writes a fresh CA each time it starts, possibly after billing).
///
/// Like the stand-in's server config (`stripe::demo_tls`), this stays out of `identity`,
/// which builds the rustls configs of meshwork's *own* connections (SPIFFE-verified): this is
/// an application's TLS client to an outside server, verified by DNS name against given CAs.
fn client_config(file: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let reading = || format!("reading the CA file for Stripe {}", file.display());
    for cert in CertificateDer::pem_file_iter(file).with_context(reading)? {
        let cert = cert.with_context(reading)?;
        roots
            .add(cert)
            .with_context(|| format!("a CA in {}", file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
