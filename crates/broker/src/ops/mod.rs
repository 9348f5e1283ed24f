//! The broker's operations: admission (in one store transaction, so concurrent requests for
//! the same id see each other), execution as tracked tasks, and recording of the outcome.
//!
//! Every operation is written to the store as `in progress` *before* any provider work, and
//! runs as a task even for synchronous requests (a dropped client connection must not abandon
//! half-done work). A restarted broker finds in-progress operations and runs them again;
//! providers are idempotent, so "again" completes or cleanly fails them.
//!
//! Must not import: `http`, `server` (they call the engine). Providers report progress
//! through `provider::Progress`, whose sink is here (`progress.rs`).

pub(crate) mod binding;
pub(crate) mod change;
pub(crate) mod instance;
mod progress;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use progress::StepGate;

use crate::BrokerError;
use crate::provider::Provider;
use crate::store::{OpKind, Store, StoreError};
use crate::taxonomy::Taxonomy;

/// What an operation works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Instance(String),
    Binding(String, String),
}

/// The shared state of a running broker.
pub(crate) struct Broker {
    pub(crate) taxonomy: Arc<Taxonomy>,
    pub(crate) catalog: serde_json::Value,
    pub(crate) store: Store,
    pub(crate) providers: BTreeMap<String, Arc<Provider>>,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
    pub(crate) gate: Option<StepGate>,
}

impl Broker {
    pub(crate) fn provider(&self, name: &str) -> Result<Arc<Provider>, BrokerError> {
        self.providers.get(name).cloned().ok_or_else(|| {
            BrokerError::Config(format!("provider {name:?} is no longer configured"))
        })
    }

    /// Runs an operation as a tracked task. The task stops at its next await point when the
    /// broker stops; the store still says `in progress`, and the next start resumes it.
    pub(crate) fn launch(
        self: &Arc<Self>,
        target: Target,
        kind: OpKind,
        op_id: String,
    ) -> JoinHandle<Result<(), BrokerError>> {
        let this = self.clone();
        self.tracker.spawn(async move {
            let cancel = this.cancel.clone();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(BrokerError::ShuttingDown),
                result = this.run(target, kind, op_id) => result,
            }
        })
    }

    async fn run(
        self: Arc<Self>,
        target: Target,
        kind: OpKind,
        op_id: String,
    ) -> Result<(), BrokerError> {
        tracing::info!(?target, ?kind, op_id, "operation started");
        let result = match (target, kind) {
            (Target::Instance(id), OpKind::Provision) => {
                instance::run_provision(&self, id, op_id).await
            }
            (Target::Instance(id), OpKind::Update) => instance::run_update(&self, id, op_id).await,
            (Target::Instance(id), OpKind::Deprovision) => {
                instance::run_deprovision(&self, id, op_id).await
            }
            (Target::Binding(i, b), OpKind::Bind) => binding::run_bind(&self, i, b, op_id).await,
            (Target::Binding(i, b), OpKind::Unbind) => {
                binding::run_unbind(&self, i, b, op_id).await
            }
            (target, kind) => Err(BrokerError::Internal(format!(
                "no {kind:?} operation for {target:?}"
            ))),
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "operation failed");
        }
        result
    }

    /// Re-launches every operation a previous run left in progress.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<usize, BrokerError> {
        let pending = self
            .store
            .read(|tx| {
                let mut out = Vec::new();
                for i in tx.instances()? {
                    if i.operation.in_progress() {
                        out.push((Target::Instance(i.id), i.operation.kind, i.operation.id));
                    }
                }
                for b in tx.all_bindings()? {
                    if b.operation.in_progress() {
                        let target = Target::Binding(b.instance_id, b.binding_id);
                        out.push((target, b.operation.kind, b.operation.id));
                    }
                }
                Ok::<_, StoreError>(out)
            })
            .await?;
        let count = pending.len();
        for (target, kind, op_id) in pending {
            tracing::info!(
                ?target,
                ?kind,
                "resuming operation interrupted by a restart"
            );
            drop(self.launch(target, kind, op_id));
        }
        Ok(count)
    }

    /// Writes a progress note if `op_id` is still the target's running operation.
    pub(crate) async fn note_progress(
        &self,
        target: Target,
        op_id: String,
        note: String,
    ) -> Result<(), BrokerError> {
        self.store
            .write_lazy(move |tx| {
                let running = |op: &crate::store::Operation| op.id == op_id && op.in_progress();
                match &target {
                    Target::Instance(id) => match tx.instance(id)? {
                        Some(mut rec) if running(&rec.operation) => {
                            rec.operation.description =
                                format!("{note}; {}", rec.resolution.explain());
                            Ok(tx.put_instance(&rec)?)
                        }
                        _ => Ok(()),
                    },
                    Target::Binding(i, b) => match tx.binding(i, b)? {
                        Some(mut rec) if running(&rec.operation) => {
                            rec.operation.description = note;
                            Ok(tx.put_binding(&rec)?)
                        }
                        _ => Ok(()),
                    },
                }
            })
            .await
    }
}

/// Deprovisions and forgets every instance in `store` (see [`crate::purge`]).
pub(crate) async fn purge(
    store: &Store,
    providers: &BTreeMap<String, Arc<Provider>>,
) -> Result<usize, BrokerError> {
    let all = store
        .read(|tx| {
            let mut out = Vec::new();
            for i in tx.instances()? {
                let users: Vec<String> = tx
                    .bindings_of(&i.id)?
                    .into_iter()
                    .map(|b| b.username)
                    .collect();
                out.push((i, users));
            }
            Ok::<_, StoreError>(out)
        })
        .await?;
    let count = all.len();
    for (rec, users) in all {
        let provider = providers.get(&rec.resolution.provider).ok_or_else(|| {
            BrokerError::Config(format!(
                "provider {:?} is not configured",
                rec.resolution.provider
            ))
        })?;
        let plan = crate::provider::InstancePlan {
            resource: rec.resource.clone(),
            limits: rec.resolution.limits,
        };
        provider
            .deprovision(&plan, &users, &crate::provider::Progress::none())
            .await?;
        store.write(move |tx| tx.remove_instance(&rec.id)).await?;
    }
    Ok(count)
}

/// Waits for a launched operation (synchronous requests).
pub(crate) async fn wait(handle: JoinHandle<Result<(), BrokerError>>) -> Result<(), BrokerError> {
    handle
        .await
        .map_err(|e| BrokerError::Internal(format!("operation task: {e}")))?
}
