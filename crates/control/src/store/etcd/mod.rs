//! The shared backend: an etcd cluster (v3 API), for several control replicas.
//!
//! Keys are `<prefix>/<table>/<key>`; values are the records' JSON, unchanged; the
//! store revision is etcd's. A commit is one etcd `Txn`: its compares are the
//! operations' expectations (`Absent`: create revision 0; `At(r)`: mod revision r),
//! its success branch the writes, and its failure branch a read of every guarded key
//! in the same transaction, so a refused commit reports exactly which expectation
//! failed and what the record was.
//!
//! Availability: the client asks etcd to refuse requests on a member without a leader
//! (`require_leader`), and every call is bounded ([`CALL_TIMEOUT`]): without quorum an
//! operation fails within seconds with [`StoreError::Unavailable`], naming the
//! endpoints, instead of hanging.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, WatchOptions, WatchStream,
};
use tonic::Code;

#[cfg(test)]
mod tests;
mod txn;

use super::{
    Backend, Change, Changes, Commit, Op, Record, Revision, StoreError, Table, check_distinct,
};

/// How long etcd has to answer one call (the client's own deadline).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A backstop over [`CALL_TIMEOUT`] for what the client's deadline does not cover.
const BACKSTOP: Duration = Duration::from_secs(4);
/// How long an operation keeps retrying while etcd is unavailable: long enough to
/// ride out the loss of one member and the election that may follow (about one
/// election timeout), short enough that without quorum the caller hears it in seconds.
const RETRY_BUDGET: Duration = Duration::from_secs(4);
/// The pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A connection to an etcd cluster, scoped to one key prefix.
#[derive(Clone)]
pub struct EtcdStore {
    /// Calls bounded by [`CALL_TIMEOUT`].
    client: Client,
    /// Calls that wait by design (a watch's stream, a campaign until leadership):
    /// no per-call deadline; HTTP/2 keep-alive still notices a dead member.
    waiting: Client,
    endpoints: String,
    /// `<prefix>/`, without a second slash.
    prefix: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A client of `endpoints` (`http://host:port`) keeping its records under `prefix`
    /// (e.g. `/meshwork/example.org`). Connects lazily: an unreachable cluster shows
    /// as [`StoreError::Unavailable`] on the first call, not here.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        let joined = endpoints.join(",");
        if endpoints.is_empty() || !prefix.starts_with('/') {
            return Err(StoreError::Invalid {
                store: format!("etcd at {joined:?}"),
                reason: "etcd needs at least one endpoint and a prefix starting with /".to_owned(),
            });
        }
        let waiting = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_require_leader(true);
        let bounded = waiting.clone().with_timeout(CALL_TIMEOUT);
        let connect = async |options| {
            Client::connect(endpoints, Some(options))
                .await
                .map_err(|source| StoreError::Etcd {
                    endpoints: joined.clone(),
                    op: "connect",
                    source,
                })
        };
        let client = connect(bounded).await?;
        let waiting = connect(waiting).await?;
        Ok(EtcdStore {
            client,
            waiting,
            endpoints: joined,
            prefix: format!("{}/", prefix.trim_end_matches('/')),
        })
    }

    /// The bounded client (for the election's lease calls and the tests).
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// The client without a per-call deadline (for a campaign).
    pub(crate) fn waiting_client(&self) -> Client {
        self.waiting.clone()
    }

    /// The etcd key of the election's candidates, `<prefix>/election`.
    pub(crate) fn election_name(&self) -> String {
        format!("{}{}", self.prefix, Table::Election.name())
    }

    /// The table and key of an etcd key under the prefix (`None`: not a record).
    pub(crate) fn record_key(&self, full: &[u8]) -> Option<(Table, String)> {
        self.parse_key(full)
    }

    /// The error for `op` (see [`classify`](Self::classify)).
    pub(crate) fn error(&self, op: &'static str, e: etcd_client::Error) -> StoreError {
        self.classify(op, e)
    }

    /// The full etcd key of a record.
    fn key(&self, table: Table, key: &str) -> String {
        format!("{}{}/{}", self.prefix, table.name(), key)
    }

    /// The table and key of an etcd key under the prefix (`None`: not a record).
    fn parse_key(&self, full: &[u8]) -> Option<(Table, String)> {
        let rest = std::str::from_utf8(full).ok()?.strip_prefix(&self.prefix)?;
        let (table, key) = rest.split_once('/')?;
        Some((Table::from_name(table)?, key.to_owned()))
    }

    /// Runs one etcd call under the backstop and maps its error.
    async fn once<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(BACKSTOP, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.classify(op, e)),
            Err(_) => Err(self.unavailable(op, None)),
        }
    }

    /// Runs an idempotent call (a read), again while the cluster is unavailable, within
    /// [`RETRY_BUDGET`]: the client spreads calls over the endpoints, so after a member
    /// dies or during an election a retry reaches one that answers.
    pub(super) async fn call<T, F>(
        &self,
        op: &'static str,
        client: &Client,
        mut call: impl FnMut(Client) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = tokio::time::Instant::now();
        loop {
            match self.once(op, call(client.clone())).await {
                Err(e) if e.is_transient() && started.elapsed() < RETRY_BUDGET => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                done => return done,
            }
        }
    }

    pub(crate) fn unavailable(&self, op: &'static str, reason: Option<String>) -> StoreError {
        StoreError::Unavailable {
            endpoints: self.endpoints.clone(),
            op,
            timeout: CALL_TIMEOUT,
            reason,
        }
    }

    /// Availability problems (retry later) apart from everything else.
    fn classify(&self, op: &'static str, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        match &e {
            E::GRpcStatus(s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ) || transport_failed(s) =>
            {
                self.unavailable(op, Some(s.message().to_owned()))
            }
            E::TransportError(_) | E::IoError(_) => self.unavailable(op, Some(e.to_string())),
            _ => StoreError::Etcd {
                endpoints: self.endpoints.clone(),
                op,
                source: e,
            },
        }
    }

    pub(super) fn record(&self, kv: &KeyValue) -> Option<Record> {
        let (_, key) = self.parse_key(kv.key())?;
        Some(Record {
            key,
            value: Bytes::copy_from_slice(kv.value()),
            mod_revision: revision(kv.mod_revision()),
        })
    }

    /// Compacts etcd's history up to `revision` (tests: etcd itself does this in
    /// production, `--auto-compaction-*`).
    #[cfg(test)]
    pub(crate) async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let rev = i64::try_from(revision).unwrap_or(i64::MAX);
        let mut client = self.client.clone();
        self.once("compact", client.compact(rev, None)).await?;
        Ok(())
    }
}

