//! The CA's key and certificate on disk: created on first start, reused after.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use identity::{Ca, TrustDomain};

/// The CA files exist but cannot be used, or cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum CaStoreError {
    /// Reading or writing a CA file failed.
    #[error("CA file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The files hold something that is not a usable CA.
    #[error("CA files in {}: {source}; refusing to replace them (move them away to start a new CA)", dir.display())]
    Invalid {
        /// The CA directory.
        dir: PathBuf,
        /// What is wrong with them.
        #[source]
        source: identity::CaError,
    },
    /// The stored CA belongs to another trust domain than the Mesh asks for.
    #[error("CA in {} is for trust domain {found}, but the Mesh says {wanted}; move it away to start a new CA", dir.display())]
    WrongTrustDomain {
        /// The CA directory.
        dir: PathBuf,
        /// The stored CA's trust domain.
        found: TrustDomain,
        /// The configured trust domain.
        wanted: TrustDomain,
    },
}

/// Loads `<dir>/ca/{cert,key}.pem`, or generates and stores a new root when neither exists.
/// Half-present or unreadable files are an error, never silently replaced.
pub fn load_or_create(state_dir: &Path, td: &TrustDomain) -> Result<Ca, CaStoreError> {
    let dir = state_dir.join("ca");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CaStoreError::Io { path, source }
    };
    if cert_path.exists() || key_path.exists() {
        let cert = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let ca = Ca::from_pem(&cert, &key).map_err(|source| CaStoreError::Invalid { dir: dir.clone(), source })?;
        if ca.trust_domain() != td {
            return Err(CaStoreError::WrongTrustDomain { dir, found: ca.trust_domain().clone(), wanted: td.clone() });
        }
        return Ok(ca);
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ca = Ca::generate(td.clone(), time::OffsetDateTime::now_utc())
        .map_err(|source| CaStoreError::Invalid { dir: dir.clone(), source })?;
    let identity::CaPem { cert_pem, key_pem } = ca.to_pem();
    write_new(&key_path, key_pem.as_bytes(), 0o600).map_err(io(&key_path))?;
    write_new(&cert_path, cert_pem.as_bytes(), 0o644).map_err(io(&cert_path))?;
    tracing::info!(dir = %dir.display(), trust_domain = %td, "generated a new CA");
    Ok(ca)
}

/// Creates `path` with `mode` from the first byte on (a key is never world-readable, even briefly).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
