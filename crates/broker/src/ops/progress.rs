//! Where running operations' progress notes go (their store record), and the [`StepGate`]
//! test seam. Providers see only [`Progress`] (`provider::progress`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Notify;

use super::{Broker, Target};
use crate::provider::progress::{Progress, StepSink};

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

/// An operation's [`Progress`] sink: notes go to its record in the store, and a
/// [`StepGate`] at the step holds it.
struct OperationSteps {
    broker: Arc<Broker>,
    target: Target,
    op_id: String,
}

/// Progress of operation `op_id` on `target`.
pub(crate) fn tracked(broker: Arc<Broker>, target: Target, op_id: String) -> Progress {
    Progress::new(Box::new(OperationSteps {
        broker,
        target,
        op_id,
    }))
}

impl StepSink for OperationSteps {
    fn step<'a>(&'a self, step: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let note = format!("in progress: {step}");
            if let Err(e) = self
                .broker
                .note_progress(self.target.clone(), self.op_id.clone(), note)
                .await
            {
                tracing::warn!(error = %e, step, "cannot record operation progress");
            }
            if let Some(gate) = self.broker.gate.as_ref().filter(|g| g.step == step) {
                gate.reached.notify_one();
                std::future::pending::<()>().await;
            }
        })
    }
}
