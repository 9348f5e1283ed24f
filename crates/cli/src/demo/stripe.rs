//! `meshwork demo stripe`: an offline stand-in for `api.stripe.com`, so the example's egress
//! story runs without the internet.
//!
//! - HTTPS on `127.P.Q.R:443` (a loopback address of its own, so several demos can run at
//!   once) with a certificate for `api.stripe.com` from a throw-away demo CA, whose
//!   certificate is written to `$MESHWORK_STATE_DIR/demo/stripe-ca.pem` for `curl --cacert`.
//!   Binding port 443 needs root, `CAP_NET_BIND_SERVICE`, or
//!   `sysctl net.ipv4.ip_unprivileged_port_start=443`.
//! - A tiny DNS server on `127.0.0.1:$PORT` (UDP and TCP) answering `api.stripe.com` with that
//!   address: the example's `Mesh` points the sidecars at it (`spec.dns: {workload: stripe}`).
//!
//! Nothing here is trusted by anything but the curl command given the CA file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::dns::{self, Zone};

/// The name this stand-in answers for.
pub const HOST: &str = "api.stripe.com";

/// Where the demo CA certificate goes, relative to the state directory.
pub const CA_FILE: &str = "demo/stripe-ca.pem";

/// Serves HTTPS for api.stripe.com and DNS on 127.0.0.1:`port` until SIGTERM.
pub fn run(port: u16) -> anyhow::Result<ExitCode> {
    let state: PathBuf = std::env::var_os("MESHWORK_STATE_DIR")
        .context("MESHWORK_STATE_DIR is not set; run the stand-in under `meshwork up`")?
        .into();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (ca_pem, tls) = demo_tls()?;
        let ca_file = write_ca(&state, &ca_pem)?;
        let https = bind_https().await;
        let ip = match &https {
            Ok((_, ip)) => {
                println!(
                    "{HOST} stand-in on https://{ip}:443 (CA: {})",
                    ca_file.display()
                );
                *ip
            }
            // Without :443 the rest of the example still works; only the egress demo
            // to api.stripe.com answers "connection refused" (a 502 from the sidecar).
            Err(e) => {
                eprintln!("warning: {e:#}; serving DNS only");
                Ipv4Addr::LOCALHOST
            }
        };
        println!("DNS for {HOST} on 127.0.0.1:{port}");
        let zone = Zone {
            name: format!("{HOST}.").parse()?,
            address: ip,
        };
        let serve = async {
            match https {
                Ok((listener, _)) => serve_https(listener, TlsAcceptor::from(tls)).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            r = dns::serve(port, zone) => r,
            r = serve => r,
            () = crate::parent::shutdown_signal() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Binds `:443` on a loopback address derived from the pid (unique among running demos).
async fn bind_https() -> anyhow::Result<(TcpListener, Ipv4Addr)> {
    let pid = std::process::id().to_be_bytes();
    for attempt in 0..32u8 {
        let ip = Ipv4Addr::new(127, pid[2], pid[3], 100 + attempt);
        match TcpListener::bind(SocketAddr::from((ip, 443))).await {
            Ok(listener) => return Ok((listener, ip)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "binding {ip}:443 was refused: the stand-in must listen on port 443 (what \
                 `https://api.stripe.com` connects to); run as root, grant CAP_NET_BIND_SERVICE, or \
                 `sysctl net.ipv4.ip_unprivileged_port_start=443`"
            ),
            Err(e) => return Err(e).with_context(|| format!("binding {ip}:443")),
        }
    }
    bail!("no free loopback address for :443 after 32 tries")
}

/// A fresh demo CA and a server config for `api.stripe.com` signed by it.
///
/// This config deliberately stays here and not in `identity`, which builds every
/// rustls config of meshwork's *own* connections: the stand-in plays an outside
/// party (a public WebPKI server with a DNS-name certificate, no client auth, no
/// SPIFFE), reached by the app through egress and verified only by the app's own
/// TLS client. Building it with identity's SPIFFE machinery would be wrong, and
/// adding a WebPKI server to identity would give the mesh a config nothing else uses.
pub(super) fn demo_tls() -> anyhow::Result<(String, Arc<rustls::ServerConfig>)> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(
        DnType::CommonName,
        "meshwork demo CA (stand-in for api.stripe.com)",
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![HOST.to_owned()])?;
    leaf.distinguished_name.push(DnType::CommonName, HOST);
    let leaf_cert = leaf.signed_by(&leaf_key, &Issuer::new(ca, ca_key))?;
    let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            chain.into_iter().map(CertificateDer::into_owned).collect(),
            key,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ca_cert.pem(), Arc::new(config)))
}

/// Writes the CA certificate atomically (readers never see half a file).
fn write_ca(state: &Path, pem: &str) -> anyhow::Result<PathBuf> {
    let path = state.join(CA_FILE);
    let dir = path.parent().context("CA path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, pem).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn serve_https(listener: TcpListener, acceptor: TlsAcceptor) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                Ok::<_, std::convert::Infallible>(respond(req).await)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

static CHARGES: AtomicU64 = AtomicU64::new(0);

/// A Stripe-shaped answer: `POST /v1/charges` creates a (fake) charge.
async fn respond(req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let (head, body) = req.into_parts();
    let _ = body.collect().await;
    let (status, json) = match (head.method.as_str(), head.uri.path()) {
        ("POST", "/v1/charges") => {
            let n = CHARGES.fetch_add(1, Ordering::Relaxed) + 1;
            let charge = serde_json::json!({"id": format!("ch_demo_{n}"), "object": "charge",
                                            "status": "succeeded", "livemode": false});
            (200, charge)
        }
        ("GET", "/v1/charges") => (
            200,
            serde_json::json!({"object": "list", "data": [], "livemode": false}),
        ),
        (_, path) => (
            404,
            serde_json::json!({"error": {"type": "invalid_request_error",
                                                        "message": format!("Unrecognized request URL ({path})")}}),
        ),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(json.to_string() + "\n")));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
