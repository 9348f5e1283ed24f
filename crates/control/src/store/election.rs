//! Leadership of the singleton duties (CA transitions, the token sweep, applying the
//! resource feed) among control replicas.
//!
//! etcd: its Election API on a lease. A replica grants itself a lease (`ttl`), keeps it
//! alive every `ttl / 3`, and campaigns under `<prefix>/election`; etcd makes the
//! oldest candidate the leader. [`Leadership::lost`] is cancelled by a timer when no
//! renewal has been confirmed for `ttl - 1 s`, counted from when the confirmed request
//! was sent (so before etcd, which counts from when it granted it, can let the next
//! candidate win), or as soon as etcd says the lease is gone. Every leader write carries
//! [`Fence::check`], a compare on the leader key's revision, so even a paused ex-leader
//! cannot write after losing.
//!
//! redb: one process owns the file (redb locks it), so it leads at once and forever.

use std::time::Duration;

use etcd_client::{LeaderKey, LeaseKeepAliveStream, LeaseKeeper, ResignOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::etcd::EtcdStore;
use super::{Expect, Op, Revision, Store, StoreError, Table};

/// A leader's proof of office: its key in the election and the key's revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader key within [`Table::Election`].
    pub key: String,
    /// The revision it was created at.
    pub revision: Revision,
}

impl Fence {
    /// The operation to add to every leader write.
    pub fn check(&self) -> Op {
        Op::Check {
            table: Table::Election,
            key: self.key.clone(),
            expect: Expect::At(self.revision),
        }
    }
}

/// This replica leads until [`lost`](Self::lost) is cancelled.
#[derive(Debug)]
pub struct Leadership {
    lost: CancellationToken,
    fence: Option<Fence>,
    session: Option<Session>,
}

#[derive(Debug)]
struct Session {
    store: EtcdStore,
    lease: i64,
    leader: LeaderKey,
    keep_alive: AbortOnDropHandle<()>,
}

impl Leadership {
    /// Cancelled when this replica no longer leads (never for redb).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The fence for leader writes (`None` for redb: it needs none).
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Steps down at once (a clean shutdown): the next candidate leads without waiting
    /// for the lease to expire.
    pub async fn resign(mut self) -> Result<(), StoreError> {
        self.lost.cancel();
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        session.keep_alive.abort();
        let mut client = session.store.client();
        let options = ResignOptions::new().with_leader(session.leader.clone());
        let resigned = client.resign(Some(options)).await;
        let revoked = client.lease_revoke(session.lease).await;
        resigned.map_err(|e| session.store.error("resign", e))?;
        revoked.map_err(|e| session.store.error("lease revoke", e))?;
        Ok(())
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Without a resign the lease expires on its own after its TTL.
        self.lost.cancel();
        if let Some(session) = &self.session {
            session.keep_alive.abort();
        }
    }
}

impl Store {
    /// Waits until this replica leads. `ttl` (whole seconds, at least 2) bounds how long
    /// a crashed leader keeps the office.
    pub async fn campaign(&self, replica: &str, ttl: Duration) -> Result<Leadership, StoreError> {
        match self {
            Store::Redb(_) => Ok(Leadership {
                lost: CancellationToken::new(),
                fence: None,
                session: None,
            }),
            Store::Etcd(etcd) => campaign(etcd, replica, ttl).await,
        }
    }
}

