//! The singleton duties, run by whichever replica leads ([`crate::store::election`]):
//! CA transitions, applying the resource source to the store, and sweeping old join
//! tokens. Every write they make carries the leader's fence, so a replica that lost the
//! lead (paused, cut off) cannot write after its successor started. With redb the one
//! process leads at once.

use std::sync::Arc;
use std::time::Duration;

use api::ResourceSet;
use tokio_util::sync::CancellationToken;

use crate::feed::{Applier, ResourceFeed, ResourceUpdate};
use crate::registry::Registry;
use crate::store::Op;
use crate::store::election::{Fence, Leadership};
use crate::tokens;

/// The lease a leader holds: a crashed leader is replaced after at most this long.
const LEASE_TTL: Duration = Duration::from_secs(5);

/// How often the leader applies due CA transitions.
const CA_TICK: Duration = Duration::from_secs(1);

/// How often the leader sweeps old join tokens.
const TOKEN_SWEEP: Duration = Duration::from_secs(60);

/// The pause before campaigning again after the store refused.
const CAMPAIGN_RETRY: Duration = Duration::from_secs(1);

/// The resource source the leader applies, and the resources this replica started with.
pub(crate) type Fed = (ResourceFeed, ResourceSet);

/// Campaigns for the lead and, while leading, runs the duties; until `stop`.
pub(crate) async fn lead(
    registry: Arc<Registry>,
    replica: String,
    mut fed: Option<Fed>,
    stop: CancellationToken,
) {
    let store = Arc::clone(registry.issuer().store());
    loop {
        let campaign = store.campaign(&replica, LEASE_TTL);
        let leadership = tokio::select! {
            () = stop.cancelled() => return,
            won = campaign => won,
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%error, "cannot campaign for the lead; trying again");
                if sleep_or_stop(CAMPAIGN_RETRY, &stop).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(%replica, "leading: CA transitions, the resource source, the token sweep");
        run(&registry, &leadership, fed.as_mut(), &stop).await;
        if stop.is_cancelled() {
            if let Err(error) = leadership.resign().await {
                tracing::debug!(%error, "resigning the lead failed; the lease expires on its own");
            }
            return;
        }
        tracing::warn!(%replica, "lost the lead; campaigning again");
    }
}

/// The duties, until the lead is lost or `stop`.
async fn run(
    registry: &Registry,
    leadership: &Leadership,
    mut fed: Option<&mut Fed>,
    stop: &CancellationToken,
) {
    let fence = leadership.fence().map(Fence::check);
    let lost = leadership.lost();
    let applier = fed
        .as_ref()
        .map(|(_, started)| Applier::new(started.clone()));
    // Without a source, the `RegistrationEntry` resources this replica started with (with
    // one, each application of the source applies its entries).
    if fed.is_none() {
        let entries = registry.resources();
        let applied = registry
            .issuer()
            .apply_resource_entries(entries, fence.clone());
        if let Err(error) = applied.await {
            tracing::warn!(%error, "applying the RegistrationEntry resources failed; the next leader retries");
        }
    }
    // The store may hold what an earlier leader applied: apply the source as it is now.
    if let (Some((feed, _)), Some(applier)) = (fed.as_mut(), &applier) {
        let update = Arc::clone(&feed.borrow_and_update());
        applier
            .apply_logged(registry, &update, fence.clone(), true)
            .await;
    }
    let mut ca = tokio::time::interval(CA_TICK);
    let mut sweep = tokio::time::interval(TOKEN_SWEEP);
    loop {
        let event = tokio::select! {
            () = lost.cancelled() => return,
            () = stop.cancelled() => return,
            _ = ca.tick() => Event::Ca,
            _ = sweep.tick() => Event::Sweep,
            update = next_update(fed.as_deref_mut()) => Event::Source(update),
        };
        match event {
            Event::Ca => tick_ca(registry, fence.clone()).await,
            Event::Sweep => sweep_tokens(registry, fence.clone()).await,
            Event::Source(Some(update)) => {
                if let Some(applier) = &applier {
                    applier
                        .apply_logged(registry, &update, fence.clone(), false)
                        .await;
                }
            }
            Event::Source(None) => {
                tracing::debug!("the resource source ended; the last resources keep serving");
                fed = None;
            }
        }
    }
}

enum Event {
    Ca,
    Sweep,
    /// A new version from the source; `None`: the source is gone.
    Source(Option<Arc<ResourceUpdate>>),
}

/// The source's next version (`None` when it is gone); never resolves without a source.
async fn next_update(fed: Option<&mut Fed>) -> Option<Arc<ResourceUpdate>> {
    match fed {
        Some((feed, _)) => match feed.changed().await {
            Ok(()) => Some(Arc::clone(&feed.borrow_and_update())),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn tick_ca(registry: &Registry, fence: Option<Op>) {
    if let Err(error) = registry.issuer().tick_ca(fence).await {
        tracing::error!(%error, "CA rotation step failed; retrying");
    }
}

async fn sweep_tokens(registry: &Registry, fence: Option<Op>) {
    let now = time::OffsetDateTime::now_utc();
    match tokens::sweep(registry.issuer().store(), now, fence).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "swept used and expired join tokens"),
        Err(error) => tracing::warn!(%error, "sweeping join tokens failed; retrying later"),
    }
}

/// Sleeps; `true` if `stop` came first.
async fn sleep_or_stop(pause: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}
