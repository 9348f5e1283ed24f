//! The agent's background loops: sync entries and bundles from control, mint and
//! renew workload SVIDs, renew the node SVID. Every failure keeps the last good
//! state serving and retries with backoff (static stability).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::contract::client::{Backoff, NoBody};
use api::contract::node::{
    NodeSync, NodeView, Renew, RenewRequest, WorkloadSvid, WorkloadSvidRequest,
};
use identity::{SvidKey, TrustBundle};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::state::renewal_delay;
use super::{Agent, assemble, csr_subject};
use identity::JwtBundle;

/// Runs every loop until `stop` is cancelled.
pub(crate) async fn run(agent: Arc<Agent>, version: u64, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = sync_views(Arc::clone(&agent), version) => {}
        () = manage_svids(Arc::clone(&agent)) => {}
        () = renew_node_svid(agent) => {}
    }
}

/// Long-polls [`NodeView`]s. After a failure the next poll is a full resync (`since=0`).
/// The first full sync after joining, retried until it succeeds; its version.
pub(crate) async fn first(agent: &Agent) -> u64 {
    let mut backoff = Backoff::default();
    loop {
        match agent.client.call(&NodeSync(0), &NoBody).await {
            Ok(view) => {
                let version = view.version;
                adopt(agent, view);
                return version;
            }
            Err(error) => {
                tracing::warn!(error = %error.chain(), "first sync failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn sync_views(agent: Arc<Agent>, mut version: u64) {
    let mut backoff = Backoff::default();
    loop {
        match agent.client.call(&NodeSync(version), &NoBody).await {
            Ok(view) => {
                backoff.reset();
                version = view.version;
                adopt(&agent, view);
            }
            Err(error) => {
                version = 0;
                if error.is_transient() {
                    // A replica that answers 5xx (no store quorum) or hangs mid-exchange:
                    // the next poll goes to another one (with several replicas).
                    agent.replicas.failed_current();
                }
                let delay = backoff.next_delay();
                let was_connected = agent.state.borrow().control_connected;
                agent.state.send_if_modified(|s| {
                    std::mem::replace(&mut Arc::make_mut(s).control_connected, false)
                });
                if was_connected {
                    tracing::warn!(error = %error.chain(), "lost the control plane; serving the last known state");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn adopt(agent: &Agent, view: NodeView) {
    let td = agent.trust_domain.clone();
    let bundle = match TrustBundle::from_pem(td.clone(), &view.bundle_pem) {
        Ok(b) => b,
        Err(error) => {
            tracing::error!(%error, "control sent an unreadable bundle; keeping the previous one");
            return;
        }
    };
    let jwt_bundle = JwtBundle::from_jwks(td, &view.jwks)
        .unwrap_or_else(|_| agent.state.borrow().jwt_bundle.clone());
    if *agent.node.bundle() != bundle {
        agent.node.set_bundle(bundle.clone());
    }
    agent.state.send_modify(|s| {
        let s = Arc::make_mut(s);
        let live: std::collections::BTreeSet<_> = view
            .entries
            .iter()
            .map(|e| (e.id.clone(), e.spec.spiffe_id.clone()))
            .collect();
        s.svids
            .retain(|id, svid| live.contains(&(id.clone(), svid.id().clone())));
        s.entries = view.entries;
        s.bundle = bundle;
        s.jwks = view.jwks;
        s.jwt_bundle = jwt_bundle;
        s.control_connected = true;
        s.last_sync = Some(OffsetDateTime::now_utc());
    });
}

/// Keeps an X.509-SVID for every entry, renewed at half-life with jitter.
async fn manage_svids(agent: Arc<Agent>) {
    let mut rx = agent.state.subscribe();
    let mut renew_at: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    let mut backoff = Backoff::default();
    loop {
        let now = tokio::time::Instant::now();
        let due: Vec<_> = {
            let s = rx.borrow_and_update();
            renew_at.retain(|id, _| s.svids.contains_key(id));
            s.entries
                .iter()
                .filter(|e| {
                    !s.svids.contains_key(&e.id) || renew_at.get(&e.id).is_none_or(|t| *t <= now)
                })
                .cloned()
                .collect()
        };
        let mut failed = false;
        for entry in due {
            match mint(&agent, &entry.id).await {
                Ok(svid) => {
                    let delay = renewal_delay(svid.not_after(), OffsetDateTime::now_utc());
                    renew_at.insert(entry.id.clone(), tokio::time::Instant::now() + delay);
                    tracing::info!(entry = %entry.id, id = %svid.id(), not_after = %svid.not_after(), "workload SVID issued");
                    agent.state.send_modify(|s| {
                        Arc::make_mut(s)
                            .svids
                            .insert(entry.id.clone(), Arc::new(svid));
                    });
                }
                Err(error) => {
                    tracing::warn!(entry = %entry.id, %error, "minting a workload SVID failed; keeping the current one");
                    failed = true;
                }
            }
        }
        let wait = if failed {
            backoff.next_delay()
        } else {
            backoff.reset();
            let next = renew_at.values().min().copied();
            next.map(|t| t.saturating_duration_since(tokio::time::Instant::now()))
                .unwrap_or(Duration::from_secs(3600))
        };
        tokio::select! {
            _ = rx.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn mint(agent: &Agent, entry_id: &str) -> Result<identity::Svid, String> {
    let key = SvidKey::generate().map_err(|e| e.to_string())?;
    let csr_pem = key
        .csr_pem(&csr_subject(&agent.trust_domain))
        .map_err(|e| e.to_string())?;
    let request = WorkloadSvidRequest {
        entry_id: entry_id.to_owned(),
        csr_pem,
    };
    let response = agent
        .client
        .call(&WorkloadSvid, &request)
        .await
        .map_err(|e| e.chain())?;
    let (svid, _) = assemble(key, &response, &agent.trust_domain).map_err(|e| e.to_string())?;
    Ok(svid)
}

/// Renews the node SVID at half-life with jitter; failures retry with backoff.
async fn renew_node_svid(agent: Arc<Agent>) {
    let mut backoff = Backoff::default();
    let mut delay = renewal_delay(agent.node.svid().not_after(), OffsetDateTime::now_utc());
    loop {
        tokio::time::sleep(delay).await;
        let renewed = async {
            let key = SvidKey::generate().map_err(|e| e.to_string())?;
            let csr_pem = key
                .csr_pem(&csr_subject(&agent.trust_domain))
                .map_err(|e| e.to_string())?;
            let response = agent
                .client
                .call(&Renew, &RenewRequest { csr_pem })
                .await
                .map_err(|e| e.chain())?;
            assemble(key, &response, &agent.trust_domain).map_err(|e| e.to_string())
        };
        match renewed.await {
            Ok((svid, _)) => {
                backoff.reset();
                tracing::info!(node = %svid.id(), not_after = %svid.not_after(), "node SVID renewed");
                delay = renewal_delay(svid.not_after(), OffsetDateTime::now_utc());
                if let Some(dir) = &agent.data_dir
                    && let Err(error) = super::node::save(dir, &svid)
                {
                    tracing::warn!(%error, "cannot save the renewed node SVID");
                }
                agent.node.rotate(svid);
            }
            Err(error) => {
                delay = backoff.next_delay();
                tracing::warn!(%error, ?delay, "node SVID renewal failed; retrying");
            }
        }
    }
}