async fn campaign(
    store: &EtcdStore,
    replica: &str,
    ttl: Duration,
) -> Result<Leadership, StoreError> {
    let secs = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
    let mut client = store.client();
    let granted = client
        .lease_grant(secs, None)
        .await
        .map_err(|e| store.error("lease grant", e))?;
    let lease = granted.id();
    // The TTL etcd granted, which is what it will enforce.
    let ttl = Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(2).max(2));
    let stream = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| store.error("lease keep-alive", e))?;
    let lost = CancellationToken::new();
    // Aborted when dropped: a campaign cancelled while waiting (the replica stops) must
    // not leave the lease renewed by an orphan task.
    let keep_alive = AbortOnDropHandle::new(tokio::spawn(keep_alive(
        store.clone(),
        lease,
        stream,
        ttl,
        lost.clone(),
    )));
    let mut waiting = store.waiting_client();
    let won = tokio::select! {
        won = waiting.campaign(store.election_name(), replica, lease) => won,
        () = lost.cancelled() => {
            keep_alive.abort();
            let why = "the lease expired while campaigning".to_owned();
            return Err(store.unavailable("campaign", Some(why)));
        }
    };
    let won = match won {
        Ok(won) => won,
        Err(e) => {
            keep_alive.abort();
            let _ = client.lease_revoke(lease).await;
            return Err(store.error("campaign", e));
        }
    };
    // Without its leader key a leader could not fence its writes: refuse to lead.
    let Some((leader, key)) = won
        .leader()
        .and_then(|l| Some((l.clone(), store.record_key(l.key())?.1)))
    else {
        keep_alive.abort();
        let _ = client.lease_revoke(lease).await;
        let why = "etcd answered the campaign without a leader key under the prefix".to_owned();
        return Err(store.unavailable("campaign", Some(why)));
    };
    let fence = Some(Fence {
        key,
        revision: u64::try_from(leader.rev()).unwrap_or(0),
    });
    tracing::info!(replica, lease, "leading the singleton duties");
    Ok(Leadership {
        lost,
        fence,
        session: Some(Session {
            store: store.clone(),
            lease,
            leader,
            keep_alive,
        }),
    })
}

/// What one renewal came to.
enum Renewal {
    /// etcd renewed the lease.
    Confirmed,
    /// etcd says the lease no longer exists.
    Gone,
    /// No answer (the stream broke, e.g. its member died): open another.
    Failed,
}

async fn renew(keeper: &mut LeaseKeeper, answers: &mut LeaseKeepAliveStream) -> Renewal {
    if keeper.keep_alive().await.is_err() {
        return Renewal::Failed;
    }
    match answers.message().await {
        Ok(Some(answer)) if answer.ttl() > 0 => Renewal::Confirmed,
        Ok(Some(_)) => Renewal::Gone,
        _ => Renewal::Failed,
    }
}