/// Whether a status only wraps the connection breaking (tonic reports a request on a
/// connection to a member that just died as `Unknown: transport error`, its source a
/// broken pipe): the member is gone, not the request refused.
fn transport_failed(status: &tonic::Status) -> bool {
    status.code() == Code::Unknown
        && std::error::Error::source(status).is_some_and(|e| e.is::<tonic::transport::Error>())
}

/// etcd's signed revisions as ours (etcd's are never negative).
fn revision(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

impl Backend for EtcdStore {
    async fn get(&self, table: Table, key: &str) -> Result<Option<Record>, StoreError> {
        let key = self.key(table, key);
        let answer = self
            .call("get", &self.client, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(answer.kvs().first().and_then(|kv| self.record(kv)))
    }

    async fn list(&self, table: Table) -> Result<(Vec<Record>, Revision), StoreError> {
        let prefix = format!("{}{}/", self.prefix, table.name());
        let answer = self
            .call("list", &self.client, |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let at = answer.header().map(|h| revision(h.revision())).unwrap_or(0);
        Ok((
            answer
                .kvs()
                .iter()
                .filter_map(|kv| self.record(kv))
                .collect(),
            at,
        ))
    }

    async fn list_tables(
        &self,
        tables: &[Table],
    ) -> Result<(Vec<Vec<Record>>, Revision), StoreError> {
        txn::list_tables(self, tables).await
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<Commit, StoreError> {
        check_distinct(&self.describe(), &ops)?;
        txn::commit(self, &ops).await
    }

    async fn watch(&self, tables: &[Table], after: Revision) -> Result<Changes, StoreError> {
        let start = i64::try_from(after.saturating_add(1)).unwrap_or(i64::MAX);
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let stream = self
            .call("watch", &self.waiting, |mut c| {
                let (prefix, options) = (self.prefix.clone(), options.clone());
                async move { c.watch(prefix, Some(options)).await }
            })
            .await?;
        let state = Follow {
            store: self.clone(),
            tables: tables.to_vec(),
            stream,
            pending: VecDeque::new(),
            seen: after,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            Some(state),
            |state| async move {
                let mut state = state?;
                let next = state.next().await;
                let done = next.as_ref().is_some_and(Result::is_err);
                next.map(|item| (item, (!done).then_some(state)))
            },
        )))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let answer = self
            .call("revision", &self.client, |mut c| {
                let prefix = self.prefix.clone();
                async move {
                    c.get(prefix, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(answer.header().map(|h| revision(h.revision())).unwrap_or(0))
    }

    fn describe(&self) -> String {
        format!("etcd at {}", self.endpoints)
    }
}

/// A watch in progress: etcd sends events in batches; they are yielded one by one.
struct Follow {
    store: EtcdStore,
    tables: Vec<Table>,
    stream: WatchStream,
    pending: VecDeque<Change>,
    seen: Revision,
}

impl Follow {
    /// The next change; `None` when etcd closed the stream (watch again).
    async fn next(&mut self) -> Option<Result<Change, StoreError>> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Some(Ok(change));
            }
            let answer = match self.stream.message().await {
                Ok(Some(answer)) => answer,
                Ok(None) => return None,
                Err(e) => return Some(Err(self.store.classify("watch", e))),
            };
            if answer.compact_revision() > 0 {
                return Some(Err(StoreError::Compacted(self.seen)));
            }
            if answer.canceled() {
                let why = format!("the watch was cancelled: {}", answer.cancel_reason());
                return Some(Err(self.store.unavailable("watch", Some(why))));
            }
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                let Some((table, key)) = self.store.parse_key(kv.key()) else {
                    continue;
                };
                let at = revision(kv.mod_revision());
                self.seen = self.seen.max(at);
                if !self.tables.contains(&table) {
                    continue;
                }
                let value = match event.event_type() {
                    EventType::Put => Some(Bytes::copy_from_slice(kv.value())),
                    EventType::Delete => None,
                };
                self.pending.push_back(Change {
                    table,
                    key,
                    value,
                    revision: at,
                });
            }
        }
    }
}
