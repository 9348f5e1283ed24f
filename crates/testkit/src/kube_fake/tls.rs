//! The fake API server's TLS, shaped like a real cluster's: its own CA, a serving
//! certificate for `127.0.0.1` (IP SAN) and `localhost`, and a kubeconfig with the CA's
//! certificate inline and a bearer token.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::FakeApiError;

/// The fake API server's CA and serving certificate.
pub(crate) struct ServingCert {
    /// The CA certificate, PEM: what `certificate-authority-data` carries.
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ServingCert {
    /// A fresh CA and a serving certificate signed by it.
    pub(crate) fn generate() -> Result<ServingCert, FakeApiError> {
        let ca_key = KeyPair::generate().map_err(FakeApiError::Certificate)?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "meshwork fake kubernetes API server CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(FakeApiError::Certificate)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().map_err(FakeApiError::Certificate)?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(FakeApiError::Certificate)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver (fake)");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(FakeApiError::Certificate)?;
        Ok(ServingCert {
            ca_pem: ca_cert.pem(),
            chain: vec![cert.der().clone(), ca_cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// A rustls server configuration (ring, HTTP/2 and HTTP/1.1 by ALPN).
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, FakeApiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(FakeApiError::Tls)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(FakeApiError::Tls)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The kubeconfig text: one cluster `fake` at `server`, one user with `token`, one context
/// (namespace `default`) that is current.
pub(crate) fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: fake\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: fake\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: fake\n  \
           context:\n    \
             cluster: fake\n    \
             user: fake\n    \
             namespace: default\n\
         current-context: fake\n"
    )
}

/// Writes [`kubeconfig`] to `path`.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), FakeApiError> {
    std::fs::write(path, text).map_err(|source| FakeApiError::Kubeconfig {
        path: path.to_owned(),
        source,
    })
}