/// Renews the lease every `ttl / 3` and cancels `lost` when etcd says the lease is gone,
/// or when no renewal was confirmed for `give_up` (`ttl - 1 s`, at least `ttl / 2`) by a
/// timer, not at the next loop turn: etcd's TTL runs from a renewal it granted, which is
/// after the request was sent, so counting from the send steps down before etcd can let
/// the next candidate lead. A broken keep-alive stream (its member died) is reopened.
async fn keep_alive(
    store: EtcdStore,
    lease: i64,
    (mut keeper, mut answers): (LeaseKeeper, LeaseKeepAliveStream),
    ttl: Duration,
    lost: CancellationToken,
) {
    let period = ttl / 3;
    let give_up = ttl.saturating_sub(Duration::from_secs(1)).max(ttl / 2);
    let mut confirmed = tokio::time::Instant::now();
    loop {
        let deadline = confirmed + give_up;
        let sent = tokio::time::Instant::now();
        let renewal = tokio::select! {
            renewal = renew(&mut keeper, &mut answers) => renewal,
            () = tokio::time::sleep_until(deadline) => break,
        };
        match renewal {
            Renewal::Confirmed => confirmed = sent,
            Renewal::Gone => {
                tracing::warn!(lease, "the leadership lease is gone");
                lost.cancel();
                return;
            }
            Renewal::Failed => {
                let mut client = store.client();
                if let Ok(Ok(fresh)) =
                    tokio::time::timeout(period, client.lease_keep_alive(lease)).await
                {
                    (keeper, answers) = fresh;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = tokio::time::sleep_until(confirmed + give_up) => break,
        }
    }
    tracing::warn!(?give_up, lease, "no lease renewal confirmed; stepping down");
    lost.cancel();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use testkit::etcd::EtcdCluster;

    use super::*;
    use crate::store::{Backend, Commit};

    const TTL: Duration = Duration::from_secs(2);

    async fn replica(cluster: &EtcdCluster) -> Arc<Store> {
        let store = EtcdStore::connect(&cluster.endpoints(), "/e")
            .await
            .unwrap();
        Arc::new(Store::Etcd(Box::new(store)))
    }

    fn write(key: &str, fence: &Fence) -> Vec<Op> {
        let put = Op::Put {
            table: Table::Entries,
            key: key.to_owned(),
            value: Bytes::from_static(b"1"),
            expect: Expect::Any,
        };
        vec![put, fence.check()]
    }

    fn contend(store: &Arc<Store>, name: &'static str) -> tokio::task::JoinHandle<Leadership> {
        let store = Arc::clone(store);
        tokio::spawn(async move { store.campaign(name, TTL).await.unwrap() })
    }

    #[tokio::test]
    async fn redb_leads_at_once_without_a_fence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Redb(crate::store::redb::RedbStore::open(dir.path()).unwrap());
        let leading = store.campaign("only", TTL).await.unwrap();
        assert!(leading.fence().is_none() && !leading.lost().is_cancelled());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_leads_the_other_waits_and_a_deposed_leader_cannot_write() {
        let Some(cluster) = EtcdCluster::start_or_skip(1) else {
            return;
        };
        let (a, b) = (replica(&cluster).await, replica(&cluster).await);
        let leading_a = a.campaign("a", TTL).await.unwrap();
        let fence_a = leading_a.fence().cloned().expect("etcd fences");
        let waiting_b = contend(&b, "b");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!waiting_b.is_finished(), "two leaders at once");
        assert!(matches!(
            a.commit(write("x", &fence_a)).await.unwrap(),
            Commit::Applied(_)
        ));
        leading_a.resign().await.unwrap();
        let leading_b = tokio::time::timeout(Duration::from_secs(3), waiting_b)
            .await
            .expect("b leads soon after a resigns")
            .unwrap();
        let stale = a.commit(write("y", &fence_a)).await.unwrap();
        assert!(
            matches!(stale, Commit::Conflict { index: 1, .. }),
            "{stale:?}"
        );
        assert_eq!(b.get(Table::Entries, "y").await.unwrap(), None);
        let fence_b = leading_b.fence().cloned().unwrap();
        assert!(matches!(
            b.commit(write("z", &fence_b)).await.unwrap(),
            Commit::Applied(_)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crashed_leader_is_replaced_once_its_lease_expires() {
        let Some(cluster) = EtcdCluster::start_or_skip(1) else {
            return;
        };
        let (a, b) = (replica(&cluster).await, replica(&cluster).await);
        let leading_a = a.campaign("a", TTL).await.unwrap();
        let waiting_b = contend(&b, "b");
        // No resign: the keep-alive stops, as when the process is killed.
        let crashed = std::time::Instant::now();
        drop(leading_a);
        let leading_b = tokio::time::timeout(TTL + Duration::from_secs(3), waiting_b)
            .await
            .expect("b leads once a's lease expires")
            .unwrap();
        assert!(
            crashed.elapsed() >= Duration::from_secs(1),
            "b led before a's lease ran out"
        );
        assert!(!leading_b.lost().is_cancelled());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_cut_off_from_etcd_steps_down_within_its_lease() {
        let Some(mut cluster) = EtcdCluster::start_or_skip(1) else {
            return;
        };
        let a = replica(&cluster).await;
        let leading = a.campaign("a", TTL).await.unwrap();
        cluster.kill(0);
        // etcd could let another candidate lead once the lease's TTL has passed since the
        // last renewal it granted; the leader must have stepped down before that.
        tokio::time::timeout(TTL, leading.lost().cancelled())
            .await
            .expect("stepped down within one TTL of losing etcd");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leadership_is_lost_when_the_lease_is_revoked() {
        let Some(cluster) = EtcdCluster::start_or_skip(1) else {
            return;
        };
        let a = replica(&cluster).await;
        let leading = a.campaign("a", TTL).await.unwrap();
        let Store::Etcd(etcd) = &*a else {
            unreachable!()
        };
        let mut client = etcd.client();
        for lease in client.leases().await.unwrap().leases() {
            client.lease_revoke(lease.id()).await.unwrap();
        }
        tokio::time::timeout(TTL, leading.lost().cancelled())
            .await
            .expect("lost within one TTL of the revoke");
    }
}
