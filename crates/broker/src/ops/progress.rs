//! Progress notes of running operations, and the [`StepGate`] test seam.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{Broker, Target};

/// Holds operations at a named step, forever: a crash-test seam. An operation that reaches
/// the step signals [`StepGate::reached`] and then waits until the broker is stopped, which
/// is how tests produce a broker "killed mid-provision" deterministically.
#[derive(Debug, Clone)]
pub struct StepGate {
    step: String,
    reached: Arc<Notify>,
}

impl StepGate {
    /// A gate at `step` (e.g. [`crate::provider::STEP_INSTANCE_CREATED`]).
    pub fn new(step: impl Into<String>) -> Self {
        StepGate {
            step: step.into(),
            reached: Arc::new(Notify::new()),
        }
    }

    /// Resolves once an operation has reached the step (and is now held there).
    pub async fn reached(&self) {
        self.reached.notified().await;
    }
}

/// Records an operation's progress in its `last_operation.description`.
pub struct Progress {
    inner: Option<(Arc<Broker>, Target, String)>,
}

impl Progress {
    /// Progress of operation `op_id` on `target`.
    pub(crate) fn new(broker: Arc<Broker>, target: Target, op_id: String) -> Self {
        Progress {
            inner: Some((broker, target, op_id)),
        }
    }

    /// Progress that goes nowhere (cleanup work, benchmarks of providers alone).
    pub fn none() -> Self {
        Progress { inner: None }
    }

    /// Notes that `step` is done. Best effort: a progress note that cannot be written is
    /// logged and skipped, it never fails the operation.
    pub async fn step(&self, step: &str) {
        let Some((broker, target, op_id)) = &self.inner else {
            return;
        };
        let note = format!("in progress: {step}");
        if let Err(e) = broker
            .note_progress(target.clone(), op_id.clone(), note)
            .await
        {
            tracing::warn!(error = %e, step, "cannot record operation progress");
        }
        if let Some(gate) = broker.gate.as_ref().filter(|g| g.step == step) {
            gate.reached.notify_one();
            std::future::pending::<()>().await;
        }
    }
}
