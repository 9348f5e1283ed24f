//! Node attestation: join with a one-time token, or — after a restart — resume with
//! the node SVID saved in the data directory (so a restarted agent needs no new
//! token, as long as its SVID has not expired and control still knows the agent).
//!
//! The saved key is written mode 0600 (tmp file + rename, so it is never half-written
//! or briefly readable). An unreadable saved SVID is an error naming the file.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::contract::client::Backoff;
use api::contract::node::{Join, JoinRequest, Renew, RenewRequest};
use identity::{Svid, SvidKey, SvidStore, TrustBundle};

use super::client::TlsConnect;
use super::replicas::Replicas;
use super::{AgentConfig, AgentError, assemble, csr_subject};
use identity::control_id;

const SVID_FILE: &str = "node-svid.pem";
const KEY_FILE: &str = "node-key.pem";

/// The node SVID and the bundle control returned with it.
pub(crate) async fn attest(
    config: &AgentConfig,
    replicas: &Arc<Replicas>,
) -> Result<(Svid, TrustBundle), AgentError> {
    if let Some(dir) = &config.data_dir
        && let Some(saved) = load(dir)?
    {
        if saved.not_after() > time::OffsetDateTime::now_utc() {
            match resume(config, saved, replicas).await {
                Ok(pair) => {
                    save(dir, &pair.0)?;
                    return Ok(pair);
                }
                Err(error) => {
                    tracing::warn!(%error, "control refused the saved node SVID; joining with the token")
                }
            }
        } else {
            tracing::warn!(dir = %dir.display(), "the saved node SVID has expired; joining with the token");
        }
    }
    let token = config.join_token.as_deref().ok_or(AgentError::NoToken)?;
    let pair = join(config, token, replicas).await?;
    if let Some(dir) = &config.data_dir {
        save(dir, &pair.0)?;
    }
    Ok(pair)
}

async fn join(
    config: &AgentConfig,
    token: &str,
    replicas: &Arc<Replicas>,
) -> Result<(Svid, TrustBundle), AgentError> {
    let control = control_id(&config.trust_domain);
    let client = TlsConnect::bootstrap(
        Arc::clone(replicas),
        config.bootstrap_bundle.clone(),
        control.clone(),
    );
    let key = SvidKey::generate().map_err(AgentError::Svid)?;
    let csr_pem = key.csr_pem(&control).map_err(AgentError::Svid)?;
    let request = JoinRequest {
        token: token.to_owned(),
        csr_pem,
    };
    let mut backoff = Backoff::default();
    let response = loop {
        match client.call(&Join, &request).await {
            Ok(r) => break r,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e.chain(), "join failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(AgentError::Join(e)),
        }
    };
    let pair = assemble(key, &response, &config.trust_domain)?;
    tracing::info!(node = %pair.0.id(), not_after = %pair.0.not_after(), "joined the control plane");
    Ok(pair)
}

/// mTLS with the saved SVID; a renewal both proves control still knows this agent
/// and gives a fresh SVID.
async fn resume(
    config: &AgentConfig,
    saved: Svid,
    replicas: &Arc<Replicas>,
) -> Result<(Svid, TrustBundle), AgentError> {
    let id = saved.id().clone();
    let store = Arc::new(SvidStore::new(saved, config.bootstrap_bundle.clone()));
    let control = control_id(&config.trust_domain);
    let client = TlsConnect::attested(Arc::clone(replicas), &store, control);
    let mut backoff = Backoff::default();
    loop {
        let key = SvidKey::generate().map_err(AgentError::Svid)?;
        let csr_pem = key
            .csr_pem(&csr_subject(&config.trust_domain))
            .map_err(AgentError::Svid)?;
        match client.call(&Renew, &RenewRequest { csr_pem }).await {
            Ok(response) => {
                tracing::info!(node = %id, "resumed with the saved node SVID");
                return assemble(key, &response, &config.trust_domain);
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e.chain(), "resuming failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(AgentError::Join(e)),
        }
    }
}

/// The saved node SVID, if there is one.
fn load(dir: &Path) -> Result<Option<Svid>, AgentError> {
    let (cert, key) = (dir.join(SVID_FILE), dir.join(KEY_FILE));
    if !cert.exists() && !key.exists() {
        return Ok(None);
    }
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|source| AgentError::Saved {
            path: p.clone(),
            source,
        })
    };
    let (chain, key_pem) = (read(&cert)?, read(&key)?);
    Svid::from_pem(&chain, &key_pem)
        .map(Some)
        .map_err(|source| AgentError::SavedSvid { path: cert, source })
}

/// Saves the node SVID (after joining and after every renewal).
pub(crate) fn save(dir: &Path, svid: &Svid) -> Result<(), AgentError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| AgentError::Saved { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir))?;
    write_private(&dir.join(KEY_FILE), svid.key_pem().as_bytes())
        .map_err(err(&dir.join(KEY_FILE)))?;
    write_private(&dir.join(SVID_FILE), svid.certificate().to_pem().as_bytes())
        .map_err(err(&dir.join(SVID_FILE)))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
